"""What each of the app's own features costs per POST, in-process (`make features`).

Starting from the app, the features are taken out one at a time, each on top of the last, until
what is left is the ladder's parse_render rung: Bottle reading the form and rendering the page.
Each line prints the CPU time per POST of what is left, best of nine, as bench/inprocess.py
times it. A measurement, not a change: the app is patched in this process only.
"""

import contextlib
import os
import sys
import time
import timeit
from pathlib import Path

import bottle
from bottle import request, response

# The project, in place of bench/, where bench.py would hide the bench package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
import app  # noqa: E402
from bench import ladder  # noqa: E402
from bench.floor import environ  # noqa: E402


def cost(wsgi, number: int) -> float:
    """Return a WSGI app's CPU time per POST / of the example form, in µs."""

    def call():
        b"".join(wsgi(environ("POST"), lambda status, headers, exc_info=None: None))

    call()
    runs = timeit.repeat(call, timer=time.thread_time, number=number, repeat=9)
    return min(runs) / number * 1e6


def submit_checked_only_by_bottle():
    """The app's POST route without read_form's checks: Bottle's forms, decoded."""
    values, errors = app.validate(request.forms.decode("utf-8"))
    if errors:
        response.status = 422
    response.set_header("Cache-Control", "no-store")
    return app.render_form(values, errors)


def submit_storable():
    """As above, without the Cache-Control header."""
    values, errors = app.validate(request.forms.decode("utf-8"))
    return app.render_form(values, errors)


def submit_unvalidated():
    """As the parse_render rung does: read and compare the form, render the known result."""
    form = request.forms.decode("utf-8")
    assert {name: form.getall(name) for name in app.EXAMPLE} == app.EXAMPLE
    return app.render_form(ladder.result(), {})


def with_security_headers(environ, start_response):
    """Bottle's own wsgi() with the security headers added, as the rungs add them: no log."""

    def start_with_headers(status, headers, exc_info=None):
        return start_response(status, headers + app.SECURITY_HEADERS, exc_info)

    return bottle.Bottle.wsgi(app.app, environ, start_with_headers)


def main(number: int = 5000):
    """Print the POST cost of the app, of the app without each feature in turn, and the rung's."""
    route = next(r for r in app.app.routes if r.rule == "/" and r.method == "POST")

    def post_route(callback):
        route.callback = callback
        app.app.reset()  # Bottle caches each route's callback

    steps = [
        ("the app", app.application, lambda: None),
        ("- the path and cross-origin hook", app.application,
         lambda: app.app.remove_hook("before_request", app.check_request)),
        ("- read_form's checks", app.application,
         lambda: post_route(submit_checked_only_by_bottle)),
        ("- Cache-Control: no-store", app.application, lambda: post_route(submit_storable)),
        ("- the access line and its wrapper", with_security_headers, lambda: None),
        ("- validate()", with_security_headers, lambda: post_route(submit_unvalidated)),
    ]  # fmt: skip
    # The access log goes to /dev/null: the cost stays, the noise goes.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        for label, wsgi, take_out in steps:
            take_out()
            print(f"{label:36} {cost(wsgi, number):5.1f} µs")
        print(f"{'the parse_render rung':36} {cost(ladder.parse_render, number):5.1f} µs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
