"""The body-size limit lives in Waitress: it refuses an oversized body before buffering it."""

import pytest
import webtest
from helpers import answers, assert_saved, encoded, exchange

import app
import guards

CLOSE = "Connection: close\r\n"


def head(server, extra: str) -> bytes:
    """Return the head of a urlencoded POST / with the given extra header lines."""
    return (
        f"POST / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{extra}\r\n"
    ).encode()


def status_of(answer: bytes) -> int:
    """Return the status code of a raw HTTP answer."""
    return int(answer.split(b" ", 2)[1])


def saved_page(server, answer: bytes) -> str:
    """Check a raw answer to a valid submission (a 303 to /saved/<token>); return the page it
    leads to, from the same server."""
    [saved] = answers(answer)
    [location] = saved.values("Location")
    return webtest.TestApp(server.url).get(assert_saved(saved.status, location)).text


def test_a_body_just_under_the_limit_is_accepted(server):
    body = encoded() + b"&pad="
    body += b"x" * (guards.MAX_BODY - 1 - len(body))
    assert len(body) == guards.MAX_BODY - 1
    answer = exchange(server, head(server, f"Content-Length: {len(body)}\r\n{CLOSE}") + body)
    assert f"Age: {app.EXAMPLE['age'][0]}" in saved_page(server, answer)


@pytest.mark.parametrize("size", [guards.MAX_BODY, 100 * guards.MAX_BODY])
def test_an_announced_oversized_body_is_refused_without_waiting_for_it(server, size):
    # No body follows: an answer (not a timeout) proves the server did not wait to buffer it.
    answer = exchange(server, head(server, f"Content-Length: {size}\r\n"))
    assert status_of(answer) == 413
    assert b"Request Entity Too Large" in answer


@pytest.mark.parametrize("chunk_size", [1024, 4096])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(server, chunk_size):
    # Just past the limit and no final chunk: the server must answer without waiting for more.
    chunk = b"%x\r\n" % chunk_size + b"x" * chunk_size + b"\r\n"
    chunks = chunk * (guards.MAX_BODY // len(chunk) + 1)
    answer = exchange(server, head(server, "Transfer-Encoding: chunked\r\n") + chunks)
    assert status_of(answer) == 413


def test_a_chunked_body_within_the_limit_is_read(server):
    body = encoded(age=["42"])
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = exchange(server, head(server, f"Transfer-Encoding: chunked\r\n{CLOSE}") + chunked)
    assert "Age: 42" in saved_page(server, answer)


def test_an_oversized_form_from_webtest_is_413(server):
    webtest.TestApp(server.url).post("/", {"age": "1" * guards.MAX_BODY}, status=413)


def test_an_oversized_header_block_is_refused(server):
    # Exactly the limit and no end of headers: the server must answer without waiting for more.
    # (Sending more than it reads before it answers would make its close a reset.)
    limit = app.SERVER["max_request_header_size"]
    start = head(server, "X-Padding: ")[:-2]
    answer = exchange(server, start + b"x" * (limit - len(start)))
    assert status_of(answer) == 431
