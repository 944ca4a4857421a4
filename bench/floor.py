"""The floor: the least a WSGI app can do, answering with the app's own pages as fixed bytes.

Served by the Procfile's command line like the app, it is the fastest any app can answer there,
sending the same bytes per response. The pages, status lines and headers are the app's, asked of
`app.application` in this process at the first request for each (bench.py makes one before any
timing), so the floor stays in step when the form changes; importing this module renders nothing.
For POST that is the app's 303 to the saved page, after the app stored that one submission (in
DATABASE_URL's database): the floor answers every later POST with it and stores nothing.
"""

import functools
import io
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import app


@functools.cache
def page(method: str) -> tuple[str, list, bytes]:
    """Return the app's status line, headers and page for GET / (200) or for POST / of
    app.EXAMPLE (303)."""
    form = urlencode(app.EXAMPLE, doseq=True).encode() if method == "POST" else b""
    environ = {"REQUEST_METHOD": method, "wsgi.input": io.BytesIO(form)}
    if method == "POST":
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        environ["CONTENT_LENGTH"] = str(len(form))
    setup_testing_defaults(environ)
    started = []
    body = b"".join(app.application(environ, lambda *args: started.extend(args[:2])))
    status, headers = started
    if not status.startswith("303" if method == "POST" else "200"):
        raise RuntimeError(f"the app answered {method} / with {status}")
    return status, headers, body


def application(environ, start_response):
    """Answer with the app's page for this method (GET's for any but POST), reading nothing."""
    status, headers, body = page("POST" if environ["REQUEST_METHOD"] == "POST" else "GET")
    start_response(status, headers)
    return [body]
