"""The same form in Flask + Jinja2, written as a Flask user would: the peer `make bench` measures.

The same page (templates/ here are views/ in Jinja2), the same rules, status codes and headers
as app.py for the form's GET / and POST /, served by the Procfile's command line as
`bench.flask_form:app`. A valid submission is stored as the Flask tutorial stores (flaskr/db.py):
`sqlite3`, one connection per request kept in `g` and closed at teardown, an INSERT and a commit,
then a redirect (303, as app.py answers). The same durability as store.py: the file is in WAL
mode (set once, by init-db) and each connection asks for synchronous=FULL, so each commit is on
disk before the answer. FLASK_DATABASE names the file; `flask --app bench.flask_form init-db`
makes its tables (flask_schema.sql). It reads the title, the hobbies and the trap's name from
app.py, so that it offers the same choices when they change. Not written here: the saved page
(the bench does not follow the redirect), app.py's error pages, its request guards beyond the
cross-site check, and its access-log line (Flask on Waitress logs no requests).
"""

import re
import secrets
import sqlite3
from datetime import UTC, datetime
from urllib.parse import urlsplit

import click
from flask import Flask, abort, current_app, g, redirect, render_template, request

from app import HOBBIES, TITLE, TRAP

MAX_AGE = 150
AGE = re.compile(r"0*([0-9]{1,3})")  # a whole number: up to three digits after any zeros
TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")  # the form's one-time token, as app.py makes it

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_DATABASE: the SQLite file
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


def get_db() -> sqlite3.Connection:
    """Return this request's connection to the database, opened on first use."""
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"], detect_types=sqlite3.PARSE_DECLTYPES)
        g.db.row_factory = sqlite3.Row
        g.db.execute("PRAGMA synchronous = FULL")  # a connection's own setting: each commit synced
    return g.db


@app.teardown_appcontext
def close_db(error=None):
    """Close the request's connection, if it opened one."""
    db = g.pop("db", None)
    if db is not None:
        db.close()


@app.cli.command("init-db")
def init_db_command():
    """Make the tables afresh (deleting any there)."""
    with app.open_resource("flask_schema.sql") as schema:
        get_db().executescript(schema.read().decode())
    click.echo("Initialized the database.")


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


def render_form(values: dict, errors: dict, token: str) -> str:
    """Render the form page with the given values, errors and one-time token."""
    return render_template(
        "form.html",
        title=TITLE,
        hobbies=HOBBIES,
        values=values,
        errors=errors,
        token=token,
        trap=TRAP,
    )


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
    """Send app.py's security headers, and no-store, with every response."""
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"  # the form's token, or what was sent
    return response


@app.get("/")
def show_form():
    """Show the empty form with a new one-time token."""
    return render_form({"age": "", "hobbies": []}, {}, secrets.token_urlsafe(16))


@app.post("/")
def submit_form():
    """Store a valid submission and redirect to it (303), or show the errors (422)."""
    values, errors = validate(request.form)
    token = request.form.get("token") or secrets.token_urlsafe(16)  # the seed's clients send none
    if not TOKEN.fullmatch(token):
        abort(400)
    if errors:
        return render_form(values, errors, token), 422
    if not request.form.get(TRAP):  # a bot's submission is answered the same, and not stored
        db = get_db()
        row = db.execute(
            "INSERT INTO submission (token, received, age) VALUES (?, ?, ?)"
            " ON CONFLICT (token) DO NOTHING RETURNING id",
            (token, datetime.now(UTC).isoformat(sep=" "), values["age"] or None),
        ).fetchone()
        if row is not None:  # a new submission, not one sent again
            db.executemany(
                "INSERT INTO submission_hobby (submission_id, hobby) VALUES (?, ?)",
                [(row["id"], hobby) for hobby in values["hobbies"]],
            )
        db.commit()
    return redirect(f"/saved/{token}", 303)
