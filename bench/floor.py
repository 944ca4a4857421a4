"""The floor: a WSGI callable that answers with the app's own pages, fixed, parsing nothing."""

# The pages, status lines and headers are the app's, captured on first use (bench.py requests
# each once before timing), so the floor sends the same bytes per response as the app and stays
# in step when the templates change. Serving it with the Procfile's command line gives the
# fastest any app can answer on these server settings. Importing this module renders nothing.
import contextlib
import functools
import io
import threading
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import app

FORM = urlencode(app.EXAMPLE, doseq=True).encode()  # the app's valid example submission

# redirect_stderr swaps the process's sys.stderr: two server threads capturing at once must not
# interleave, or one would restore the other's StringIO.
CAPTURING = threading.Lock()


def environ(method: str) -> dict:
    """Return a WSGI environ for the benchmark's GET / or POST / (as wrk.lua sends them)."""
    env = {"REQUEST_METHOD": method, "wsgi.input": io.BytesIO(FORM)}
    if method == "POST":
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        env["CONTENT_LENGTH"] = str(len(FORM))
        env["HTTP_SEC_FETCH_SITE"] = "same-origin"
        env["HTTP_ORIGIN"] = "http://127.0.0.1"
    setup_testing_defaults(env)
    return env


@functools.cache
def page(method: str) -> tuple[str, list, bytes]:
    """Return the app's status line, headers and page for GET / or POST /, captured once."""
    started = []
    # The capture is not a request: no access-log line.
    with CAPTURING, contextlib.redirect_stderr(io.StringIO()):
        body = b"".join(app.application(environ(method), lambda *args: started.extend(args[:2])))
    status, headers = started
    if not status.startswith("200"):
        raise RuntimeError(f"the app answered {method} / with {status}")
    return status, headers, body


def application(environ, start_response):
    """Answer with the app's page for this method (GET's for any but POST); nothing is read."""
    status, headers, body = page("POST" if environ["REQUEST_METHOD"] == "POST" else "GET")
    start_response(status, headers)
    return [body]
