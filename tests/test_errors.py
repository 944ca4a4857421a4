"""Bad requests get a clear error page in the app's layout; a real failure gets a generic one."""

import io
from wsgiref.util import setup_testing_defaults

import bottle
import pytest
from helpers import (
    URLENCODED,
    cleaned,
    encoded,
    example,
    field,
    multipart,
    result_line,
    saved_page,
)

import app
import guards
from deploy.audit import result_text

PART = b'--zz\r\nContent-Disposition: form-data; name="age"\r\n\r\n%s\r\n--zz--\r\n'


def pairs(submission: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Return a submission's (name, value) pairs, in order."""
    return [(name, value) for name, values in submission.items() for value in values]


def post_raw(testapp, body: bytes, content_type: str | None, **kwargs):
    """POST a body exactly as given, with the given Content-Type (or none)."""
    return testapp.request("/", method="POST", body=body, content_type=content_type, **kwargs)


def assert_error_page(res, status: int, says: str):
    """Check the app's own error page: status, message, layout, a way back, no internals."""
    assert res.status_int == status
    assert res.content_type == "text/html"
    assert res.html.h1.get_text().startswith(str(status))
    assert res.html.title.get_text() == res.status  # the status line, as in the heading
    assert says in res.html.main.get_text()
    assert res.html.main.find("a", href="/").get_text() == "Back to the form"
    res.mustcontain(no=["Traceback", "bottle", "Error: 4", "Sorry, the requested URL"])


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"age=%FF"),
        ("application/x-www-form-urlencoded", b"age=\xff\xfe"),
        ("application/x-www-form-urlencoded; charset=latin1", b"age=%E9"),
        ("multipart/form-data; boundary=zz", PART % b"\xff"),
        ("multipart/form-data; boundary=zz; charset=bogus", PART % b"34"),
        ("multipart/form-data", b"age=34"),
        ("multipart/form-data; boundary=zz", b"not multipart at all"),
        ("multipart/form-data; boundary=zz", PART[:-8]),
    ],
)
def test_unreadable_bodies_are_400(testapp, content_type, body):
    res = post_raw(testapp, body, content_type, status=400)
    assert_error_page(res, 400, "could not be read")


@pytest.mark.parametrize(
    "content_type",
    [
        "APPLICATION/X-WWW-FORM-URLENCODED",
        "application/x-www-form-urlencoded;",
        "application/x-www-form-urlencoded ; ; Charset=UTF-8",
        "application/x-www-form-urlencoded; charset=UTF8",
    ],
)
def test_media_types_and_parameter_names_are_case_insensitive(testapp, content_type):
    res = saved_page(post_raw(testapp, encoded(age=["41"]), content_type))
    assert result_line(res) == result_text(cleaned(age=["41"]))


def test_a_multipart_body_is_read_as_multipart_whatever_the_case_of_its_type(testapp):
    # Read as urlencoded, the last part would set the age to 77.
    parts = [field(name, value.encode()) for name, value in pairs(example(age=["41"]))]
    body = multipart(*parts, field("x", b"x&age=77&y"), boundary="AbC")
    res = saved_page(post_raw(testapp, body, "Multipart/Form-Data; Boundary=AbC"))
    assert result_line(res) == result_text(cleaned(age=["41"]))


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/form-data; boundary=zz", "zz"),
        ("multipart/form-data; BOUNDARY=zz", "zz"),
        ('multipart/form-data; boundary="a;b"', "a;b"),
        ("multipart/form-data; boundary*=utf-8''a%3Bb", "a;b"),
        ("multipart/form-data", ""),
    ],
)
def test_a_parameter_is_read_as_sent_and_empty_when_not_sent(header, boundary):
    assert guards.parameter(guards.content_type(header), "boundary") == boundary


@pytest.mark.parametrize(
    "text", ["\0", "\x01", "\x1b[31m", "\x7f", "\x85", "\ufdd0", "\ufffe", "\U0010ffff"]
)
def test_control_characters_are_refused_never_echoed(testapp, text):
    res = post_raw(testapp, encoded(age=[f"3{text}4", "5"]), URLENCODED, status=400)
    assert_error_page(res, 400, "could not be read")
    assert text not in res.text


def test_white_space_is_not_a_control_character(testapp):
    res = saved_page(post_raw(testapp, encoded(age=["\t34 "]), URLENCODED))
    assert result_line(res) == result_text(cleaned(age=["34"]))


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=zz; charset=latin1", PART % b"34"),
        ("multipart/form-data; boundary=zz; charset=UTF-16", PART % b"34"),
        (
            "multipart/form-data; boundary=zz",
            multipart(field("age", b"34", b"Content-Type: text/plain; charset=latin1\r\n")),
        ),
        (
            "multipart/form-data; boundary=zz",
            multipart(field("age", b"+ADQ-", b"content-type : text/plain;charset=utf-7\r\n")),
        ),
        ("application/x-www-form-urlencoded; charset=latin1", b"age=34"),
    ],
    ids=["multipart latin1", "multipart utf-16", "part latin1", "part utf-7", "urlencoded latin1"],
)
def test_text_declared_in_another_charset_is_400(testapp, content_type, body):
    res = post_raw(testapp, body, content_type, status=400)
    assert_error_page(res, 400, "as UTF-8 text")


# Header names Bottle reads as Content-Type: it strips Unicode white space and reads _ as -.
@pytest.mark.parametrize(
    "header",
    [
        b"Content_Type: text/plain; charset=latin-1",
        b"CONTENT_TYPE: text/plain; charset=latin-1",
        b"\xc2\xa0Content-Type: text/plain; charset=latin-1",
        b"\x1cContent-Type: text/plain; charset=latin-1",
        b"\xe3\x80\x80content-type: text/plain; charset=latin-1",
        b"Content-Type\xc2\x85: text/plain; charset=utf-16-le",
        b"Content-Type\xff: text/plain; charset=latin-1",  # not UTF-8: 400, not a 500
        b"Content-Transfer-Encoding: base64",
    ],
)
def test_a_part_header_other_than_content_disposition_is_400(testapp, header):
    body = multipart(field("age", b"\xb4\xe9", header + b"\r\n"))
    res = post_raw(testapp, body, "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, "could not be read")


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/form-data; boundary="zz,b"',
        'multipart/form-data; boundary="zz "',
        "multipart/form-data; boundary=z\xe9",
        "multipart/form-data; boundary=zz, text/plain",  # two Content-Type headers, joined
        "multipart/form-data; boundary=" + "z" * 71,
    ],
)
def test_a_boundary_bottle_would_read_otherwise_is_400(testapp, content_type):
    # Parsed by Bottle as another boundary, these once let 500 parts past the field limit.
    parts = [field("hobbies", next(iter(app.HOBBIES)).encode())] * (guards.MAX_FIELDS * 2)
    post_raw(testapp, multipart(*parts), content_type, status=400)


def test_parts_are_counted_with_a_boundary_inside_a_value(testapp):
    parts = [field(name, value.encode()) for name, value in pairs(example())]
    body = multipart(*parts, field("x", b"--zz" * guards.MAX_FIELDS))
    post_raw(testapp, body, "multipart/form-data; boundary=zz", status=413)


def test_a_file_upload_is_400_not_dropped(testapp):
    hobby = next(iter(app.HOBBIES)).encode()
    part = b'Content-Disposition: form-data; name="hobbies"; filename="h.txt"\r\n\r\n' + hobby
    res = post_raw(
        testapp,
        multipart(field("age", b"34"), part),
        "multipart/form-data; boundary=zz",
        status=400,
    )
    assert_error_page(res, 400, "This form takes no files")


@pytest.mark.parametrize(
    "disposition",
    [
        b'name="age"; filename=""',
        b"name=age; filename*=UTF-8''a.txt",
        b'name="age";\tFILENAME=a',
        # Bottle unquotes a parameter's name as well as its value: a file to Bottle.
        b'name="x";"filename"="a.bin"',
        b'name="age";"FileName"="a.bin"',
        b'name="age";" filename "=a.bin',
        # With a space before the quote Bottle keeps the quotes, and reads a field: another
        # reader may not, and the form takes no files, so it is refused all the same.
        b'name="x"; "filename"="a.bin"',
        b'name="age"; "FileName"="a.bin"',
        b'name="age" ;  filename  =  "a.bin"',
        b'name="age"; filename',  # a file named "" to Bottle
        # RFC 2231's forms, which Bottle ignores but a browser or a later Bottle may not.
        b"name=age; filename*0*=UTF-8''a; filename*1=.bin",
        b'name="age"; "FILENAME*"="UTF-8\'\'a.bin"',
        b'name="age", x; filename=a',  # Bottle reads the first value only: all are checked
    ],
)
def test_any_file_name_makes_a_part_a_file(testapp, disposition):
    part = b"Content-Disposition: form-data; " + disposition + b"\r\n\r\n34"
    res = post_raw(testapp, multipart(part), "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, "This form takes no files")


def test_a_parameter_without_a_value_is_a_400_as_bottle_cannot_read_it_either(testapp):
    part = b"Content-Disposition: form-data; name=age; junk\r\n\r\n34"
    res = post_raw(testapp, multipart(part), "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, app.ERROR_MESSAGES[400])


@pytest.mark.parametrize(
    "name",
    [
        "Content-Disposition",
        "content-disposition",
        "CONTENT_DISPOSITION",
        "\u00a0Content_Disposition",
    ],
)
def test_a_file_is_refused_however_bottle_would_spell_its_header(testapp, name):
    # Bottle reads header names case-insensitively, stripped of Unicode white space, _ as -.
    part = name.encode() + b': form-data; name="age"; filename="a.txt"\r\n\r\n34'
    res = post_raw(testapp, multipart(part), "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, "This form takes no files")


@pytest.mark.parametrize(
    ("name", "value"), [("x:y", b"a colon in the name"), ("x", b"a value\r\n\r\nin two paragraphs")]
)
def test_a_part_is_read_as_its_headers_then_its_value(testapp, name, value):
    # The headers end at the first blank line, and a header's name at its first colon.
    body = multipart(*(field(n, v.encode()) for n, v in pairs(example())), field(name, value))
    res = saved_page(post_raw(testapp, body, "multipart/form-data; boundary=zz"))
    assert result_line(res) == result_text(cleaned())


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
def test_more_fields_than_the_limit_are_refused_before_parsing(testapp, kind):
    def body(count: int) -> tuple[bytes, str]:
        fields = pairs(example())
        fields += [("hobbies", next(iter(app.HOBBIES)))] * (count - len(fields))
        if kind == "urlencoded":
            return "&".join(f"{name}={value}" for name, value in fields).encode(), URLENCODED
        parts = [field(name, value.encode()) for name, value in fields]
        return multipart(*parts), "multipart/form-data; boundary=zz"

    saved_page(post_raw(testapp, *body(guards.MAX_FIELDS)))
    res = post_raw(testapp, *body(guards.MAX_FIELDS + 1), status=413)
    assert_error_page(res, 413, "too many fields")


def test_a_flood_of_empty_fields_is_refused(testapp):
    res = post_raw(testapp, b"a&" * 8000, URLENCODED, status=413)
    assert_error_page(res, 413, "too many fields")


@pytest.mark.parametrize("path", ["/heal%FFthz", "/%C0%AF", "/static/style%FF.css"])
def test_a_path_that_is_not_utf8_is_400_not_cleaned(testapp, path):
    res = testapp.get(path, status=400)
    assert_error_page(res, 400, "must be UTF-8")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "form-data"])
def test_other_content_types_are_415(testapp, content_type):
    res = post_raw(testapp, b"age=34", content_type, status=415)
    assert_error_page(res, 415, "application/x-www-form-urlencoded or multipart/form-data")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(testapp, method):
    res = testapp.request("/", method=method, status=405)
    assert_error_page(res, 405, "does not accept")
    assert set(res.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


@pytest.mark.parametrize("path", ["/healthz", "/static/style.css"])
def test_read_only_pages_allow_get_and_head(testapp, path):
    res = testapp.request(path, method="DELETE", status=405)
    assert set(res.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert testapp.head(path).status_int == 200


@pytest.mark.parametrize(
    "path", ["/nope", "/index.html", "/app.py", "/views/form.tpl", "/healthz/x"]
)
def test_unknown_paths_are_404(testapp, path):
    res = testapp.get(path, status=404)
    assert_error_page(res, 404, "no page at this address")


def test_an_error_without_a_message_of_its_own_says_its_status(testapp):
    # A status ERROR_MESSAGES does not list, as a hook someone adds might raise (a rate limit).
    def too_many():
        bottle.abort(429)

    app.app.add_hook("before_request", too_many)
    try:
        res = testapp.get("/", status=429)
    finally:
        app.app.remove_hook("before_request", too_many)
    assert 429 not in app.ERROR_MESSAGES
    assert_error_page(res, 429, "Too Many Requests")
    assert res.html.main.p.get_text() == res.status


def test_head_is_answered_like_get(testapp):
    res = testapp.head("/")
    assert res.status_int == 200
    assert res.body == b""


def test_oversized_body_is_413_from_the_app_too(testapp):
    # Waitress refuses these first (tests/test_limits.py); the app's own check covers other servers.
    body = encoded(age=["1"])
    body += b"&pad=" + b"1" * (guards.MAX_BODY - len(body) - 5)
    res = post_raw(testapp, body, URLENCODED, status=413)
    assert_error_page(res, 413, "too large")
    saved_page(post_raw(testapp, body[:-1], URLENCODED))


def test_a_crash_is_logged_and_shows_a_generic_500(testapp, monkeypatch, log):
    def broken(*args):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app, "validate", broken)
    res = testapp.post("/", example(), expect_errors=True)
    assert res.status_int == 500
    assert "Something went wrong on our side" in res.html.main.get_text()
    res.mustcontain(no=["secret detail", "Traceback", "RuntimeError"])
    traceback, access = log()  # the traceback, as one line, then the request's line
    assert traceback.startswith("ERROR:app:Traceback") and access.startswith("INFO:access:")
    assert "RuntimeError: secret detail" in traceback


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        # Bottle joins a folded line to the header above: here it would make the part a file,
        # which Bottle then drops from the form without a word.
        (b'\t; filename="evil.exe"\r\n', "could not be read"),
        # Bottle strips the white space off a first header line: a Content-Type it would obey.
        (b" Content-Type: text/plain; charset=utf-7\r\n", "could not be read"),
        # Refused for the white space alone, even where the line would be harmless.
        (b'\tContent-Disposition: form-data; name="hobbies"\r\n', "could not be read"),
        (b' Content-Disposition: form-data; name="hobbies"\r\n', "could not be read"),
    ],
)
def test_part_header_lines_that_start_with_white_space_are_400(testapp, headers, message):
    body = (
        b"--zz\r\n"
        + (
            b'Content-Disposition: form-data; name="age"\r\n' + headers
            if headers.startswith(b"\t")
            else headers + b'Content-Disposition: form-data; name="age"\r\n'
        )
        + b"\r\n+ADQ-\r\n--zz--\r\n"
    )
    res = post_raw(testapp, body, "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, message)


@pytest.mark.parametrize("boundary", ['"a;b"', '"a b"', "*=utf-8''zz%3B"])
def test_a_quoted_boundary_is_read_whole(testapp, boundary):
    # `boundary="a;b"` is one boundary, a;b (RFC 2046), which Bottle cannot read: refused whole.
    res = post_raw(testapp, b"", f"multipart/form-data; boundary={boundary}", status=400)
    assert_error_page(res, 400, "could not be read")


def status_of_post(**environ: str) -> str:
    """POST to the app straight through WSGI, with exactly the given environ; return the status.
    For what WebTest would not send as it is."""
    environ = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(), **environ}
    setup_testing_defaults(environ)
    started = []
    b"".join(app.application(environ, lambda status, *rest: started.append(status)))
    [status] = started
    return status


@pytest.mark.parametrize(
    "content_type",
    [
        # Bottle strips Unicode white space off the boundary it reads: it would split at --a.
        "multipart/form-data; boundary*=utf-8''a%1F",
        "multipart/form-data; boundary*=utf-8''a%C2%85",
        "multipart/form-data; boundary*=utf-8''a%C2%A0",
    ],
)
def test_a_boundary_that_bottle_would_strip_is_400(testapp, content_type):
    header = b"Content-Type: text/plain; charset=utf-16-le\r\n"
    body = multipart(field("age", "34".encode("utf-16-le"), header), boundary="a")
    res = post_raw(testapp, body, content_type, status=400)
    assert_error_page(res, 400, "could not be read")


@pytest.mark.parametrize(
    "disposition",
    [
        b'form-data; name="age"; z=--zz--',  # the terminator inside a line ends nothing
        b'form-data; name="age"; --zz; x=1',  # nor does the separator
    ],
)
def test_a_boundary_inside_a_header_line_hides_nothing(testapp, disposition):
    part = b"Content-Disposition: " + disposition + b"\r\n"
    part += b"Content-Type: text/plain; charset=utf-16-le\r\n\r\n" + "34".encode("utf-16-le")
    res = post_raw(testapp, multipart(part), "multipart/form-data; boundary=zz", status=400)
    assert_error_page(res, 400, "could not be read")


@pytest.mark.parametrize("parameter", ["charset*=idna''x", "charset*=undefined''x"])
def test_a_parameter_in_a_codec_that_cannot_be_read_is_400_not_500(testapp, parameter):
    content_type = f"application/x-www-form-urlencoded; {parameter}"
    res = post_raw(testapp, encoded(), content_type, status=400)
    assert_error_page(res, 400, "could not be read")


@pytest.mark.parametrize("where", ["preamble", "epilogue"])
def test_what_comes_before_the_first_boundary_or_after_the_last_is_not_read(testapp, where):
    # RFC 2046's preamble and epilogue: Bottle ignores both, so the check reads neither.
    form = multipart(*(field(name, value.encode()) for name, value in pairs(example())))
    unread = b"Content-Type: text/plain; charset=utf-7\r\n"
    body = unread + form if where == "preamble" else form + b"--zz\r\n" + unread
    res = saved_page(post_raw(testapp, body, "multipart/form-data; boundary=zz"))
    assert result_line(res) == result_line(saved_page(testapp.post("/", example())))


def test_a_content_length_that_is_not_a_number_is_400():
    # Waitress refuses these itself; other servers may pass the header through as sent.
    status = status_of_post(CONTENT_LENGTH="12abc", CONTENT_TYPE=URLENCODED)
    assert status == "400 Bad Request"


def test_a_post_without_a_content_type_is_415():
    # Waitress leaves CONTENT_TYPE out of the environ when the request has no Content-Type.
    assert status_of_post(CONTENT_LENGTH="6") == "415 Unsupported Media Type"
