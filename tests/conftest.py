"""Fixtures. Where each test runs, and why:

- `testapp`: the app in-process (WebTest, lint on), the same object Waitress serves. The form,
  its errors, security and static files are the app's behaviour, not the server's: they are
  tested here, once.
- `server`: the app on a real Waitress, started by each command a user runs (the Procfile's
  `web:` line, and `python app.py`). Only where the server is the point: entry points and
  settings, limits Waitress enforces, the log stream, the drain on SIGTERM, raw-socket edge cases.
- `proxy`: the app behind the shipped nginx, as `make run-proxy` serves it: the edge (TLS,
  what nginx refuses, its error pages, forwarded addresses).
"""

import io
import logging
import os
import tempfile

import pytest
import webtest

# Every test's database is its own: never `make run`'s. Set before the app is imported, and
# inherited by every server a test starts (a test that counts rows takes `database` instead).
os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='form-app-tests-')}/form.sqlite3"

from databases import Postgres, sqlite_url  # noqa: E402 (after DATABASE_URL is set)
from helpers import SERVER_COMMANDS, raise_open_file_limit, skip_summary, start_proxy  # noqa: E402

import app  # noqa: E402
import logs  # noqa: E402
import store  # noqa: E402
from deploy.servers import start_server  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def migrated():
    """The run's own database, migrated, as a deploy does before the app starts."""
    database = store.connect()
    database.migrate()
    database.close()  # Python 3.13 warns of an SQLite connection left open


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this test process's own, started on first use."""
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The URL of an empty, migrated database of the test's own: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = request.getfixturevalue("postgres").create()
    database = store.connect(url)
    database.migrate()
    database.close()
    return url


@pytest.fixture
def database(database_url, monkeypatch):
    """The app's database, for this test: an empty, migrated one of its own (SQLite, then
    PostgreSQL), which the in-process app saves to."""
    database = store.connect(database_url)
    monkeypatch.setattr(app, "DATABASE", database)
    yield database
    database.close()


@pytest.fixture
def testapp():
    """The app in-process, as a webtest.TestApp with WebTest's lint on."""
    return webtest.TestApp(app.application)


@pytest.fixture(autouse=True, scope="session")
def quiet_log():
    """The app's log, in-process, goes to a sink: `make test` stays silent when green, and a test
    that reads the log takes the `log` fixture."""
    logs.configure(io.StringIO())


@pytest.fixture
def log():
    """The app's log (logs.py), on a stream of the test's own: call it, once, for the lines."""
    stream = io.StringIO()
    logging.getLogger("waitress.queue").filters = []  # configure() must add its own
    listener = logs.configure(stream)

    def lines() -> list[str]:
        logs.flush(listener)
        return stream.getvalue().splitlines()

    yield lines
    logs.configure(io.StringIO())  # back to a sink, as quiet_log set it


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """Start each real server on first use, by name; stop them all at the end of the run."""
    started = {}

    def get(name):
        if name not in started:
            log = tmp_path_factory.mktemp("server") / "server.log"
            started[name] = start_server(SERVER_COMMANDS[name], log)
        return started[name]

    yield get
    for running in started.values():
        running.stop()


@pytest.fixture(params=list(SERVER_COMMANDS))
def server(request, servers):
    """The app on a real Waitress server: from the Procfile's web: line, then from app.py."""
    return servers(request.param)


@pytest.fixture(scope="session")
def proxy(tmp_path_factory):
    """The app behind nginx, started by deploy/run_proxy.py as `make run-proxy` starts it."""
    raise_open_file_limit()  # nginx inherits it: tests/test_proxy.py opens 600 connections to it
    running = start_proxy(tmp_path_factory.mktemp("proxy"))
    yield running
    assert running.server.stop() == 0, running.server.output()


def pytest_terminal_summary(terminalreporter):
    """The skipped tests in one line, with what to install to run them: pytest's own list (-rs,
    left out of addopts) gives a line per test, some fifty on a machine without nginx."""
    reasons = [report.longrepr[2] for report in terminalreporter.stats.get("skipped", [])]
    if line := skip_summary(reasons):
        terminalreporter.write_line(line, yellow=True)
