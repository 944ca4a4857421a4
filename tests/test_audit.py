"""`make audit` (deploy/audit.py) against the two shapes the app is deployed in: nginx from deploy/
as `make run-proxy` serves it, where every check passes, and the Procfile's Waitress alone, where
the edge checks fail as docs/security.md says they must; and against the shipped site weakened one
way at a time, where the check for that way fails. All started here, on loopback.
"""

import http.server
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from databases import sqlite_url
from helpers import SERVER_COMMANDS, SITE, start_proxy

import store
from deploy import audit
from deploy.servers import ROOT, Proxy, start_server

TLS = ["tls-protocols", "tls-ciphers", "tls-curves", "tls-session-tickets", "certificate"]
# What a server in front of Waitress must answer itself (docs/security.md, "Known limits").
EDGE = [
    "headers-413",
    "headers-400",
    "expect-100-continue",
    "content-length-and-chunked",
    "http-1.0-chunked",
    "http-1.1-without-host",
    "bare-lf",
    "header-echo",
    "slow-head",
    "idle-connection",
    "slow-body",
    "request-buffering",
    "per-address-limit",
]
APP = ["headers-200", "headers-404", "form-round-trip", "cross-site-post", "owner-pages"]
# In the order the audit prints them.
EVERY = [
    *TLS,
    "http2",
    "http-redirect",
    "hsts",
    "headers-200",
    "headers-404",
    "headers-413",
    "headers-400",
    "expect-100-continue",
    "content-length-and-chunked",
    "http-1.0-chunked",
    "http-1.1-without-host",
    "bare-lf",
    "header-echo",
    "slow-head",
    "idle-connection",
    "slow-body",
    "request-buffering",
    "forwarded-for",
    "form-round-trip",
    "cross-site-post",
    "owner-pages",
    "per-address-limit",
]


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
    assert list(checks) == EVERY
    assert status == 0


@pytest.mark.stress
def test_the_edge_checks_fail_against_the_bare_procfile_server(servers):
    server = servers("procfile")
    status, checks = run_audit(f"{server.url}/")
    assert status == 1
    verdicts = {name: verdict for name, (verdict, _) in checks.items()}
    assert {name: verdicts[name] for name in EDGE} == dict.fromkeys(EDGE, "FAIL")
    assert {name: verdicts[name] for name in TLS + ["http2", "hsts"]} == dict.fromkeys(
        TLS + ["http2", "hsts"], "FAIL"
    )
    assert {name: verdicts[name] for name in APP} == dict.fromkeys(APP, "pass")  # the app is fine
    assert verdicts["http-redirect"] == "skip"
    assert checks["header-echo"][1] == "got 400, the header line echoed"
    # Waitress believes X-Forwarded-For from 127.0.0.1 (TRUSTED_PROXY), which the audit is here.
    assert verdicts["forwarded-for"] == "FAIL"


# The shipped site weakened one way at a time: the line changed (a pattern, its replacement), and
# the check that must then fail.
WEAKENINGS = {
    "limit_conn removed": (r"^\s*limit_conn form_app_per_address .*\n", "", "per-address-limit"),
    "X-Forwarded-For not set": (
        r"^\s*proxy_set_header X-Forwarded-For .*\n",
        "",
        "forwarded-for",
    ),
    "request buffering off": (
        r"proxy_request_buffering on;",
        "proxy_request_buffering off;",
        "request-buffering",
    ),
    "HTTP/2 removed": (r"^\s*http2 on;\n", "", "http2"),
    "95 s body timeout": (r"client_body_timeout 10s;", "client_body_timeout 95s;", "slow-body"),
}
# deploy/run_proxy.py with another site file in place of deploy/form-app.conf.
RUN_PROXY_WITH_SITE = (
    "import sys; from pathlib import Path; from deploy import run_proxy; "
    "run_proxy.SITE = Path(sys.argv[1]); sys.exit(run_proxy.main())"
)


def start_weakened_proxy(folder: Path, pattern: str, replacement: str) -> Proxy:
    """Serve the shipped site, each match of a pattern replaced, as `make run-proxy` serves it, in
    front of one Procfile server."""
    text, count = re.subn(pattern, replacement, SITE.read_text(), flags=re.MULTILINE)
    assert count, f"no {pattern!r} in {SITE}"
    site = folder / "weakened.conf"
    site.write_text(text)
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(RUN_PROXY_WITH_SITE)} {site}"
    return start_proxy(folder, {"WEB_CONCURRENCY": "1"}, command)


@pytest.mark.stress
@pytest.mark.parametrize("weakening", list(WEAKENINGS))
def test_each_weakening_of_the_site_fails_its_check_and_only_it(weakening, tmp_path):
    pattern, replacement, check = WEAKENINGS[weakening]
    proxy = start_weakened_proxy(tmp_path, pattern, replacement)
    try:
        status, checks = run_audit(
            f"https://127.0.0.1:{proxy.port}/",
            "--http-url",
            f"http://127.0.0.1:{proxy.http_port}/",
            "--insecure",
        )
    finally:
        assert proxy.server.stop() == 0, proxy.server.output()
    failed = {name: saw for name, (verdict, saw) in checks.items() if verdict != "pass"}
    assert list(failed) == [check], failed
    assert status == 1


def test_the_quick_client_checks_pass_against_make_run_proxy(proxy):
    target = audit.Target(f"https://127.0.0.1:{proxy.port}/")
    checks = [
        audit.http2_check(target),
        audit.bare_lf_check(target),
        audit.buffering_check(target),
        audit.forwarded_for_check(target),
        audit.per_address_check(target),
    ]
    assert {check.name: check.saw for check in checks if not check.passed} == {}


def test_the_owner_check_passes_while_the_pages_refuse_a_request_without_credentials(servers):
    check = audit.owner_check(audit.Target(servers("procfile").url + "/"))
    assert check.passed, check.saw
    assert check.saw.startswith("without credentials: /results 404, /results.csv 404 ")


class Open(http.server.BaseHTTPRequestHandler):
    """A server that shows every page to anyone (the owner's pages too)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # make test stays silent


def test_the_owner_check_fails_when_a_page_answers_without_credentials():
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Open) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            target = audit.Target(f"http://127.0.0.1:{server.server_address[1]}/")
            check = audit.owner_check(target)
        finally:
            server.shutdown()
            thread.join()
    assert check.passed is False
    assert check.saw.startswith("without credentials: /results 200, /results.csv 200")


@pytest.fixture
def database_server(tmp_path):
    """Start the Procfile's server on an SQLite database of the test's own, migrated or not."""
    started = []

    databases = []

    def start(migrated: bool):
        url = sqlite_url(tmp_path)
        databases.append(store.connect(url))
        if migrated:
            databases[-1].migrate()
        environ = {"DATABASE_URL": url}
        started.append(start_server(SERVER_COMMANDS["procfile"], tmp_path / "log", environ=environ))
        return started[-1], databases[-1]

    yield start
    for server in started:
        server.stop()
    for database in databases:
        database.close()  # Python 3.13 warns of an SQLite connection left open


def test_the_form_check_sends_the_example_once_and_finds_the_saved_page(database_server):
    server, database = database_server(migrated=True)
    checks = {check.name: check for check in audit.form_checks(audit.Target(server.url + "/"))}
    assert checks["form-round-trip"].passed, checks["form-round-trip"].saw
    assert checks["form-round-trip"].saw.endswith("GET 200, the example shown")
    assert checks["cross-site-post"].passed
    assert database.count() == 1


def test_the_form_check_fails_when_the_app_cannot_save(database_server):
    server, database = database_server(migrated=False)  # every save: 503
    check = audit.round_trip_check(audit.Target(server.url + "/"))
    assert check.passed is False
    assert "POST with Origin" in check.saw and ": 503 (wanted 303" in check.saw


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
