"""The stylesheet and icon: served by the app itself, under the same security headers."""

import re

import pytest


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/static/style.css", "text/css"), ("/static/favicon.svg", "image/svg+xml")],
)
def test_static_files_are_served_with_their_type(testapp, path, content_type):
    res = testapp.get(path)
    assert res.content_type == content_type
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in res.headers["Content-Security-Policy"]
    assert res.headers["ETag"]


def test_every_page_links_the_stylesheet(testapp):
    for res in [testapp.get("/"), testapp.get("/nowhere", status=404)]:
        assert res.html.find("link", rel="stylesheet")["href"] == "/static/style.css"


def test_static_files_are_revalidated_so_a_deploy_is_seen_at_once(testapp):
    assert testapp.get("/static/style.css").headers["Cache-Control"] == "no-cache"


def test_the_etag_is_a_strong_quoted_entity_tag(testapp):
    etag = testapp.get("/static/style.css").headers["ETag"]
    assert re.fullmatch(r'"[!#-~]+"', etag)  # RFC 9110 8.8.3, not weak (no W/)


# How a cache may name the tag it holds (RFC 9110 13.1.2): each one means "unchanged".
@pytest.mark.parametrize(
    "if_none_match",
    [
        "{etag}",
        '"old", {etag}',
        '"old",{etag} , "older"',
        "W/{etag}",
        '"old", W/{etag}',
        "*",
        " * ",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_unchanged_stylesheet_is_not_sent_again(testapp, method, if_none_match):
    etag = testapp.get("/static/style.css").headers["ETag"]
    header = if_none_match.format(etag=etag)
    res = testapp.request("/static/style.css", method=method, headers={"If-None-Match": header})
    assert res.status_int == 304
    assert res.headers["ETag"] == etag
    assert res.body == b""
    assert "Content-Length" not in res.headers


# The old unquoted form of the tag, another tag, and headers that are not entity-tags at all:
# each gets the file, even with an If-Modified-Since that alone would give a 304 (RFC 9110 13.1.3).
@pytest.mark.parametrize(
    "if_none_match",
    [
        '"old"',
        'W/"old", "older"',
        "{bare}",
        'w/"{bare}"',
        '"{bare}',
        '{bare}"',
        '"*"',
        "",
        ",",
        "\x7f\xff",
    ],
)
def test_a_changed_stylesheet_is_sent(testapp, if_none_match):
    whole = testapp.get("/static/style.css")
    header = if_none_match.format(bare=whole.headers["ETag"].strip('"'))
    res = testapp.get(
        "/static/style.css",
        headers={"If-None-Match": header, "If-Modified-Since": whole.headers["Last-Modified"]},
    )
    assert res.status_int == 200
    assert res.body == whole.body


def test_a_stylesheet_not_modified_since_is_not_sent_again(testapp):
    last_modified = testapp.get("/static/style.css").headers["Last-Modified"]
    for method in ["GET", "HEAD"]:
        res = testapp.request(
            "/static/style.css", method=method, headers={"If-Modified-Since": last_modified}
        )
        assert res.status_int == 304
        assert res.body == b""


def test_a_head_request_gets_the_headers_of_a_get_without_the_body(testapp):
    whole, head = testapp.get("/static/style.css"), testapp.head("/static/style.css")
    assert head.body == b""
    for name in ["Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control"]:
        assert head.headers[name] == whole.headers[name]
    assert int(head.headers["Content-Length"]) == len(whole.body)


@pytest.mark.parametrize("value", ["items=0-1", "bytes=0-1", "bytes=9999-"])
def test_range_requests_get_the_whole_file(testapp, value):
    whole = testapp.get("/static/style.css")
    assert "Accept-Ranges" not in whole.headers  # ranges are not offered
    assert testapp.get("/static/style.css", headers={"Range": value}).body == whole.body


@pytest.mark.parametrize(
    "path",
    [
        "/static/" + "a" * 300 + ".css",
        "/static/nothing.css",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/.gitignore",
    ],
)
def test_only_files_inside_static_are_served(testapp, path):
    res = testapp.get(path, status=404)
    res.mustcontain("There is no page at this address.")
