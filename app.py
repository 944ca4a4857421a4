"""The form app: an age and some hobbies, validated and shown back, served by Waitress.

This file is the app: the form, its rules, its routes, then the wiring. Where submissions are
kept (store.py), what guards requests (guards.py), the log (logs.py), a graceful stop
(shutdown.py) and the service manager's notifications (notify.py) live beside it.
"""

import csv
import functools
import io
import itertools
import os
import re
import secrets
import sys
import threading
import unicodedata
from pathlib import Path

from bottle import FormsDict, request, response, static_file, template

import guards
import logs
import notify
import owner
import shutdown
import store

HERE = Path(__file__).resolve().parent
# Where the templates are. Bottle's default is relative to the working directory, not ours; and
# Bottle caches each template by this list's identity, so it is made once.
VIEWS = [str(HERE / "views")]

# The form.
TITLE = "Age and hobbies"  # the form page's title and heading
# The hobbies the form offers, value -> label, in the form's order. "tunning" is the seed's value:
# kept so that clients of the old form keep working.
HOBBIES = {"software": "Software", "tunning": "Auto Tuning"}
MAX_AGE = 150
AGE = re.compile(r"0*([0-9]{1,3})")  # a whole number: up to three digits after any zeros
# A valid submission, field -> values: what the tests and the benchmark send.
EXAMPLE = {"age": ["34"], "hobbies": list(HOBBIES)}
# Each form carries a one-time token: a submission sent twice (a double click, a resent POST) is
# stored once and shown at /saved/<token>, which nobody can guess.
TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): 128 random bits
# A field hidden from people and screen readers: bots fill it in, and what they send is answered
# like any other submission, and not stored.
TRAP = "website"
# How long to wait before sending again when the database cannot save (503).
RETRY_SECONDS = 10


def first(form, name: str) -> str:
    """Return a field's value, stripped, or "". Sent twice: the first counts, as in the seed."""
    values = form.getall(name)
    return values[0].strip() if values else ""


def validate(form) -> tuple[dict, dict]:
    """Return the cleaned values of a submitted form (a Bottle FormsDict) and errors by field."""
    errors = {}
    age = first(form, "age")
    digits = AGE.fullmatch(age)
    if digits and int(digits[1]) <= MAX_AGE:
        age = str(int(digits[1]))
    elif age:
        errors["age"] = f"Enter your age as a whole number from 0 to {MAX_AGE}, like 34."
    hobbies = form.getall("hobbies")
    if not set(hobbies) <= HOBBIES.keys():
        errors["hobbies"] = "Choose only from the hobbies listed."
    chosen = [value for value in HOBBIES if value in hobbies]
    return {"age": age, "hobbies": chosen}, errors


# The form's fields, as validate() returns them: what the results page and the export show.
FIELDS = [name for name in validate(FormsDict())[0] if name != "hobbies"]


# The routes.
app = guards.GuardedApp()  # Bottle, plus the security headers and an access line (guards.py)
application = app  # the name servers import: `waitress-serve app:application`


@app.route("/", method=["GET", "HEAD"])
def show_form():
    """Show the empty form, rendered once, with a new one-time token."""
    response.set_header("Cache-Control", "no-store")  # the token is this page's alone
    return empty_form().replace(TOKEN_SLOT, secrets.token_urlsafe(16))


@app.post("/")
def submit_form():
    """Validate the submitted form; store it and send the browser to what was saved (303), or
    show the form again with the errors (422), or with the values when nothing could be saved
    (503)."""
    form = guards.read_form()
    values, errors = validate(form)
    token = form_token(form)
    response.set_header("Cache-Control", "no-store")  # the page holds what the person sent
    if errors:
        response.status = 422
        return render_form(values, errors, token)
    if not first(form, TRAP):  # a bot's submission is answered the same, and not stored
        try:
            saved = DATABASE.save(token, values)
        except store.Unavailable as error:
            logs.APP.error("not saved: %s", error)
            response.status = 503
            response.set_header("Retry-After", str(RETRY_SECONDS))
            return render_form(values, {}, token, notice="unsaved")
        if not saved:  # its token was saved with other answers: those stay, these get a new one
            response.status = 409
            return render_form(values, {}, secrets.token_urlsafe(16), notice="sent-before")
    response.status = 303  # see what was saved: reloading that page sends nothing again
    response.set_header("Location", f"/saved/{token}")
    return ""


def form_token(form) -> str:
    """Return the form's one-time token; a new one for a client that sent none (the seed's)."""
    token = first(form, "token")
    if not token:
        return secrets.token_urlsafe(16)
    if not TOKEN.fullmatch(token):
        raise guards.Refusal(400, BAD_TOKEN)
    return token


@app.route("/saved/<token:re:[A-Za-z0-9_-]{22}>", method=["GET", "HEAD"])
def show_saved(token):
    """Show a saved submission to whoever has its token: the browser that sent it."""
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Robots-Tag", "noindex")
    try:
        saved = DATABASE.find(token)
    except store.Unavailable as error:
        return unavailable(error)
    if saved is None:
        response.status = 404
        return render_error(response.status_line, NOT_SAVED)
    received, values = saved
    order = list(HOBBIES)  # the form's order; a hobby since taken off the form comes last
    values["hobbies"].sort(key=lambda value: order.index(value) if value in order else len(order))
    return page(
        "saved", "Saved: " + TITLE, heading=TITLE, hobbies=HOBBIES, values=values, received=received
    )


@app.route("/results", method=["GET", "HEAD"])
def show_results():
    """Show the owner what was submitted: counts and charts, each with its table."""
    owner.check()
    try:
        figures = DATABASE.results(FIELDS, list(HOBBIES))
    except store.Unavailable as error:
        return unavailable(error)
    return page("results", "Results: " + TITLE, hobbies=HOBBIES, figures=figures)


@app.route("/results.csv", method=["GET", "HEAD"])
def export_results():
    """Send the owner every submission as a CSV file, streamed as it is read; one export at a
    time in a process (503 meanwhile)."""
    owner.check()
    # Each export holds a thread and a database read for seconds: a second one at once (a
    # double click, a script) is refused (503) rather than take another of the four threads.
    if not EXPORTING.acquire(blocking=False):
        response.status = 503
        response.set_header("Retry-After", str(EXPORT_RETRY_SECONDS))
        return render_error(response.status_line, EXPORT_BUSY)
    try:
        rows = DATABASE.export(FIELDS, list(HOBBIES))
    except store.Unavailable as error:
        EXPORTING.release()
        return unavailable(error)
    response.content_type = "text/csv; charset=utf-8"
    response.set_header("Content-Disposition", 'attachment; filename="results.csv"')
    return csv_lines(["received", *FIELDS, *HOBBIES], rows, done=EXPORTING.release)


CSV_BATCH = 1000  # rows written to the CSV file's buffer, and sent, at a time
EXPORTING = threading.Lock()  # held by the export in progress, until its last row is sent
EXPORT_RETRY_SECONDS = 5
EXPORT_BUSY = (
    "Another export of the results is being sent just now. "
    f"Please try again in {EXPORT_RETRY_SECONDS} seconds."
)


def csv_lines(header: list[str], rows, done=None):
    """Yield the CSV file in pieces: a BOM (so that Excel reads UTF-8) and the header, then
    each batch of rows; the rows are read one batch at a time, never all at once. When the
    file is sent, or cut short, the rows are closed and `done` is called."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    buffer.write("\ufeff")
    writer.writerow(header)
    try:
        while True:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            cells = [csv_cells(row) for row in itertools.islice(rows, CSV_BATCH)]
            if not cells:
                return
            writer.writerows(cells)
    except store.Unavailable as error:  # the answer has begun: it can only be cut short
        logs.APP.error("export cut short: %s", error)
        raise
    finally:
        try:
            rows.close()
        finally:
            if done is not None:
                done()


# What a spreadsheet reads as the start of a formula in a cell (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cells(row: tuple) -> list[str]:
    """Return one exported row as text: the time received (UTC, to the second), each field's
    value or "", each hobby "1" or "0"; a cell that would start a formula gets a ' first."""
    received, *values = row
    cells = [received.strftime("%Y-%m-%dT%H:%M:%SZ")]
    for value in values:
        if isinstance(value, bool):
            cells.append("1" if value else "0")
        else:
            cells.append("" if value is None else str(value))
    return ["'" + cell if starts_formula(cell) else cell for cell in cells]


def starts_formula(cell: str) -> bool:
    """Tell whether a spreadsheet could read a cell as a formula: it starts with one of
    FORMULA_START as it is, after white space, or once its compatibility forms are folded
    (NFKC: a full-width ＝ or a small ﹦ is read as = by some spreadsheets)."""
    folded = unicodedata.normalize("NFKC", cell)
    # Each form looked at: a tab or CR is white space to lstrip(), and a combining mark after
    # = folds with it into another character (= and U+0338 into ≠).
    return any(text.startswith(FORMULA_START) for text in (cell, cell.lstrip(), folded.lstrip()))


def unavailable(error: store.Unavailable) -> str:
    """Log a database fault and answer a page that says to try again soon (503)."""
    logs.APP.error("not read: %s", error)
    response.status = 503
    response.set_header("Retry-After", str(RETRY_SECONDS))
    return render_error(response.status_line, UNAVAILABLE)


# One plain file name: no folders and no dots before the extension, so no way out of static/.
@app.route(r"/static/<filename:re:[a-z0-9-]+\.[a-z]+>", method=["GET", "HEAD"])
def static(filename):
    """Serve the stylesheet and icon: revalidated on each use, so a deploy is seen at once."""
    environ = request.environ
    environ.pop("HTTP_RANGE", None)  # small files, sent whole (Bottle mishandles ranges)
    # Bottle sends its ETag unquoted and compares If-None-Match byte for byte, then falls back to
    # If-Modified-Since, which must be ignored when If-None-Match is sent (RFC 9110 13.1.3):
    # If-None-Match is decided here, on the quoted tag, instead.
    if_none_match = environ.pop("HTTP_IF_NONE_MATCH", None)
    if if_none_match is not None:
        environ.pop("HTTP_IF_MODIFIED_SINCE", None)
    answer = static_file(filename, root=HERE / "static", headers={"Cache-Control": "no-cache"})
    answer.headers.pop("Accept-Ranges", None)  # and not offered in parts
    if hasattr(answer.body, "read"):  # the file, read: sent with its head in one send()
        with answer.body as file:
            answer.body = file.read()
    if "ETag" in answer.headers:  # the file is there (not a 404)
        etag = answer.headers["ETag"] = f'"{answer.headers["ETag"]}"'
        if if_none_match is not None and names_tag(if_none_match, etag):
            answer.status = 304  # Bottle sends a 304 without the body, and closes the file
    return answer


def names_tag(if_none_match: str, etag: str) -> bool:
    """Tell whether an If-None-Match header names this entity-tag: `*`, or a list holding it,
    weak (`W/`) or not, as RFC 9110 13.1.2 compares them."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return if_none_match.strip() == "*" or etag in tags


@app.route("/healthz", method=["GET", "HEAD"])
def healthz():
    """Answer a platform's health check."""
    response.content_type = "text/plain; charset=utf-8"
    return "ok\n"


def render_form(values: dict, errors: dict, token: str, notice: str | None = None) -> str:
    """Render the form page with the given values, errors and token, and a notice above it
    (a key of NOTICES) when the values were not saved."""
    title = f"Error: {TITLE}" if errors or notice else TITLE
    return page(
        "form",
        title,
        heading=TITLE,
        hobbies=HOBBIES,
        values=values,
        errors=errors,
        token=token,
        trap=TRAP,
        notice=notice,
        notices=NOTICES,
    )


# Why the values in a form sent back were not saved, by the notice's id.
NOTICES = {
    "unsaved": "Your answers could not be saved just now, and nothing was stored. They are still "
    "below: please send them again in a minute.",
    "sent-before": "This form was sent before with other answers, which are saved. Yours, below, "
    "are not saved yet: send them to save them too.",
}


TOKEN_SLOT = "TOKEN-SLOT"  # where empty_form()'s token goes; not a password  # nosec B105


@functools.cache
def empty_form() -> str:
    """Render the form as nobody has filled it in: an empty submission's values, and no errors,
    as nothing was submitted (a required field would otherwise be flagged on arrival)."""
    values, _ = validate(FormsDict())
    return render_form(values, {}, TOKEN_SLOT)


def render_error(status: str, message: str) -> str:
    """Render an error page: its status line and what to do about it."""
    return page("error", status, message=message)


def page(view: str, title: str, **values) -> str:
    """Render a view of views/ (each one rebases itself on views/base.tpl)."""
    return template(view, template_lookup=VIEWS, title=title, **values)


# The wiring: server settings, hooks, error pages, start-up.

# Waitress settings for `python app.py`; tests/test_operations.py keeps the Procfile equal to them.
SERVER = {
    "threads": 4,
    "connection_limit": 1000,
    # Longer than a platform router keeps an idle connection to the app (Heroku's Router 2.0:
    # 90 s), so that the router, not the app, closes it: closed by the app, it may be the one the
    # router just sent a request on. Slow clients are the proxy's to bound (docs/settings.md).
    "channel_timeout": 95,
    "max_request_body_size": guards.MAX_BODY,  # bodies must be smaller (Waitress's rule)
    "max_request_header_size": 16 * 1024,
    "asyncore_use_poll": True,  # select() cannot watch more than 1024 sockets
    # Idle connections are closed channel_timeout to channel_timeout + cleanup_interval seconds
    # after their last byte: Waitress only looks every cleanup_interval seconds (default 30).
    "cleanup_interval": 1,
    # Each answer leaves in one send(), head and body together, when its task ends (Waitress's
    # default, 1, sends the head, then the body): an instance killed between the two would cut
    # an answer short that nginx has begun to pass on and cannot retry. Larger than any page.
    "send_bytes": 18000,
    # How much of an answer Waitress keeps for a slow client before the app's thread waits
    # (default 16 MB; past outbuf_overflow, 1 MB, it is kept in a temporary file). Large enough
    # for the whole CSV export: a client that stops reading, with no nginx in front to take it
    # all (make run, a platform), would otherwise hold a thread and the export's database read
    # (which on SQLite stops the WAL from being checkpointed) for as long as it stays. The
    # cost: about 40 MB of temporary disk per million rows exported, while the client reads.
    "outbuf_high_watermark": 1024 * 1024 * 1024,
    # Behind the shipped proxy (deploy/), believe the client address and scheme it forwards;
    # from anyone else, drop those headers (Waitress's default), so they cannot be forged.
    # TRUSTED_PROXY: nginx's address when it runs on another host (the Procfile reads it too).
    "trusted_proxy": os.environ.get("TRUSTED_PROXY", "127.0.0.1"),
    "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
    "clear_untrusted_proxy_headers": True,
}

app.add_hook("before_request", guards.check_request)

# Where submissions are kept: DATABASE_URL, else an SQLite file in the state folder (store.py).
# Nothing is opened until the first save, so the app starts, and GET / answers, without it.
DATABASE = store.connect(threads=SERVER["threads"])

BAD_TOKEN = "The form could not be read: reload it, fill it in and send it again."  # nosec B105
NOT_SAVED = "There is no saved submission at this address."
UNAVAILABLE = f"This page cannot be shown just now. Please try again in {RETRY_SECONDS} seconds."

# What each error page says; the status line's own phrase is its title. A refusal may say more.
ERROR_MESSAGES = {
    400: "The form data could not be read. Send it from the form, as UTF-8 text.",
    403: "This form only accepts submissions from its own page.",
    404: "There is no page at this address.",
    405: "This page does not accept that kind of request.",
    413: f"The submission is too large: it must be under {guards.MAX_BODY // 1024} KiB.",
    415: "Send the form as application/x-www-form-urlencoded or multipart/form-data.",
    500: "Something went wrong on our side. Please try again later.",
}


def error_page(error) -> str:
    """Render any error in the app's own layout, without internals (tracebacks go to the log)."""
    if isinstance(error, guards.Refusal):
        message = error.body
    else:
        message = ERROR_MESSAGES.get(error.status_code, error.status_line)
    return render_error(error.status_line, message)


app.default_error_handler = error_page

# Start-up, as `python app.py` and `waitress-serve app:application` both import this module:
# the log (one line an event, never blocking a request); on SIGTERM, which platforms stop a
# process with, finish the requests in flight first (shutdown.py); and under a service manager
# (systemd, run_proxy.py), say when Waitress listens and that its loop still turns (notify.py).
# A RESULTS_PASSWORD_HASH that cannot be read stops the start, rather than fail each visit.
owner.check_settings()
logs.configure()
if threading.current_thread() is threading.main_thread():
    shutdown.install()
notify.install()


def main() -> None:
    """Serve the app on $HOST:$PORT (default 127.0.0.1:8080) with the settings above."""
    import waitress

    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8080")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        sys.exit(f"PORT must be a port number from 1 to 65535, not {port!r}")
    try:
        waitress.serve(application, host=host, port=int(port), **SERVER)
    except (OSError, ValueError) as error:  # an unknown host, an address not here, a port in use
        sys.exit(f"cannot listen on {host}:{port}: {error}")


if __name__ == "__main__":
    main()
