"""Fixtures for the browser tests: Debian's Chromium, and the app served from the Procfile."""

import pytest
from pages import ConsoleWatch, launch, require
from playwright.sync_api import sync_playwright


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the whole run; skipped without it, except in CI."""
    executable = require("chromium")
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def base_url(servers):
    """The address of the app on Waitress, started from the Procfile's web: line."""
    return servers("procfile").url


@pytest.fixture(scope="session")
def window(browser):
    """One browser window for the run, which the tests share: a new one costs Chromium over a
    second of CPU here, more than most tests take. The app sets no cookies and stores nothing,
    and each test starts by opening an address, which gives it a new document."""
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
