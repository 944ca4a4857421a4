"""The systemd units in deploy/: valid to systemd, and running what the Procfile and run_proxy run.

No systemd runs the tests, so the units are checked, not started: `systemd-analyze verify` (what
`systemctl` would warn about when loading them), then their settings against the app's own.
"""

import shlex
import subprocess

import pytest
from helpers import require

import notify
import shutdown
from deploy import run_proxy, servers

DEPLOY = servers.ROOT / "deploy"
UNIT = DEPLOY / "form-app@.service"
TARGET = DEPLOY / "form-app.target"


def settings(unit) -> dict[str, list[str]]:
    """Return a unit file's [Service] settings, name -> values in order (names may repeat)."""
    found: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and line and not line.startswith("#"):
            name, value = line.split("=", 1)
            found.setdefault(name, []).append(value)
    return found


SERVICE = settings(UNIT)


def test_the_units_pass_systemd_analyze_verify():
    analyze = require("systemd-analyze")
    # The instance's path, not the template's: systemd-analyze finds form-app@.service beside it.
    command = [analyze, "verify", "--man=no", str(DEPLOY / "form-app@8001.service"), str(TARGET)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, said
    assert [line for line in said.splitlines() if "form-app" in line] == []


def test_the_unit_runs_the_procfiles_command_in_a_shell_that_exec_s_it():
    [exec_start] = SERVICE["ExecStart"]
    # systemd turns $$ into $ (and would expand $NAME itself); then it splits words like a shell.
    words = shlex.split(exec_start.replace("$$", "$"))
    assert words == ["/bin/sh", "-c", f"exec {servers.procfile_web_command()}"]
    assert "%" not in exec_start  # no systemd specifier would change the command either


def test_the_unit_gives_each_instance_what_run_proxy_gives_it():
    environment = dict(
        pair.split("=", 1) for line in SERVICE["Environment"] for pair in shlex.split(line)
    )
    expected = servers.instance_environ("%i")  # the instance name is the port
    assert {name: environment[name] for name in expected} == expected
    assert environment["PATH"].split(":")[0] == f"{SERVICE['WorkingDirectory'][0]}/.venv/bin"


@pytest.mark.parametrize(
    ("name", "value"),
    [("KillSignal", "SIGTERM"), ("Restart", "always")],
)
def test_the_unit_stops_with_the_drain_signal_and_restarts(name, value):
    assert SERVICE[name] == [value]


def test_the_unit_waits_longer_than_the_drain_before_killing():
    [timeout] = SERVICE["TimeoutStopSec"]
    assert int(timeout.removesuffix("s")) > shutdown.DRAIN_SECONDS
    assert int(timeout.removesuffix("s")) == run_proxy.STOP_SECONDS


def test_the_unit_kills_an_instance_that_stops_pinging_as_run_proxy_does():
    assert SERVICE["Type"] == ["notify"]  # READY=1 and the pings (notify.py)
    [watchdog] = SERVICE["WatchdogSec"]
    assert int(watchdog.removesuffix("s")) == run_proxy.WATCHDOG_SECONDS
    assert run_proxy.WATCHDOG_SECONDS >= 4 * notify.PING_SECONDS  # several pings a period
    assert SERVICE["WatchdogSignal"] == ["SIGKILL"]  # which a stopped process cannot wait out


def test_the_unit_runs_as_its_own_unprivileged_user_on_loopback():
    assert SERVICE["User"] == ["form-app"]
    assert SERVICE["NoNewPrivileges"] == ["yes"]
    assert SERVICE["ProtectSystem"] == ["strict"]
    assert "HOST=127.0.0.1" in SERVICE["Environment"][0].split()
