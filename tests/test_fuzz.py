"""Property-based fuzzing of the app in-process: whatever arrives, a documented and safe answer."""

import functools
import io
import os
import sys
from html.parser import HTMLParser
from urllib.parse import quote_from_bytes, urlencode

import bottle
import pytest
from helpers import assert_saved, encoded, field, multipart, submitted
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from webtest.lint import middleware

import app
import guards

# Every status the app answers with: its pages plus its documented errors. A 500 is not one.
DOCUMENTED_STATUSES = {200, 303, 304, 400, 403, 404, 405, 413, 415, 422}  # as README lists them

# `make test` runs hypothesis's usual 100 examples per property, to stay quick; `make fuzz` runs
# 50,000 (FUZZ_EXAMPLES), and CI 5,000.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,  # the suite shares a 2-core machine: timing noise is not a finding
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("fuzz")

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"]
FORM_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data"]
BOUNDARY = "fuzzboundary"

# What a server hands the app is latin-1 text; a lone surrogate arrives as its (invalid) UTF-8.
chars = st.characters() | st.characters(categories=["Cs"])  # Cs: lone surrogates
long_text = st.sampled_from(["x" * 12_000, "x" * 20_000])  # under and over the body limit
any_text = st.text(chars, max_size=300) | long_text
raw = st.binary(max_size=300) | any_text.map(lambda s: s.encode("utf-8", "surrogatepass"))
latin1 = raw.map(lambda b: b.decode("latin-1"))


def percent_encoded(value: bytes) -> bytes:
    """Return the value %-encoded."""
    return quote_from_bytes(value).encode()


broken_percent = st.sampled_from([b"%", b"%z", b"%4", b"%E2%82", b"%ED%A0%80", b"%00", b"%FF"])
field_name = st.sampled_from(["age", "hobbies", "x", ""]) | st.text(max_size=20)
field_value = any_text | st.sampled_from(["software", "tunning", "34", "<b>&\"'</b>"])
fields = st.lists(st.tuples(field_name, field_value), max_size=8)


@st.composite
def urlencoded_bodies(draw) -> bytes:
    """Return a urlencoded body: fields, raw %-escapes, broken escapes and plain bytes mixed."""
    parts = draw(
        st.lists(
            st.builds(lambda k, v: percent_encoded(k) + b"=" + percent_encoded(v), raw, raw)
            | broken_percent
            | raw,
            max_size=8,
        )
    )
    return b"&".join(parts)


def multipart_of(pairs) -> bytes:
    """Return a well-formed multipart/form-data body for (name, value) pairs."""
    encoded = [field(name, value.encode("utf-8", "surrogatepass")) for name, value in pairs]
    return multipart(*encoded, boundary=BOUNDARY)


@st.composite
def multipart_bodies(draw) -> bytes:
    """Return a multipart body, good or cut short, or with garbage spliced in."""
    body = multipart_of(draw(fields))
    cut = draw(st.integers(0, len(body)))
    damage = draw(st.sampled_from(["none", "truncate", "splice", "no-end"]))
    if damage == "truncate":
        return body[:cut]
    if damage == "splice":
        return body[:cut] + draw(raw) + body[cut:]
    if damage == "no-end":
        return body.removesuffix(f"--{BOUNDARY}--\r\n".encode())
    return body


# Many repeated fields that still fit in the size limit.
repeated = st.builds(
    lambda n, value: urlencode([("hobbies", value)] * n).encode(),
    st.integers(1, 1500),
    st.sampled_from(["software", "tunning", "golf"]),
)
bodies = raw | urlencoded_bodies() | multipart_bodies() | repeated | st.just(b"\0" * 1000)
content_types = (
    st.sampled_from(FORM_TYPES)
    | st.sampled_from(FORM_TYPES).map(lambda t: f"{t}; charset=utf-8; boundary={BOUNDARY}")
    | st.just(f"multipart/form-data; boundary={BOUNDARY}")
    | st.just("multipart/form-data; boundary=")
    | latin1
)
header_names = st.sampled_from(
    ["ORIGIN", "SEC_FETCH_SITE", "HOST", "COOKIE", "ACCEPT", "ACCEPT_CHARSET", "X_FORWARDED_FOR"]
) | st.from_regex(r"[A-Z][A-Z_]{0,30}", fullmatch=True)
header_values = latin1 | st.sampled_from(["same-origin", "cross-site", "none", "http://x"])


def environ_for(method, path, query, content_type, body, headers) -> dict:
    """Return a WSGI environ as Waitress builds one: latin-1 text, the true body length."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    for name, value in headers.items():
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[f"HTTP_{name}"] = value
    return environ


def call(environ) -> tuple[int, dict, bytes]:
    """Call the app through WebTest's WSGI lint; return status, headers and body."""
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, dict(headers)

    result = middleware(app.application)(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return int(started["status"].split()[0]), started["headers"], body


def check_page(environ, status, headers, body):
    """Assert the invariants every answer must keep."""
    assert status in DOCUMENTED_STATUSES, (status, body[:500])
    for name, value in guards.SECURITY_HEADERS:
        assert headers[name] == value
    is_health = environ["PATH_INFO"] == "/healthz" and status == 200
    expected = "text/plain" if is_health else "text/html"
    assert headers["Content-Type"].lower() == f"{expected}; charset=utf-8"
    if status == 303:  # a valid submission, saved: sent on to the page that shows it
        assert (environ["REQUEST_METHOD"], environ["PATH_INFO"]) == ("POST", "/")
        assert_saved(status, headers.get("Location"))
        assert body == b""
    elif environ["REQUEST_METHOD"] == "HEAD":
        assert body == b""
    elif not is_health:
        assert body.startswith(b"<!DOCTYPE html>")
        body.decode("utf-8")


paths = st.sampled_from(["/", "/healthz", "/healthz/", "//"]) | latin1.map(lambda s: "/" + s)


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # lint knows only the usual ones
@given(
    method=st.sampled_from(METHODS) | st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
    path=paths,
    query=latin1,
    content_type=st.none() | content_types,
    body=bodies,
    headers=st.dictionaries(header_names, header_values, max_size=6),
)
def test_any_request_gets_a_documented_html_answer(
    method, path, query, content_type, body, headers
):
    environ = environ_for(method, path, query, content_type, body, headers)
    check_page(environ, *call(environ))


@example(  # found by this test: Bottle raised ValueError on a NUL part header name, a 500
    content_type=f"multipart/form-data; boundary={BOUNDARY}",
    body=b"--fuzzboundary\r\n\x00:\r\n\r\n",
    fetch_site=None,
)
@given(
    content_type=content_types,
    body=bodies,
    fetch_site=st.sampled_from([None, "same-origin", "none"]),
)
def test_any_form_post_from_the_page_gets_a_documented_html_answer(content_type, body, fetch_site):
    headers = {} if fetch_site is None else {"SEC_FETCH_SITE": fetch_site}
    environ = environ_for("POST", "/", "", content_type, body, headers)
    check_page(environ, *call(environ))


# Content-Disposition values: form-data, then parameters spelt in the ways that could hide a
# file name from a check (quotes, case, white space, RFC 2231 names), with stray bytes mixed in.
def pieces(*choices: bytes) -> st.SearchStrategy[bytes]:
    """Return one of the given byte strings."""
    return st.sampled_from(choices)


parameters = st.tuples(
    pieces(b";", b"; ", b" ;", b";\t", b","),
    pieces(b"", b'"', b"'"),
    pieces(b"name", b"filename", b"FileName", b"FILENAME*", b"filename*0*", b"file name"),
    pieces(b"=", b"=", b" = ", b""),
    pieces(b'"a.bin"', b"a.bin", b"UTF-8''a.bin", b'""', b"", b'"a\\"b"'),
    st.just(b"") | st.binary(max_size=2),
).map(lambda p: p[0] + p[1] + p[2] + p[1] + b"".join(p[3:]))
dispositions = st.lists(parameters, max_size=4).map(lambda ps: b"form-data" + b"".join(ps))


@example(disposition=b'form-data; name="x";"filename"="a.bin"')  # once a file Bottle dropped
@given(disposition=dispositions)
def test_a_part_bottle_reads_as_a_file_is_refused(disposition):
    body = multipart(b"Content-Disposition: " + disposition + b"\r\n\r\n34", boundary=BOUNDARY)
    environ = environ_for("POST", "/", "", f"multipart/form-data; boundary={BOUNDARY}", body, {})
    try:  # how Bottle itself reads the body, unguarded
        is_file = bool(bottle.BaseRequest(dict(environ, **{"wsgi.input": io.BytesIO(body)})).files)
    except (bottle.HTTPError, ValueError, LookupError):  # Bottle cannot read it: refused anyway
        is_file = False
    status, _, page = call(environ)
    if is_file:
        assert status == 400, page[:500]


class AgeField(HTMLParser):
    """Collect the age input's value and every element's tag and attribute names."""

    def __init__(self):
        super().__init__()
        self.age = None
        self.elements = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.add((tag, tuple(sorted(attrs))))
        if tag == "input" and attrs.get("id") == "age":
            self.age = attrs.get("value")


def parse(body: bytes) -> AgeField:
    """Return the page parsed."""
    page = AgeField()
    page.feed(body.decode("utf-8"))
    return page


@functools.cache
def known_elements() -> set:
    """Return the elements a page may hold: learnt from the form with and without errors, a
    saved submission's page, and an error page (once, when first asked: nothing is rendered at
    import)."""
    invalid = (
        b"age=x&hobbies=golf&" + urlencode({"hobbies": list(app.HOBBIES)}, doseq=True).encode()
    )
    environs = [
        environ_for("GET", "/", "", None, b"", {}),
        environ_for("GET", "/nowhere", "", None, b"", {}),
        environ_for("POST", "/", "", FORM_TYPES[0], invalid, {}),
        saved_page_environ(encoded()),
    ]
    return set().union(*(parse(call(environ)[2]).elements for environ in environs))


def saved_page_environ(body: bytes) -> dict:
    """Submit a urlencoded body that must be saved; return the environ of a GET of its page."""
    status, headers, _ = call(environ_for("POST", "/", "", FORM_TYPES[0], body, {}))
    return environ_for("GET", assert_saved(status, headers.get("Location")), "", None, b"", {})


@given(age=any_text | st.sampled_from(['"><script>alert(1)</script>', "' onfocus='x", "&amp;"]))
def test_submitted_text_comes_back_escaped(age):
    has_surrogate = any("\ud800" <= char <= "\udfff" for char in age)
    for content_type, body in [
        (FORM_TYPES[0], urlencode({"age": age.encode("utf-8", "surrogatepass")}).encode()),
        (f"{FORM_TYPES[1]}; boundary={BOUNDARY}", multipart_of([("age", age)])),
    ]:
        status, headers, page = call(environ_for("POST", "/", "", content_type, body, {}))
        if has_surrogate or guards.NOT_TEXT.search(age):  # not UTF-8 or not HTML text: refused
            assert status == 400
            continue
        if status == 413:  # over the size limit: nothing comes back
            assert len(body) >= guards.MAX_BODY
            continue
        cleaned = app.validate(submitted(age=[age]))[0]["age"]
        if status == 303:  # a valid age, saved: its page shows it as it was stored
            location = assert_saved(status, headers.get("Location"))
            status, _, page = call(environ_for("GET", location, "", None, b"", {}))
            assert status == 200
            assert f"Age: {cleaned or 'Empty'}<br>".encode() in page
        else:  # the form again, with the age kept
            assert status == 422
            assert parse(page).age == cleaned
        assert parse(page).elements <= known_elements()
