"""Bad requests get a clear error page in the app's layout; a real failure gets a generic one."""

import io
from wsgiref.util import setup_testing_defaults

import pytest

import app

PART = b'--zz\r\nContent-Disposition: form-data; name="age"\r\n\r\n%s\r\n--zz--\r\n'


def post_raw(testapp, body: bytes, content_type: str | None, **kwargs):
    """POST a body exactly as given, with the given Content-Type (or none)."""
    return testapp.request("/", method="POST", body=body, content_type=content_type, **kwargs)


def assert_error_page(res, status: int, says: str):
    """Check the app's own error page: status, message, layout, a way back, no internals."""
    assert res.status_int == status
    assert res.content_type == "text/html"
    assert res.html.h1.get_text().startswith(str(status))
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


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "form-data"])
def test_other_content_types_are_415(testapp, content_type):
    res = post_raw(testapp, b"age=34", content_type, status=415)
    assert_error_page(res, 415, "application/x-www-form-urlencoded or multipart/form-data")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(testapp, method):
    res = testapp.request("/", method=method, status=405)
    assert_error_page(res, 405, "does not accept")
    assert set(res.headers["Allow"].split(",")) == {"GET", "POST"}


@pytest.mark.parametrize(
    "path", ["/nope", "/index.html", "/app.py", "/views/form.tpl", "/healthz/x"]
)
def test_unknown_paths_are_404(testapp, path):
    res = testapp.get(path, status=404)
    assert_error_page(res, 404, "no page at this address")


def test_head_is_answered_like_get(testapp):
    res = testapp.head("/")
    assert res.status_int == 200
    assert res.body == b""


def test_oversized_body_is_413_from_the_app_too(wsgiapp):
    # Waitress refuses these first (tests/test_limits.py); the app's own check covers other servers.
    body = b"age=" + b"1" * (app.MAX_BODY - 4)
    res = post_raw(wsgiapp, body, "application/x-www-form-urlencoded", status=413)
    assert_error_page(res, 413, "too large")
    post_raw(wsgiapp, body[:-1], "application/x-www-form-urlencoded", status=422)


def test_a_crash_is_logged_and_shows_a_generic_500(wsgiapp, monkeypatch):
    def broken(*args):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app, "validate", broken)
    res = wsgiapp.post("/", {"age": "34"}, expect_errors=True)
    assert res.status_int == 500
    assert "Something went wrong on our side" in res.html.main.get_text()
    res.mustcontain(no=["secret detail", "Traceback", "RuntimeError"])
    assert "Traceback" in res.errors
    assert "RuntimeError: secret detail" in res.errors


def test_a_content_length_that_is_not_a_number_is_400():
    # Waitress refuses these itself; other servers may pass the header through as sent.
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "12abc", "wsgi.input": io.BytesIO()}
    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    setup_testing_defaults(environ)
    started = []
    b"".join(app.application(environ, lambda status, *rest: started.append(status)))
    assert started == ["400 Bad Request"]
