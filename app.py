"""The form app: an age and some hobbies, validated and shown back, served by Waitress."""

import functools
import hashlib
import logging
import mimetypes
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import quote, urlsplit

from bottle import (
    BaseResponse,
    Bottle,
    FormsDict,
    HTTPError,
    SimpleTemplate,
    abort,
    request,
    response,
)

import shutdown

HERE = Path(__file__).resolve().parent
VIEWS = [str(HERE / "views")]  # Bottle's default TEMPLATE_PATH is relative to the cwd
STATIC = HERE / "static"

TITLE = "Age and hobbies"  # the form page's title and heading
# The hobbies the form offers, value -> label, in the form's order. "tunning" is the seed's value:
# kept so that clients of the old form keep working.
HOBBIES = {"software": "Software", "tunning": "Auto Tuning"}
MAX_AGE = 150
AGE = re.compile(r"0*([0-9]{1,3})")  # a whole number: up to three digits after any zeros
# A valid submission, field -> values: what the tests and the benchmark send.
EXAMPLE = {"age": ["34"], "hobbies": list(HOBBIES)}
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}

# Waitress settings for `python app.py`; tests/test_operations.py keeps the Procfile equal to them.
# Bodies must be smaller than MAX_BODY (Waitress's rule); the form needs under 1 KiB.
MAX_BODY = 16 * 1024
SERVER = {
    "threads": 4,
    "connection_limit": 1000,
    # Longer than a platform router keeps an idle connection to the app (Heroku's Router 2.0:
    # 90 s), so that the router, not the app, closes it: closed by the app, it may be the one the
    # router just sent a request on. Slow clients are the proxy's to bound (docs/settings.md).
    "channel_timeout": 95,
    "max_request_body_size": MAX_BODY,
    "max_request_header_size": 16 * 1024,
    "asyncore_use_poll": True,  # select() cannot watch more than 1024 sockets
    # Idle connections are closed channel_timeout to channel_timeout + cleanup_interval seconds
    # after their last byte: Waitress only looks every cleanup_interval seconds (default 30).
    "cleanup_interval": 1,
    # Behind the shipped proxy (deploy/), believe the client address and scheme it forwards;
    # from anyone else, drop those headers (Waitress's default), so they cannot be forged.
    # TRUSTED_PROXY: nginx's address when it runs on another host (the Procfile reads it too).
    "trusted_proxy": os.environ.get("TRUSTED_PROXY", "127.0.0.1"),
    "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
    "clear_untrusted_proxy_headers": True,
}

SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the form's
    # own POST, which the Origin check below must refuse (Fetch: "serializing a request origin").
    ("Referrer-Policy", "same-origin"),
]

# What each error page says; the status line's own phrase is its title. A refusal may say more.
ERROR_MESSAGES = {
    400: "The form data could not be read. Send it from the form, as UTF-8 text.",
    403: "This form only accepts submissions from its own page.",
    404: "There is no page at this address.",
    405: "This page does not accept that kind of request.",
    413: f"The submission is too large: it must be under {MAX_BODY // 1024} KiB.",
    415: "Send the form as application/x-www-form-urlencoded or multipart/form-data.",
    500: "Something went wrong on our side. Please try again later.",
}
# The form sends at most one field per control; more are refused before they are parsed, so a
# request's work stays bounded (OWASP: limit the number of parameters). A test keeps the form under.
MAX_FIELDS = 32
TOO_MANY_FIELDS = f"The submission has too many fields: the form has fewer than {MAX_FIELDS}."
NO_FILES = "This form takes no files: send it from the form."
BAD_PATH = "This address is not valid: its %-escapes must be UTF-8."
# Characters HTML forbids in a page (controls other than white space, noncharacters): refused,
# never echoed.
NONCHARACTERS = "".join(
    chr(plane + 0xFFFE) + chr(plane + 0xFFFF) for plane in range(0, 0x110000, 0x10000)
)
NOT_TEXT = re.compile(f"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef{NONCHARACTERS}]")
# Multipart boundaries that Bottle reads exactly as the app does (no quotes, commas or spaces).
BOUNDARY = re.compile(r'[^\s",;\\]{1,70}', re.ASCII)
FILE_NAME = re.compile(r";\s*filename", re.IGNORECASE)  # filename= or filename*=: a file

# Requests on several threads write log lines; text streams are not thread-safe, so each line is
# written whole under this lock.
LOG_LOCK = threading.Lock()


class FormApp(Bottle):
    """Bottle, plus the security headers on every response and one access-log line a request.

    Done in the app object itself, so that every name a server may be given for it
    (`app:application`, or Bottle's usual `app:app`) serves the whole app.
    """

    def wsgi(self, environ, start_response):
        """Answer one request, with the security headers, and log it."""
        started = time.perf_counter()
        status = "500 Internal Server Error"

        def start_with_headers(status_line, headers, exc_info=None):
            nonlocal status
            status = status_line
            return start_response(status_line, headers + SECURITY_HEADERS, exc_info)

        try:
            if environ["REQUEST_METHOD"] == "GET" and environ.get("PATH_INFO") == "/":
                return empty_form_response(start_with_headers)  # the same for every request
            environ["wsgi.errors"] = OneLineErrors(environ["wsgi.errors"])  # Bottle's tracebacks
            return super().wsgi(environ, start_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            fields = [
                loggable(environ.get("REMOTE_ADDR") or "-", 50),  # from X-Forwarded-For too
                environ.get("wsgi.url_scheme") or "-",
                loggable(environ.get("REQUEST_METHOD", ""), 20),
                loggable(environ.get("bottle.raw_path", environ.get("PATH_INFO")) or "-"),
                status.split(" ")[0],
                f"{elapsed:.1f}ms",
            ]
            log_line("access: " + " ".join(fields))


class Refusal(HTTPError):
    """A 4xx whose message says exactly what was wrong with the request."""


app = FormApp()
application = app  # the name servers import: `waitress-serve app:application`
# Each view compiled once and held, rather than looked up by name on every call to template().
LAYOUT_VIEW = SimpleTemplate(name="layout", lookup=VIEWS)  # the page around each view
FORM_VIEW = SimpleTemplate(name="form", lookup=VIEWS)
ERROR_VIEW = SimpleTemplate(name="error", lookup=VIEWS)
CONTENT = "\0"  # marks the view's place in the layout: templates hold no NUL of their own


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


@functools.lru_cache(maxsize=64)  # one per page title: the form's two and the error statuses
def layout(title: str) -> tuple[str, str]:
    """Return the layout's HTML before and after a view, rendered once for each title.

    The layout depends on the title alone, so a page is one template run, not two as with
    SimpleTemplate's rebase (docs/benchmark.md).
    """
    before, _, after = LAYOUT_VIEW.render(title=title, content=CONTENT).partition(CONTENT)
    return before, after


def in_layout(title: str, content: str) -> str:
    """Return a whole page: a view's HTML inside the layout."""
    before, after = layout(title)
    return before + content + after


def render_form(values: dict, errors: dict) -> str:
    """Render the form page with the given values and errors."""
    content = FORM_VIEW.render(title=TITLE, hobbies=HOBBIES, values=values, errors=errors)
    return in_layout(f"Error: {TITLE}" if errors else TITLE, content)


def render_error(status: str, message: str) -> str:
    """Render an error page: its status line and what to do about it."""
    return in_layout(status, ERROR_VIEW.render(status=status, message=message))


def is_cross_origin(environ: dict) -> bool:
    """Tell whether a request comes from another site (the design of Go's CrossOriginProtection)."""
    fetch_site = environ.get("HTTP_SEC_FETCH_SITE")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return False  # not a browser, or a very old one: nothing to forge
    try:
        return urlsplit(origin).netloc != environ.get("HTTP_HOST")
    except ValueError:
        return True


@app.hook("before_request")
def check_request():
    """Refuse a path that is not UTF-8, and state-changing requests sent by another site."""
    try:
        request.environ["bottle.raw_path"].encode("latin-1").decode("utf-8")
    except UnicodeError:  # Bottle would drop the bad bytes and serve another path
        raise Refusal(400, BAD_PATH) from None
    if request.method not in ("GET", "HEAD", "OPTIONS") and is_cross_origin(request.environ):
        abort(403)


def media_type(header: str) -> tuple[str, dict]:
    """Split a Content-Type into its media type and parameters, names lower-cased (RFC 9110 8.3)."""
    kind, *pairs = header.split(";")
    params = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name.strip():  # a bare `;` is allowed
            params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params


def read_form():
    """Return the submitted form as UTF-8 text, or refuse it with the 4xx that says why."""
    environ = request.environ
    kind, params = media_type(environ.get("CONTENT_TYPE", ""))  # not lower-cased
    if kind not in FORM_TYPES:
        abort(415)
    if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        abort(400)
    try:
        if request.content_length >= MAX_BODY:
            abort(413)  # Waitress refuses these before reading them; this covers other servers
    except ValueError:  # a Content-Length that is not a number
        abort(400)
    body = request.body.read()
    if kind == "multipart/form-data":
        boundary = params.get("boundary", "")
        if not BOUNDARY.fullmatch(boundary):
            abort(400)
        check_parts(body, boundary)
        # Bottle reads the body as the type it sees, case-sensitively: show it the one accepted.
        environ["CONTENT_TYPE"] = f"{kind}; boundary={boundary}"
    else:
        if body.count(b"&") >= MAX_FIELDS:  # Bottle splits the fields on & alone
            raise Refusal(413, TOO_MANY_FIELDS)
        environ["CONTENT_TYPE"] = kind
    try:
        form = request.forms.decode("utf-8")
    except (ValueError, LookupError):  # bad UTF-8, or a broken multipart body
        abort(400)
    if any(NOT_TEXT.search(value) for _, value in form.allitems()):
        abort(400)
    return form


def check_parts(body: bytes, boundary: str) -> None:
    """Refuse a multipart body, before Bottle parses it, with too many parts, a file, or a part
    header other than Content-Disposition (a Content-Type could name another charset).

    Header names are read as Bottle reads them (UTF-8, white space stripped, `_` as `-`), and the
    body is split at every `--boundary`, where Bottle splits at some: nothing Bottle parses is
    left unchecked. Plain splits, no regular expression over the body: the work stays linear.
    """
    parts = [part for part in body.split(b"--" + boundary.encode())[1:] if part[:2] != b"--"]
    if len(parts) > MAX_FIELDS:
        raise Refusal(413, TOO_MANY_FIELDS)
    for part in parts:
        for line in part.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:  # [0]: the boundary line
            if not line or line[:1] in b" \t":  # folded lines join the header above
                continue
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().replace("_", "-").title() != "Content-Disposition":
                abort(400)
            if FILE_NAME.search(value):
                raise Refusal(400, NO_FILES)


@functools.cache
def empty_form() -> bytes:
    """Render and encode the empty form once: it is the same page for every request."""
    return render_form(validate(FormsDict())[0], {}).encode()  # an empty submission's values


@app.route("/", method=["GET", "HEAD"])
def show_form():
    """Show the empty form (a GET is answered by empty_form_response, without routing)."""
    return empty_form()


def empty_form_response(start_response) -> list[bytes]:
    """Answer GET / as show_form does through Bottle, without Bottle's work per request.

    The page is the same for every request, and Bottle's routing and response object cost more
    than the rest of the answer (docs/benchmark.md). A test keeps the two answers equal.
    """
    page = empty_form()
    headers = [
        ("Content-Length", str(len(page))),
        ("Content-Type", BaseResponse.default_content_type),
    ]
    start_response("200 OK", headers)
    return [page]


empty_form()  # rendered now: a form that cannot render stops the app at start, not on each GET


@app.post("/")
def submit_form():
    """Validate the submitted form and show it back with the result or the errors."""
    values, errors = validate(read_form())
    if errors:
        response.status = 422
    response.set_header("Cache-Control", "no-store")
    return render_form(values, errors)


@functools.cache
def static_assets() -> dict[str, tuple[bytes, str, str]]:
    """Read the files of static/ once, each with its type and ETag (a deploy restarts the app)."""
    assets = {}
    for path in STATIC.iterdir():
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        assets[path.name] = body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return assets


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Apply If-None-Match's weak comparison to a list of tags or `*` (RFC 9110 13.1.2)."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


# One plain file name: no folders and no dots before the extension, so no way out of static/.
@app.route(r"/static/<filename:re:[a-z0-9-]+\.[a-z]+>", method=["GET", "HEAD"])
def static(filename):
    """Serve the stylesheet and icon: revalidated on each use, so a deploy is seen at once."""
    asset = static_assets().get(filename)  # a name, never a path to look up on disk
    if asset is None:
        abort(404)
    body, kind, etag = asset
    response.set_header("ETag", etag)
    response.set_header("Cache-Control", "no-cache")  # keep it, but ask before each use
    if etag_matches(request.get_header("If-None-Match", ""), etag):
        response.status = 304
        return b""
    response.content_type = kind
    return body


@app.route("/healthz", method=["GET", "HEAD"])
def healthz():
    """Answer a platform's health check."""
    response.content_type = "text/plain; charset=utf-8"
    return "ok\n"


def error_page(error: HTTPError) -> str:
    """Render any error in the app's own layout, without internals (tracebacks go to the log)."""
    if isinstance(error, Refusal):
        message = error.body
    else:
        message = ERROR_MESSAGES.get(error.status_code, error.status_line)
    return render_error(error.status_line, message)


app.default_error_handler = error_page


def escaped(text: str) -> str:
    """Return text as one log line: line breaks and other control characters escaped."""
    return text.encode("unicode_escape").decode("ascii")


# What a logged token keeps as it is, besides letters, digits and _.-~. Not ( ): see loggable().
LOG_SAFE = "/:@!$&'*+,;=~"
LOGS_AS_IS = re.compile(rf"[\w.{re.escape(LOG_SAFE)}-]*", re.ASCII)  # what quote() leaves alone


def loggable(text: str, limit: int = 200) -> str:
    """Return request text as one log token: percent-encoded (no spaces or controls), capped,
    so that the cap's mark `...(NB)` cannot be sent as text."""
    if len(text) <= limit and LOGS_AS_IS.fullmatch(text):
        return text  # the usual address, method or path: what quote() returns, only sooner
    token = quote(text.encode("latin-1", "replace"), safe=LOG_SAFE)
    return token if len(token) <= limit else f"{token[:limit]}...({len(token)}B)"


def log_line(line: str) -> None:
    """Write one line to stderr, where the platform collects it (twelve-factor logs).

    The access log is written directly, not through `logging`: a log record per request was over
    a quarter of the app's own CPU per GET (docs/benchmark.md). Lines hold no form values.
    """
    try:
        with LOG_LOCK:
            sys.stderr.write(line + "\n")  # stderr is line-buffered: one write per line
    except (OSError, ValueError):  # a closed or broken log stream must not fail the request
        pass


class OneLineErrors:
    """A WSGI error stream that writes what it is given as one escaped line (a traceback too)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write("error: " + escaped(text.rstrip("\n")) + "\n")

    def writelines(self, lines) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        self.stream.flush()


class OneLineRecords(logging.Filter):
    """Make each of Waitress's log records one escaped line, and its queue warnings rare.

    Waitress puts the request's decoded path in some messages, and a client that floods it makes
    it warn about its task queue on every request: at most one of those every QUIET seconds.
    """

    QUIET = 10.0

    def __init__(self):
        super().__init__()
        self.next_queue_warning = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "one_line", False):  # seen already (app.py imported twice)
            return True
        record.one_line = True
        if record.name == "waitress.queue":
            now = time.monotonic()
            if now < self.next_queue_warning:
                self.suppressed += 1
                return False
            self.next_queue_warning = now + self.QUIET
            if self.suppressed:
                record.msg += f" ({self.suppressed} more since the last one logged)"
                self.suppressed = 0
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = record.exc_text = None
        record.msg, record.args = escaped(text), ()
        return True


ONE_LINE = OneLineRecords()
for name in ("waitress", "waitress.queue"):  # a logger's filters do not see its children's records
    logging.getLogger(name).addFilter(ONE_LINE)


if threading.current_thread() is threading.main_thread():
    # Platforms stop a process with SIGTERM: finish the requests in flight first (this also
    # covers `waitress-serve app:application`, which imports this module in its main thread).
    shutdown.install()


def main() -> None:
    """Serve the app on $HOST:$PORT (default 127.0.0.1:8080) with the settings above."""
    import waitress

    logging.basicConfig(level=logging.INFO)  # the format waitress-serve uses too
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8080")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        sys.exit(f"PORT must be a port number from 1 to 65535, not {port!r}")
    try:
        waitress.serve(application, host=host, port=int(port), **SERVER)
    except (OSError, ValueError) as error:  # an unknown host, an address not here, a port in use
        sys.exit(f"cannot listen on {host}:{port}: {error}")


if __name__ == "__main__":
    main()
