"""Rungs between the floor and the app: Bottle doing only part of the app's work per POST.

Served like the floor and measured against it (`make ladder`), they say what each part the app
must have costs on its own: Bottle itself, reading the form through `request.forms`, rendering
the page with SimpleTemplate. They answer with the app's pages and headers, like the floor, but
run no validation, no cross-origin check and write no access-log line.
"""

import functools

import bottle

import app
from bench.floor import page


@functools.cache
def result() -> dict:
    """Return the values the app shows for floor.FORM, worked out once, before any timing."""
    form = bottle.FormsDict()
    for name, values in app.EXAMPLE.items():
        for value in values:
            form.append(name, value)
    return app.validate(form)[0]


BOTTLES_OWN = {"Content-Length", "Content-Type"}


@functools.cache
def extra_headers(method: str) -> list[tuple[str, str]]:
    """Return the app's headers for GET or POST that Bottle does not send by itself."""
    return [header for header in page(method)[1] if header[0] not in BOTTLES_OWN]


def make_rung(parses: bool, renders: bool):
    """Return a WSGI app: Bottle, parsing and rendering a POST only if told to."""
    rung = bottle.Bottle()
    rung.get("/")(lambda: page("GET")[2])

    @rung.post("/")
    def submit():
        """Answer with the app's result page, parsing and rendering it if told to."""
        if parses:
            form = bottle.request.forms.decode("utf-8")
            values = {name: form.getall(name) for name in app.EXAMPLE}
            assert values == app.EXAMPLE, values  # a rung that parses nothing proves nothing
        return app.render_form(result(), {}) if renders else page("POST")[2]

    def application(environ, start_response):
        """Add the app's headers the way app.application does: one list concatenation."""
        method = environ["REQUEST_METHOD"]
        extra = extra_headers(method) if method in ("GET", "POST") else []

        def start_with_headers(status, headers, exc_info=None):
            return start_response(status, headers + extra, exc_info)

        return rung(environ, start_with_headers)

    return application


# The rungs, served as bench.ladder:NAME (bench.py's RUNGS lists them).
fixed = make_rung(parses=False, renders=False)  # Bottle answering with a fixed page
parse = make_rung(parses=True, renders=False)
render = make_rung(parses=False, renders=True)
parse_render = make_rung(parses=True, renders=True)  # the least a conforming POST must do
