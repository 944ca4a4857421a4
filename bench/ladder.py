"""Rungs between the floor and the app: Bottle doing only part of the app's work per POST.

Served like the floor and measured against it (`make ladder`), they say what each part the app
must have costs on its own: Bottle itself, reading the form through `request.forms`, rendering
the page with SimpleTemplate. They answer with the app's pages and headers, like the floor, but
run no validation, no cross-origin check and write no access-log line.
"""

import bottle

import app
from bench.floor import PAGES

EXPECTED = {"age": "34", "hobbies": ["software", "tunning"]}  # what floor.FORM holds
# The app's headers for each method, less the one Bottle computes itself.
HEADERS = {method: [h for h in PAGES[method][1] if h[0] != "Content-Length"] for method in PAGES}


def make_rung(parses: bool, renders: bool) -> bottle.Bottle:
    """Return a Bottle app that parses and renders a POST only if told to."""
    rung = bottle.Bottle()

    @rung.get("/")
    def show():
        """Answer with the app's empty form."""
        return answer("GET", PAGES["GET"][2])

    @rung.post("/")
    def submit():
        """Answer with the app's result page, parsing and rendering it if told to."""
        values = EXPECTED
        if parses:
            form = bottle.request.forms.decode("utf-8")
            values = {"age": form.get("age", ""), "hobbies": form.getall("hobbies")}
            assert values == EXPECTED, values  # a rung that parses nothing proves nothing
        return answer("POST", app.render_form(values, {}) if renders else PAGES["POST"][2])

    return rung


def answer(method: str, page):
    """Set the app's headers for this method and return the page."""
    for name, value in HEADERS[method]:
        bottle.response.set_header(name, value)
    return page


# The rungs, served as bench.ladder:NAME (bench.py's RUNGS lists them).
fixed = make_rung(parses=False, renders=False)  # Bottle answering with a fixed page
parse = make_rung(parses=True, renders=False)
render = make_rung(parses=False, renders=True)
parse_render = make_rung(parses=True, renders=True)  # the least a conforming POST must do
