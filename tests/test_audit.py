"""`make audit` (deploy/audit.py) against the two shapes the app is deployed in: nginx from deploy/
as `make run-proxy` serves it, where every check passes, and the Procfile's Waitress alone, where
the edge checks fail as docs/security.md says they must. Both started here, on loopback.
"""

import subprocess
import sys

import pytest

from deploy import audit
from deploy.servers import ROOT

TLS = ["tls-protocols", "tls-ciphers", "tls-curves", "tls-session-tickets", "certificate"]
# What a server in front of Waitress must answer itself (docs/security.md, "Known limits").
EDGE = [
    "headers-413",
    "headers-400",
    "expect-100-continue",
    "content-length-and-chunked",
    "http-1.0-chunked",
    "http-1.1-without-host",
    "header-echo",
    "slow-head",
]
APP = ["headers-200", "headers-404", "form-round-trip", "cross-site-post"]
EVERY = [*TLS, "http-redirect", "hsts", *APP[:2], *EDGE, *APP[2:]]


def run_audit(*args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run the audit as `make audit` does; return its exit status and each check's line."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy.audit", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stderr == "", done.stderr
    *lines, summary = done.stdout.splitlines()
    checks = {}
    for line in lines:
        verdict, name, saw = line.split(maxsplit=2)
        checks[name] = (verdict, saw)
    return done.returncode, checks


@pytest.mark.stress
def test_every_check_passes_against_make_run_proxy(proxy):
    status, checks = run_audit(
        f"https://127.0.0.1:{proxy.port}/",
        "--http-url",
        f"http://127.0.0.1:{proxy.http_port}/",
        "--insecure",
    )
    failed = {name: saw for name, (verdict, saw) in checks.items() if verdict != "pass"}
    assert failed == {}
    assert list(checks) == sorted(EVERY, key=EVERY.index)
    assert status == 0


@pytest.mark.stress
def test_the_edge_checks_fail_against_the_bare_procfile_server(servers):
    server = servers("procfile")
    status, checks = run_audit(f"{server.url}/")
    assert status == 1
    verdicts = {name: verdict for name, (verdict, _) in checks.items()}
    assert {name: verdicts[name] for name in EDGE} == dict.fromkeys(EDGE, "FAIL")
    assert {name: verdicts[name] for name in TLS + ["hsts"]} == dict.fromkeys(
        TLS + ["hsts"], "FAIL"
    )
    assert {name: verdicts[name] for name in APP} == dict.fromkeys(APP, "pass")  # the app is fine
    assert verdicts["http-redirect"] == "skip"
    assert checks["header-echo"][1] == "got 400, the header line echoed"


def test_a_self_signed_certificate_fails_without_insecure(proxy):
    target = audit.Target(f"https://127.0.0.1:{proxy.port}/")
    checks = {check.name: check for check in audit.tls_checks(target, insecure=False)}
    assert checks["certificate"].passed is False
    assert checks["certificate"].saw.endswith("NOT trusted")
    assert checks["tls-protocols"].passed is True


@pytest.mark.parametrize(
    ("name", "hosts", "host", "matches"),
    [
        ("exact", ["form.example.org"], "form.example.org", True),
        ("wildcard", ["*.example.org"], "form.example.org", True),
        ("wildcard is one label", ["*.example.org"], "a.form.example.org", False),
        ("another name", ["other.example.org"], "form.example.org", False),
    ],
)
def test_the_certificate_must_name_the_host(name, hosts, host, matches):
    assert audit.names_host(hosts, [], host) == matches


def test_make_audit_passes_its_settings_to_the_script():
    shown = subprocess.run(
        ["make", "-n", "audit", "URL=https://h/", "HTTP_URL=http://h/", "INSECURE=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "-m deploy.audit 'https://h/' --http-url 'http://h/' --insecure" in shown.stdout
