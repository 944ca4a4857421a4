"""Rungs between the floor and the app: Bottle doing only part of the app's work per POST.

Served like the floor and measured against it (`make ladder`), they say what each part the issues
require costs on its own. They answer with the app's pages, like the floor, but send only Bottle's
own headers (no security headers, no log line), so each rung is a little cheaper than the app would
be with that part alone.
"""

import bottle

import app
from bench.floor import PAGES

EXPECTED = {"age": "34", "hobbies": ["software", "tunning"]}  # what floor.FORM holds


def rung(parse: bool, render: bool) -> bottle.Bottle:
    """Return a Bottle app that parses and renders a POST only if told to."""
    rung = bottle.Bottle()
    rung.get("/")(lambda: PAGES["GET"][2])

    @rung.post("/")
    def post():
        values = EXPECTED
        if parse:
            form = bottle.request.forms.decode("utf-8")
            values = {"age": form.get("age", ""), "hobbies": form.getall("hobbies")}
            assert values == EXPECTED, values  # a rung that parses nothing proves nothing
        return app.render_form(values, {}) if render else PAGES["POST"][2]

    return rung


bottle_only = rung(parse=False, render=False)  # the "Bottle answering with a fixed page"
parse = rung(parse=True, render=False)
render = rung(parse=False, render=True)
parse_render = rung(parse=True, render=True)  # the least a POST that meets the issues must do
