"""For the browser tests and `make screenshots`: Debian's Chromium, and the four page states."""

import re

from helpers import INSTALL_HINTS, INVALID, example, require  # noqa: F401 (browser tests import them here)
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

# As root, offline: no sandbox (root), no GPU (no screen), and none of Chromium's own traffic to
# Google, whose refused connections would only slow it down; no QUIC, which nginx here does not
# speak. form.test is a host name for tests/browser/test_host_names.py: there, over plain HTTP,
# Chromium sends what a LAN user's browser sends (to 127.0.0.1 it sends what localhost gets).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--host-resolver-rules=MAP form.test 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def launch(playwright: Playwright, executable: str) -> Browser:
    """Start the system Chromium headless (Playwright's own browser downloads fail offline)."""
    # Playwright gives each launch a fresh, empty user data dir of its own.
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


# Chromium logs a 404 or 422 page as an error; for the 404 page and the form's errors, that is
# the point. Any other status, or these for anything but the page itself, is reported.
DOCUMENT_STATUS = re.compile(
    r"Failed to load resource: the server responded with a status of (404|422) "
)


class ConsoleWatch:
    """Collect a page's console errors, CSP violations and uncaught exceptions."""

    def __init__(self, page: Page):
        self.messages: list[tuple[str, str]] = []  # (text, url)
        self.documents: set[tuple[str, str]] = set()  # (status, url) of each page loaded
        self.page = page
        page.on("console", self._on_console)
        page.on("pageerror", self._on_error)
        page.on("response", self._on_response)

    def stop(self) -> None:
        """Stop watching the page (another test goes on in it)."""
        self.page.remove_listener("console", self._on_console)
        self.page.remove_listener("pageerror", self._on_error)
        self.page.remove_listener("response", self._on_response)

    def _on_error(self, error) -> None:
        self.messages.append((f"uncaught: {error}", self.page.url))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append((message.text, message.location.get("url", "")))

    def _on_response(self, response) -> None:
        if response.request.is_navigation_request():
            self.documents.add((str(response.status), response.url))

    def problems(self) -> list[str]:
        """Return every message but those about a document's own expected status."""
        return [
            f"{text} ({url})"
            for text, url in self.messages
            if not ((match := DOCUMENT_STATUS.match(text)) and (match[1], url) in self.documents)
        ]


def empty_form(page: Page, url: str) -> None:
    """Open the form."""
    page.goto(url + "/")


def submit(page: Page) -> None:
    """Click Submit and wait for the answer page."""
    with page.expect_navigation():
        page.get_by_role("button", name="Submit").click()


def fill(page: Page, **changes: list[str]) -> None:
    """Fill in the form with the app's example submission (app.EXAMPLE), changed as given."""
    for name, values in example(**changes).items():
        controls = page.locator(f'form [name="{name}"]')
        for index in range(controls.count()):
            control = controls.nth(index)
            if control.get_attribute("type") == "checkbox":
                control.set_checked(control.get_attribute("value") in values)
            else:
                control.fill(values[0])


def result(page: Page, url: str) -> None:
    """Fill in the form correctly and submit it."""
    empty_form(page, url)
    fill(page)
    submit(page)


def validation_error(page: Page, url: str) -> None:
    """Submit an age that is not a number, with one hobby ticked."""
    empty_form(page, url)
    fill(page, **INVALID)
    submit(page)


def not_found(page: Page, url: str) -> None:
    """Open an address where there is no page."""
    page.goto(url + "/no-such-page")


STATES = {
    "empty-form": empty_form,
    "result": result,
    "validation-error": validation_error,
    "not-found": not_found,
}
