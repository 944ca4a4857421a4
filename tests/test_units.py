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
TASK = DEPLOY / "form-app-task@.service"
TARGET = DEPLOY / "form-app.target"
TIMERS = {"backup": DEPLOY / "form-app-backup.timer", "purge": DEPLOY / "form-app-purge.timer"}


def settings(unit, section_name: str = "Service") -> dict[str, list[str]]:
    """Return a unit file's settings in a section, name -> values in order (names may repeat)."""
    found: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == section_name and line and not line.startswith("#"):
            name, value = line.split("=", 1)
            found.setdefault(name, []).append(value)
    return found


SERVICE = settings(UNIT)
TASK_SERVICE = settings(TASK)
# What only the instances have (serving, restarting, their port), and only the tasks (run once).
INSTANCE_ONLY = {
    "Type", "WatchdogSec", "WatchdogSignal", "Environment", "ExecStart", "KillSignal",
    "TimeoutStopSec", "Restart", "RestartSec", "LimitNOFILE",
}  # fmt: skip
TASK_ONLY = {"Type", "TimeoutStartSec", "Environment", "ExecStart"}


def test_the_units_pass_systemd_analyze_verify():
    analyze = require("systemd-analyze")
    # Instances' paths, not the templates': systemd-analyze finds form-app@.service beside them.
    instances = ["form-app@8001.service", *(f"form-app-task@{name}.service" for name in TIMERS)]
    units = [DEPLOY / name for name in instances] + [TARGET, *TIMERS.values()]
    command = [analyze, "verify", "--man=no", *map(str, units)]
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


def test_the_tasks_run_as_the_instances_do_in_the_same_sandbox():
    instance = {name: v for name, v in SERVICE.items() if name not in INSTANCE_ONLY}
    task = {name: v for name, v in TASK_SERVICE.items() if name not in TASK_ONLY}
    assert task == instance
    assert TASK_SERVICE["Environment"] == [
        line for line in SERVICE["Environment"] if "PATH=" in line
    ]
    assert SERVICE["StateDirectory"] == ["form-app"] and SERVICE["StateDirectoryMode"] == ["0700"]


def test_the_migrate_task_is_the_procfiles_release_command():
    [release] = [
        line.removeprefix("release:").strip()
        for line in (servers.ROOT / "Procfile").read_text().splitlines()
        if line.startswith("release:")
    ]
    [exec_start] = TASK_SERVICE["ExecStart"]
    # env finds python on the unit's PATH, the venv's bin first, as the platform's shell does.
    assert shlex.split(exec_start.replace("%i", "migrate")) == [
        "/usr/bin/env",
        *shlex.split(release),
    ]


def test_every_instance_start_waits_for_one_migration():
    unit = settings(UNIT, "Unit")
    # Wanted, not required: an instance that crashes while the database is out of reach starts
    # again (a failed requirement would keep it down), and serves the form.
    assert "form-app-task@migrate.service" in unit["Wants"] and "Requires" not in unit
    assert "form-app-task@migrate.service" in " ".join(unit["After"]).split()
    # Run at each start: a oneshot that stays active (RemainAfterExit=) would run only once, and
    # restarting it would restart every instance.
    assert TASK_SERVICE["Type"] == ["oneshot"] and "RemainAfterExit" not in TASK_SERVICE


@pytest.mark.parametrize("name", TIMERS)
def test_a_timer_runs_its_task_daily_and_catches_up_after_downtime(name):
    timer = settings(TIMERS[name], "Timer")
    assert timer["Unit"] == [f"form-app-task@{name}.service"]
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["yes"]
    assert settings(TIMERS[name], "Install")["WantedBy"] == ["timers.target"]
