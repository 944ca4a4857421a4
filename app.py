"""The form app: an age and some hobbies, validated and shown back, served by Waitress."""

import functools
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

from bottle import (
    Bottle,
    HTTPError,
    SimpleTemplate,
    abort,
    request,
    response,
    static_file,
)

import shutdown

HERE = Path(__file__).resolve().parent
VIEWS = [str(HERE / "views")]  # Bottle's default TEMPLATE_PATH is relative to the cwd
STATIC = HERE / "static"

# The hobbies the form offers, value -> label, in the form's order. "tunning" is the seed's value:
# kept so that clients of the old form keep working.
HOBBIES = {"software": "Software", "tunning": "Auto Tuning"}
MAX_AGE = 150
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}

# Waitress settings for `python app.py`; tests/test_operations.py keeps the Procfile equal to them.
# Bodies must be smaller than MAX_BODY (Waitress's rule); the form needs under 1 KiB.
MAX_BODY = 16 * 1024
SERVER = {
    "threads": 4,
    "connection_limit": 1000,
    "channel_timeout": 30,
    "max_request_body_size": MAX_BODY,
    "max_request_header_size": 16 * 1024,
    "asyncore_use_poll": True,  # select() cannot watch more than 1024 sockets
    # Idle connections are closed channel_timeout to channel_timeout + cleanup_interval seconds
    # after their last byte: Waitress only looks every cleanup_interval seconds (default 30).
    "cleanup_interval": 1,
    # Behind the shipped proxy (deploy/), believe the client address and scheme it forwards;
    # from anyone else, drop those headers (Waitress's default), so they cannot be forged.
    "trusted_proxy": "127.0.0.1",
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

# What each error page says; the status line's own phrase is its title.
ERROR_MESSAGES = {
    400: "The form data could not be read. Send it from the form, as UTF-8 text.",
    403: "This form only accepts submissions from its own page.",
    404: "There is no page at this address.",
    405: "This page does not accept that kind of request.",
    413: f"The submission is too large: it must be under {MAX_BODY // 1024} KiB.",
    415: "Send the form as application/x-www-form-urlencoded or multipart/form-data.",
    500: "Something went wrong on our side. Please try again later.",
}

# Requests on several threads write access-log lines; text streams are not thread-safe, so each
# line is written whole under this lock.
ACCESS_LOG_LOCK = threading.Lock()


class FormApp(Bottle):
    """Bottle, plus the security headers on every response and one access-log line a request.

    Done in the app object itself, so that every name a server may be given for it
    (`app:application`, or Bottle's usual `app:app`) serves the whole app.
    """

    def wsgi(self, environ, start_response):
        started = time.perf_counter()
        status = "500 Internal Server Error"

        def start_with_headers(status_line, headers, exc_info=None):
            nonlocal status
            status = status_line
            return start_response(status_line, headers + SECURITY_HEADERS, exc_info)

        try:
            return super().wsgi(environ, start_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            fields = [
                environ.get("REMOTE_ADDR", "-"),
                environ.get("wsgi.url_scheme", "-"),
                loggable(environ.get("REQUEST_METHOD", ""), 20),
                loggable(environ.get("bottle.raw_path", environ.get("PATH_INFO", ""))),
                status.split(" ")[0],
                f"{elapsed:.1f}ms",
            ]
            access_log(" ".join(fields))


app = FormApp()
application = app  # the name servers import: `waitress-serve app:application`
# Each view compiled once and held, rather than looked up by name on every call to template().
FORM_VIEW = SimpleTemplate(name="form", lookup=VIEWS)
ERROR_VIEW = SimpleTemplate(name="error", lookup=VIEWS)


def validate(age: str, hobbies: list[str]) -> tuple[dict, dict]:
    """Return the cleaned form values and a dict of error messages by field name."""
    errors = {}
    age = age.strip()
    digits = re.fullmatch(r"0*([0-9]{1,3})", age)
    if digits and int(digits[1]) <= MAX_AGE:
        age = str(int(digits[1]))
    elif age:
        errors["age"] = f"Enter your age as a whole number from 0 to {MAX_AGE}, like 34."
    if not set(hobbies) <= HOBBIES.keys():
        errors["hobbies"] = "Choose only from the hobbies listed."
    chosen = [value for value in HOBBIES if value in hobbies]
    return {"age": age, "hobbies": chosen}, errors


def render_form(values: dict, errors: dict) -> str:
    """Render the form page with the given values and errors."""
    return FORM_VIEW.render(hobbies=HOBBIES, values=values, errors=errors)


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
def refuse_cross_origin():
    """Refuse state-changing requests sent by another site."""
    if request.method not in ("GET", "HEAD", "OPTIONS") and is_cross_origin(request.environ):
        abort(403)


@functools.cache
def empty_form() -> bytes:
    """Render and encode the empty form once: it is the same page for every request."""
    return render_form({"age": "", "hobbies": []}, {}).encode()


@app.get("/")
def show_form():
    """Show the empty form."""
    return empty_form()


@app.post("/")
def submit_form():
    """Validate the submitted form and show it back with the result or the errors."""
    content_type = request.content_type.split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        abort(415)
    try:
        if request.content_length >= MAX_BODY:
            abort(413)  # Waitress refuses these before reading them; this covers other servers
        form = request.forms.decode("utf-8")
    except (ValueError, LookupError):  # bad UTF-8, charset, Content-Length or multipart header
        abort(400)
    values, errors = validate(form.get("age", ""), form.getall("hobbies"))
    if errors:
        response.status = 422
    response.set_header("Cache-Control", "no-store")
    return render_form(values, errors)


# One plain file name: no folders and no dots before the extension, so no way out of static/.
@app.get(r"/static/<filename:re:[a-z0-9-]+\.[a-z]+>")
def static(filename):
    """Serve a file from static/ (the stylesheet), with Bottle's caching validators."""
    return static_file(filename, root=STATIC)


@app.get("/healthz")
def healthz():
    """Answer a platform's health check."""
    response.content_type = "text/plain; charset=utf-8"
    return "ok\n"


def error_page(error: HTTPError) -> str:
    """Render any error in the app's own layout, without internals (Bottle logs tracebacks)."""
    message = ERROR_MESSAGES.get(error.status_code, error.status_line)
    return ERROR_VIEW.render(status=error.status_line, message=message)


app.default_error_handler = error_page


def loggable(text: str, limit: int = 200) -> str:
    """Return request text as one log token: percent-encoded (no spaces or controls), capped."""
    token = quote(text.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=~")
    return token if len(token) <= limit else f"{token[:limit]}...({len(token)}B)"


def access_log(line: str) -> None:
    """Write an access-log line to stderr, where the platform collects it (twelve-factor logs).

    Written directly, not through `logging`: a log record per request was over a quarter of the
    app's own CPU per GET (bench/results.md). The line has no form values.
    """
    try:
        with ACCESS_LOG_LOCK:
            sys.stderr.write(f"access: {line}\n")  # stderr is line-buffered: one write per line
    except (OSError, ValueError):  # a closed or broken log stream must not fail the request
        pass


if threading.current_thread() is threading.main_thread():
    # Platforms stop a process with SIGTERM: finish the requests in flight first (this also
    # covers `waitress-serve app:application`, which imports this module in its main thread).
    shutdown.install()


if __name__ == "__main__":
    import waitress

    logging.basicConfig(level=logging.INFO)  # the format waitress-serve uses too
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    waitress.serve(application, host=host, port=port, **SERVER)
