"""The stylesheet and icon: served by the app itself, under the same security headers."""

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


def test_an_unchanged_stylesheet_is_not_sent_again(testapp):
    etag = testapp.get("/static/style.css").headers["ETag"]
    res = testapp.get("/static/style.css", headers={"If-None-Match": etag}, status=304)
    assert res.body == b""


def test_a_changed_stylesheet_is_sent(testapp):
    testapp.get("/static/style.css", headers={"If-None-Match": '"old"'}, status=200)


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
