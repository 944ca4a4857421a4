"""Write deploy/errors/: the pages nginx answers with itself, in the app's own layout.

Run it from the project folder after changing views/error.tpl or app.ERROR_MESSAGES:
`.venv/bin/python -m deploy.error_pages`. tests/test_proxy.py fails until the pages match.
"""

from pathlib import Path

import app
import guards

ERRORS = Path(__file__).resolve().parent / "errors"

# The statuses nginx answers with a page of its own (deploy/form-app.conf's error_page lines),
# and what each says. nginx also shows its 400 and 413 pages in place of the app's, whose message
# may be more particular (a bad %-escape, too many fields): so these two say what covers all.
# A gateway failure is, to the person filling the form, our fault: the app's 500 message.
MESSAGES = {
    400: "The request could not be read. Send it from the form, as UTF-8 text.",
    413: f"The submission is too large: it must be under {guards.MAX_BODY // 1024} KiB, with no "
    "more fields than the form has.",
    414: "This address is too long: there is no page at an address this long.",
    # Too many in progress at once (limit_conn), or too many for the owner's pages (limit_req).
    429: "Too many requests came from your address. Please wait a few seconds, then try again.",
    431: "The request's headers are too large: send it from the form.",
    502: app.ERROR_MESSAGES[500],
    504: app.ERROR_MESSAGES[500],
}
# Each page's status line, written here rather than taken from Python's table, whose words change
# between the Pythons the app supports (3.13 calls 413 "Content Too Large"): the pages are
# written once and must be the same whichever Python checks them.
STATUS_LINES = {
    400: "400 Bad Request",
    413: "413 Request Entity Too Large",
    414: "414 Request-URI Too Large",
    429: "429 Too Many Requests",
    431: "431 Request Header Fields Too Large",
    502: "502 Bad Gateway",
    504: "504 Gateway Timeout",
}


def pages() -> dict[str, str]:
    """Return each error page's file name and HTML, rendered as the app renders its own."""
    return {
        f"{status}.html": app.render_error(STATUS_LINES[status], message)
        for status, message in MESSAGES.items()
    }


if __name__ == "__main__":
    for name, html in pages().items():
        (ERRORS / name).write_text(html)
        print(f"wrote {ERRORS / name}")
