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


@pytest.fixture
def context(browser):
    """A fresh browser context: no cookies, cache or history from other tests."""
    context = browser.new_context()
    context.set_default_timeout(5000)  # a local page answers at once: fail fast when it does not
    yield context
    context.close()


@pytest.fixture
def page(context):
    """A fresh page; any console error or CSP violation in it fails the test."""
    page = context.new_page()
    watch = ConsoleWatch(page)
    yield page
    assert watch.problems() == [], "the page logged errors"
