"""Request guards: what the app refuses before the form's own rules see a request, and why.

Bottle reads whatever it is sent, as best it can; a form app on the internet must not. Here:
- every response carries the security headers (no scripts, no framing, no sniffing), and one
  access line is logged for it (logs.py);
- a path whose %-escapes are not UTF-8 is refused, where Bottle would drop the bad bytes and
  serve another path;
- a state-changing request from another site is refused (cross-site request forgery);
- a body is read only as the two types a form sends, as UTF-8, under a size and a field count
  (OWASP: limit the number of parameters), and a multipart body is checked before Bottle parses
  it: no files, and no part header that could name another charset.
Each refusal is a 4xx with a page that says what was wrong (app.py's error pages).
"""

import re
import time
from email.message import Message
from email.utils import collapse_rfc2231_value
from urllib.parse import urlsplit

from bottle import Bottle, HTTPError, _parse_http_header, abort, request

import logs

# Waitress refuses bodies of MAX_BODY bytes or more (app.SERVER); the form needs under 1 KiB.
MAX_BODY = 16 * 1024
# The form sends at most one field per control; more are refused before they are parsed, so a
# request's work stays bounded. A test keeps the form under.
MAX_FIELDS = 32
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}

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

TOO_MANY_FIELDS = f"The submission has too many fields: the form has fewer than {MAX_FIELDS}."
NO_FILES = "This form takes no files: send it from the form."
BAD_PATH = "This address is not valid: its %-escapes must be UTF-8."
# Characters HTML forbids in a page (controls other than white space, noncharacters): refused,
# never echoed.
NONCHARACTERS = "".join(
    chr(plane + 0xFFFE) + chr(plane + 0xFFFF) for plane in range(0, 0x110000, 0x10000)
)
NOT_TEXT = re.compile(f"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef{NONCHARACTERS}]")
# Multipart boundaries that Bottle reads exactly as we do (no quotes, commas or spaces).
# Printable ASCII only: Bottle strips Unicode white space (\x1c-\x1f, \x85, \xa0) off the
# boundary that it reads, which \s with re.ASCII does not match.
BOUNDARY = re.compile(r"[!#-+\--:<-\[\]-~]{1,70}")


class GuardedApp(Bottle):
    """Bottle, plus the security headers on every response and one access line a request.

    Done in the app object itself, so that every name a server may be given for it
    (`app:application`, or Bottle's usual `app:app`) serves the whole app, and every response
    has them: a route's, an error page's, and a 500's, which Bottle's hooks would miss.
    """

    def wsgi(self, environ, start_response):
        """Answer one request through Bottle, with the security headers, and log it."""
        started = time.perf_counter()
        status = "500 Internal Server Error"

        def start_with_headers(status_line, headers, exc_info=None):
            nonlocal status
            status = status_line
            return start_response(status_line, headers + SECURITY_HEADERS, exc_info)

        environ["wsgi.errors"] = logs.ERRORS  # Bottle's tracebacks: one line, never blocking
        try:
            return super().wsgi(environ, start_with_headers)
        finally:
            logs.access(environ, status, time.perf_counter() - started)


class Refusal(HTTPError):
    """A 4xx whose message says exactly what was wrong with the request."""


def check_request():
    """Refuse a path that is not UTF-8, and state-changing requests sent by another site."""
    try:
        request.environ["bottle.raw_path"].encode("latin-1").decode("utf-8")
    except UnicodeError:  # Bottle would drop the bad bytes and serve another path
        raise Refusal(400, BAD_PATH) from None
    if request.method not in ("GET", "HEAD", "OPTIONS") and is_cross_origin(request.environ):
        abort(403)


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


def content_type(header: str) -> Message:
    """Parse a Content-Type header: its media type, lower-cased, and its parameters, quoted ones
    included (RFC 9110 8.3), as the standard library reads MIME headers."""
    message = Message()
    message["Content-Type"] = header
    return message


def parameter(header: Message, name: str, default: str = "") -> str:
    """Return a parameter's value, unquoted, as it was sent (RFC 2231's name*= forms too)."""
    try:
        return collapse_rfc2231_value(header.get_param(name, default))
    except UnicodeError:  # name*=idna''x: codecs that cannot decode with errors="replace"
        return ""


def read_form():
    """Return the submitted form as UTF-8 text, or refuse it with the 4xx that says why."""
    environ = request.environ
    header = content_type(environ.get("CONTENT_TYPE", ""))
    kind = header.get_content_type()  # text/plain for one that is not a media type at all
    if kind not in FORM_TYPES:
        abort(415)
    if parameter(header, "charset", "utf-8").lower() not in ("utf-8", "utf8"):
        abort(400)
    try:
        if request.content_length >= MAX_BODY:
            abort(413)  # Waitress refuses these before reading them; this covers other servers
    except ValueError:  # a Content-Length that is not a number
        abort(400)
    body = request.body.read()
    if kind == "multipart/form-data":
        boundary = parameter(header, "boundary")
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
        form = request.forms.decode()  # UTF-8: Bottle's input_encoding
    except (ValueError, LookupError):  # bad UTF-8, or a broken multipart body
        abort(400)
    if any(NOT_TEXT.search(value) for _, value in form.allitems()):
        abort(400)
    return form


def check_parts(body: bytes, boundary: str) -> None:
    """Refuse a multipart body, before Bottle parses it, with too many parts, a file, or a part
    header other than Content-Disposition (a Content-Type could name another charset).

    Parts are counted at every `--boundary`, where Bottle splits at some, so the count is never
    less than Bottle's. Headers are read line by line as Bottle reads them: a part starts at a
    line that is the separator alone, its headers end at a blank line, names are UTF-8 with white
    space stripped and `_` as `-`. A header line that starts with white space is refused: Bottle
    joins it to the header above (where it could add a filename) or, first in a part, strips it.
    Plain splits, no regular expression over the body: the work stays linear.
    """
    separator = b"--" + boundary.encode()
    parts = [part for part in body.split(separator)[1:] if part[:2] != b"--"]
    if len(parts) > MAX_FIELDS:
        raise Refusal(413, TOO_MANY_FIELDS)
    in_headers = False
    for line in body.split(b"\r\n"):  # as Bottle reads it: a part starts at a line that is
        if line == separator + b"--":  # the separator alone, and the terminator ends the body
            return
        if line == separator:
            in_headers = True
        elif in_headers and not line.strip():  # a blank line ends the headers
            in_headers = False
        elif in_headers:
            if line[:1] in b" \t":  # folded: browsers never send it
                abort(400)
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().replace("_", "-").title() != "Content-Disposition":
                abort(400)
            if names_a_file(value.strip()):
                raise Refusal(400, NO_FILES)


def names_a_file(disposition: str) -> bool:
    """Tell whether a part's Content-Disposition names a file, on the parse Bottle makes of it,
    so the two cannot disagree: a parameter `filename`, quoted or not, in any case, even empty.
    Wider than Bottle, as another reader may be: RFC 2231's `filename*` forms (Bottle ignores
    them), a name still quoted after Bottle's parse (`; "filename"=`, which Bottle keeps as a
    name with its quotes), and every comma-separated value (Bottle reads the first).
    The parser is Bottle's private one: Bottle is pinned, and tests/test_fuzz.py checks that
    every part Bottle reads as a file is refused.
    """
    try:
        values = _parse_http_header(disposition)
    except ValueError:  # a parameter without `=`, when nothing is quoted: Bottle fails too
        abort(400)
    names = (name.strip('"\t ') for _, options in values for name in options)
    return any(name.startswith("filename") for name in names)
