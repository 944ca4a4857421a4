"""Abusive clients against the real server from the Procfile, on loopback, bounded in time."""

import http.client
import random
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import SERVER_COMMANDS, assert_saved, encoded

from deploy.servers import start_server

FORM_HEADER = b"Content-Type: application/x-www-form-urlencoded\r\n"


def post(body: bytes, head: bytes = FORM_HEADER) -> bytes:
    """Return a raw POST / with this body."""
    head += b"Content-Length: %d\r\n" % len(body)
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory):
    """A Procfile server of this module's own, since these tests load it hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # 600 client sockets here, as many in the server, which inherits the limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    running = start_server(SERVER_COMMANDS["procfile"], tmp_path_factory.mktemp("abuse") / "log")
    yield running
    assert running.stop() == 0
    assert "Traceback" not in running.output()


def status_after_sending(server, raw: bytes, timeout: float = 5) -> int:
    """Send raw bytes on a new connection; return the response's status code."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may answer and close before it has read all we send
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status


def get_page(server, timeout: float) -> int:
    """GET the form as a normal client would; return the status."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert b"<form" in response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3_000 + b"\r\n",
    ],
    ids=["request line", "one header", "many headers"],
)
def test_oversized_request_head_gets_a_431_not_a_hang(loaded_server, raw):
    assert status_after_sending(loaded_server, raw) == 431  # Request Header Fields Too Large


def test_clients_that_vanish_halfway_through_a_body_do_no_harm(loaded_server):
    half = post(b"age=" + b"1" * 9996)[:-5000]
    for _ in range(200):
        with socket.create_connection((loaded_server.host, loaded_server.port), timeout=5) as sock:
            sock.sendall(half)
    assert get_page(loaded_server, timeout=5) == 200


def dribble(sock: socket.socket, stop: threading.Event):
    """Send a request head one header at a time, never finishing it (slow loris)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    while not stop.wait(0.5):
        sock.sendall(b"X-Loris: 1\r\n")


@pytest.mark.stress
def test_idle_and_slow_loris_clients_do_not_lock_out_a_normal_client(loaded_server):
    stop = threading.Event()
    idle = [socket.create_connection((loaded_server.host, loaded_server.port)) for _ in range(500)]
    loris = [socket.create_connection((loaded_server.host, loaded_server.port)) for _ in range(100)]
    threads = [threading.Thread(target=dribble, args=(sock, stop)) for sock in loris]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)  # let the server take them all on
        for _ in range(5):
            started = time.monotonic()
            assert get_page(loaded_server, timeout=2) == 200
            # The bound the issue sets; Waitress's defaults make this client wait 120 s.
            assert time.monotonic() - started < 2
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in idle + loris:
            sock.close()


# Requests and the status each must get: valid ones, and invalid ones the app or Waitress refuse.
MIXED = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (post(encoded()), 303),
    (post(b"age=-1"), 422),
    (post(b"age=%FF"), 400),
    (post(b"hi", b"Content-Type: text/plain\r\n"), 415),
    (post(b"age=1", FORM_HEADER + b"Origin: http://evil.example\r\n"), 403),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST / HTTP/1.1\r\nHost: x\r\n" + FORM_HEADER + b"Content-Length: 99999\r\n\r\n", 413),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (post(b"--b\r\n\0:\r\n\r\n", b"Content-Type: multipart/form-data; boundary=b\r\n"), 400),
]


def run_mixed(server, count: int, seed: int) -> list[tuple[int, int]]:
    """Send `count` random requests from MIXED on one kept-alive connection; return statuses."""
    # A reproducible mix of test requests, no secret. (Bandit reads every word after nosec as
    # a test to skip, so the reason lives here.)
    rng = random.Random(seed)  # nosec B311
    results = []
    sock = None
    for _ in range(count):
        raw, expected = rng.choice(MIXED)
        if sock is None:
            sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        results.append((expected, response.status))
        if response.status == 303:  # saved, and sent on to where it was saved
            assert_saved(response.status, response.getheader("Location"))
        if response.will_close:  # Waitress closes after the requests it cannot parse
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return results


@pytest.mark.stress
def test_ten_thousand_mixed_requests_over_32_connections_get_no_5xx(loaded_server):
    counts = [10_000 // 32 + (i < 10_000 % 32) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        batches = pool.map(run_mixed, [loaded_server] * 32, counts, range(32))
        results = [result for batch in batches for result in batch]
    assert len(results) == 10_000
    assert [got for _, got in results if got >= 500] == []
    assert [(expected, got) for expected, got in results if expected != got] == []
