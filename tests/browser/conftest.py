"""Fixtures for the browser tests: Debian's Chromium, and the app served from the Procfile."""

import signal
from dataclasses import dataclass

import pytest
from helpers import SERVER_COMMANDS
from pages import ConsoleWatch, launch, owner_environ, require, unsaved_database_url
from playwright.sync_api import sync_playwright

import store
from deploy.servers import start_server


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the whole run; skipped without it, except in CI."""
    executable = require("chromium")
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def base_url(tmp_path_factory):
    """The address of the app on Waitress, started from the Procfile's web: line, with the
    owner's password set (pages.OWNER), so that the results page can be opened."""
    folder = tmp_path_factory.mktemp("browser")
    environ = owner_environ()
    server = start_server(SERVER_COMMANDS["procfile"], folder / "server.log", environ=environ)
    yield server.url
    server.stop(signal.SIGKILL)  # see counted()


@pytest.fixture(scope="session")
def unsaved_url(tmp_path_factory):
    """The address of the app from the Procfile on a database that cannot save: every valid
    submission gets the 503 form."""
    folder = tmp_path_factory.mktemp("unsaved")
    environ = {"DATABASE_URL": unsaved_database_url(folder)}
    server = start_server(SERVER_COMMANDS["procfile"], folder / "server.log", environ=environ)
    yield server.url
    server.stop(signal.SIGKILL)  # see counted()


@dataclass
class Counted:
    """The app on a server of a test's own, and the database it saves to, to count the rows."""

    url: str
    database: store.SQLite | store.PostgreSQL


@pytest.fixture
def counted(database_url, tmp_path):
    """The app from the Procfile on an empty database of the test's own (SQLite, then
    PostgreSQL), whose rows the test counts."""
    environ = {"DATABASE_URL": database_url}
    server = start_server(SERVER_COMMANDS["procfile"], tmp_path / "server.log", environ=environ)
    database = store.connect(database_url)
    yield Counted(server.url, database)
    database.close()
    # Killed, its rows counted: a graceful stop would wait up to 20 s (shutdown.py) for the idle
    # connection Chromium may keep open to it, and is tested elsewhere.
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def window(browser):
    """One browser window for the run, which the tests share: a new one costs Chromium over a
    second of CPU here, more than most tests take. The app sets no cookies, and each test
    starts by opening an address, which gives it a new document."""
    context = browser.new_context(ignore_https_errors=True)  # the proxy's self-signed certificate
    context.set_default_timeout(5000)  # a local page answers at once: fail fast when it does not
    yield context.new_page()
    context.close()


@pytest.fixture
def page(window):
    """The window for one test; any console error or CSP violation in it fails the test."""
    watch = ConsoleWatch(window)
    yield window
    watch.stop()
    window.goto("about:blank")  # nothing of this test's page is left for the next one's
    window.mouse.move(0, 0)  # nor a pointer hovering over a control
    assert watch.problems() == [], "the page logged errors"
