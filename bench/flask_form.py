"""The same form in Flask + Jinja2, written as a Flask user would: the peer `make bench` measures.

The same page (templates/ here are views/ in Jinja2), the same rules, status codes and headers
as app.py for the form's GET / and POST /, served by the Procfile's command line as
`bench.flask_form:app`. It reads the title and the hobbies from app.py, so that it offers the
same choices when they change. Not written here: app.py's error pages, its request guards
beyond the cross-site check, and its access-log line (Flask on Waitress logs no requests).
"""

import re
from urllib.parse import urlsplit

from flask import Flask, abort, render_template, request

from app import HOBBIES, TITLE

MAX_AGE = 150
AGE = re.compile(r"0*([0-9]{1,3})")  # a whole number: up to three digits after any zeros

app = Flask(__name__)
# Lines that hold only a {% tag %} leave nothing in the page, as SimpleTemplate's % lines do,
# and the page ends with its last line's newline: the same bytes as app.py's page.
app.jinja_env.trim_blocks = True
app.jinja_env.lstrip_blocks = True
app.jinja_env.keep_trailing_newline = True

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def validate(form) -> tuple[dict, dict]:
    """Return the cleaned values of a submitted form and the errors by field."""
    errors = {}
    age = form.get("age", "").strip()
    digits = AGE.fullmatch(age)
    if digits and int(digits[1]) <= MAX_AGE:
        age = str(int(digits[1]))
    elif age:
        errors["age"] = f"Enter your age as a whole number from 0 to {MAX_AGE}, like 34."
    hobbies = form.getlist("hobbies")
    if not set(hobbies) <= HOBBIES.keys():
        errors["hobbies"] = "Choose only from the hobbies listed."
    chosen = [value for value in HOBBIES if value in hobbies]
    return {"age": age, "hobbies": chosen}, errors


def render_form(values: dict, errors: dict) -> str:
    """Render the form page with the given values and errors."""
    return render_template("form.html", title=TITLE, hobbies=HOBBIES, values=values, errors=errors)


@app.before_request
def refuse_cross_site_posts():
    """Refuse a POST that another site sent (Sec-Fetch-Site, else Origin), as app.py does."""
    if request.method != "POST":
        return
    site, origin = request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin")
    if site is not None and site not in ("same-origin", "none"):
        abort(403)
    if site is None and origin is not None and urlsplit(origin).netloc != request.host:
        abort(403)


@app.after_request
def add_security_headers(response):
    """Send app.py's security headers with every response."""
    response.headers.update(SECURITY_HEADERS)
    return response


@app.get("/")
def show_form():
    """Show the empty form."""
    return render_form({"age": "", "hobbies": []}, {})


@app.post("/")
def submit_form():
    """Validate the submitted form and show it back with the result or the errors."""
    values, errors = validate(request.form)
    return render_form(values, errors), 422 if errors else 200, {"Cache-Control": "no-store"}
