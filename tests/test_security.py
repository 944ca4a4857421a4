"""Safe by default: escaped output, cross-origin posts refused, security headers everywhere."""

from wsgiref.util import setup_testing_defaults

import pytest
from helpers import cleaned, example, fill, result_line, same_origin, saved_page

import app
import guards
from deploy.audit import result_text

PAYLOAD = "\"><script>alert('x')</script><img src=x onerror=alert(1)>"
VALID = example()


def test_submitted_markup_is_escaped_and_kept(testapp):
    res = fill(testapp.get("/").form, age=[PAYLOAD]).submit(status=422)
    res.mustcontain("&lt;script&gt;", no=["<script", "<img src=x"])
    assert res.form["age"].value == PAYLOAD


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "SAME"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 303),
        ({"Sec-Fetch-Site": "none"}, 303),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, 303),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://["}, 403),
        ({"Origin": "SAME"}, 303),
        ({}, 303),
    ],
)
def test_cross_origin_posts_are_refused(testapp, headers, status):
    origin = same_origin(testapp)
    headers = {name: origin if value == "SAME" else value for name, value in headers.items()}
    rows = app.DATABASE.count()
    res = testapp.post("/", VALID, headers=headers, status=status)
    if status == 403:
        assert "only accepts submissions from its own page" in res.html.main.get_text()
        assert app.DATABASE.count() == rows  # nothing stored
    else:
        assert result_line(saved_page(res)) == result_text(cleaned())


# OPTIONS (a CORS preflight) changes nothing either: it gets the 405 of a method no route has,
# not the 403 of a forgery.
@pytest.mark.parametrize(("method", "status"), [("GET", 200), ("HEAD", 200), ("OPTIONS", 405)])
@pytest.mark.parametrize("path", ["/", "/healthz", "/static/style.css"])
def test_cross_origin_reads_are_allowed(testapp, method, status, path):
    # Through the same hook that refuses cross-site posts: a link from another site still works.
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://x.example"}
    testapp.request(path, method=method, headers=headers, status=status)


def request_each_kind(testapp):
    """Yield one response of every kind the app gives: page, the 303 of a valid submission and
    the saved page it leads to, 4xx pages, health check."""
    yield testapp.get("/")
    yield (saved := testapp.post("/", VALID, status=303))
    yield saved_page(saved)
    yield testapp.get("/saved/" + "A" * 22, status=404)
    yield testapp.post("/", example(age=["x"]), status=422)
    yield testapp.post("/", VALID, headers={"Sec-Fetch-Site": "cross-site"}, status=403)
    yield testapp.get("/nope", status=404)
    yield testapp.put("/", status=405)
    yield testapp.post(
        "/", b"age=%FF", content_type="application/x-www-form-urlencoded", status=400
    )
    yield testapp.post("/", b"{}", content_type="application/json", status=415)
    yield testapp.get("/healthz")
    yield testapp.get("/results", status=404)  # the owner's pages, while no password is set


def test_every_response_carries_the_security_headers(testapp):
    for res in request_each_kind(testapp):
        assert res.headers["X-Content-Type-Options"] == "nosniff", res.request.path
        assert res.headers["Referrer-Policy"] == "same-origin"
        policy = dict(
            part.strip().split(" ", 1) for part in res.headers["Content-Security-Policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["frame-ancestors"] == "'none'"
        assert "script-src" not in policy


def test_the_500_page_carries_the_security_headers(testapp, monkeypatch):
    monkeypatch.setattr(app, "validate", None)
    res = testapp.post("/", VALID, expect_errors=True)
    assert res.status_int == 500
    assert dict(guards.SECURITY_HEADERS).items() <= dict(res.headers).items()


def test_a_500_after_the_server_refused_the_headers_carries_the_error_and_headers():
    # A server may refuse the headers it is given (Waitress refuses a hop-by-hop one); Bottle then
    # answers 500, and PEP 3333 requires that second start_response call to carry the error.
    calls = []

    def start_response(status, headers, exc_info=None):
        if calls and exc_info is None:  # as Waitress does
            raise AssertionError("start_response called a second time without providing exc_info")
        calls.append((status, dict(headers)))
        if len(calls) == 1:
            raise ValueError("a header this server refuses")

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz"}
    setup_testing_defaults(environ)
    b"".join(app.application(environ, start_response))
    assert [status for status, _ in calls] == ["200 OK", "500 INTERNAL SERVER ERROR"]
    assert dict(guards.SECURITY_HEADERS).items() <= calls[1][1].items()


def test_pages_with_submitted_values_are_not_stored(testapp):
    res = testapp.post("/", VALID, status=303)
    assert res.headers["Cache-Control"] == "no-store"
    assert saved_page(res).headers["Cache-Control"] == "no-store"
    res = testapp.post("/", example(age=["x"]), status=422)
    assert res.headers["Cache-Control"] == "no-store"
