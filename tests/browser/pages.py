"""For the browser tests and `make screenshots`: Debian's Chromium, and the page's states."""

import base64
import re
import secrets
from pathlib import Path

from helpers import INSTALL_HINTS, INVALID, example, require  # noqa: F401 (browser tests import them here)
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Response

import owner

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


# Chromium logs a 404, 409, 422 or 503 page as an error; for the 404 pages, the form's errors
# and the forms that could not be saved, that is the point. Any other status, or these for
# anything but the page itself, is reported.
DOCUMENT_STATUS = re.compile(
    r"Failed to load resource: the server responded with a status of (404|409|422|503) "
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


def unsaved_database_url(folder: Path) -> str:
    """Return the URL of a database that cannot save: an SQLite file never migrated, in which
    the app's save raises store.Unavailable, as it does when a database is down."""
    return f"sqlite:///{folder / 'never-migrated.sqlite3'}"


# The owner's user name and password, in the browser tests and the screenshots; the servers
# they start get owner_environ().
OWNER = ("owner", "correct horse battery staple")


def owner_environ() -> dict[str, str]:
    """Return the environment that makes OWNER the owner of a server's results pages."""
    return {"RESULTS_USER": OWNER[0], "RESULTS_PASSWORD_HASH": owner.hash_password(OWNER[1])}


def empty_form(page: Page, url: str) -> Response:
    """Open the form."""
    return page.goto(url + "/")


def submit(page: Page) -> Response:
    """Click Submit and wait for the answer page (after a redirect, the page it leads to)."""
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Submit").click()
    return navigation.value


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


def result(page: Page, url: str) -> Response:
    """Fill in the form correctly and submit it: the page of what was saved."""
    empty_form(page, url)
    fill(page)
    return submit(page)


def validation_error(page: Page, url: str) -> Response:
    """Submit an age that is not a number, with one hobby ticked."""
    empty_form(page, url)
    fill(page, **INVALID)
    return submit(page)


def unsaved(page: Page, url: str) -> Response:
    """Submit the form correctly to the app on a database that cannot save (unsaved_url): the
    503 form that keeps the values."""
    return result(page, url)


def sent_before(page: Page, url: str) -> Response:
    """Save the form, then send other answers with its token (a browser that restored the old
    form): the 409 form that keeps them, with a new token."""
    result(page, url)
    token = page.url.rsplit("/", 1)[1]
    empty_form(page, url)
    fill(page, age=["35"])
    page.locator('input[name="token"]').evaluate("(input, token) => input.value = token", token)
    return submit(page)


def not_saved(page: Page, url: str) -> Response:
    """Open a saved page's address with a token that no form was given."""
    return page.goto(f"{url}/saved/{secrets.token_urlsafe(16)}")


def not_found(page: Page, url: str) -> Response:
    """Open an address where there is no page."""
    return page.goto(url + "/no-such-page")


def results(page: Page, url: str) -> Response:
    """Save the form, then open the results page as the owner: the page's requests carry the
    owner's credentials, as a browser sends them once they are typed in its login box."""
    result(page, url)
    credentials = base64.b64encode(":".join(OWNER).encode()).decode()
    page.set_extra_http_headers({"Authorization": f"Basic {credentials}"})
    try:
        return page.goto(url + "/results")
    finally:
        page.set_extra_http_headers({})  # the next state's requests are anybody's


# Each state of the pages, in the order the screenshots show them. "result" is the saved page,
# under the name the README's screenshot has had since the page showed the result itself.
STATES = {
    "empty-form": empty_form,
    "result": result,
    "validation-error": validation_error,
    "unsaved": unsaved,
    "sent-before": sent_before,
    "not-saved": not_saved,
    "not-found": not_found,
    "results": results,
}


def reach(page: Page, state: str, url: str, unsaved_url: str) -> Response:
    """Bring the page to a state on the server that state needs: the app at url, or for
    "unsaved", the app at unsaved_url, whose database cannot save. Return the page's response."""
    return STATES[state](page, unsaved_url if state == "unsaved" else url)
