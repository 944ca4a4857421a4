"""Graceful shutdown: on SIGTERM the real server refuses new connections, finishes, and exits 0."""

import http.client
import signal
import socket
import time

import pytest
from helpers import SERVER_COMMANDS, assert_saved, encoded, submitted

import app
from deploy.servers import start_server

FORM = "application/x-www-form-urlencoded"
BODY = encoded()


def assert_saved_whole(res: http.client.HTTPResponse) -> None:
    """Check a drained POST's answer: a 303 to where BODY, read to its end, was saved (in the
    database the servers share with this process: conftest.py's)."""
    location = assert_saved(res.status, res.getheader("Location"))
    assert res.read() == b""
    _, values = app.DATABASE.find(location.removeprefix("/saved/"))
    sent = app.validate(submitted())[0]
    # The hobbies come back in the database's order; the saved page puts them in the form's.
    assert {**values, "hobbies": sorted(values["hobbies"])} == {
        **sent,
        "hobbies": sorted(sent["hobbies"]),
    }


@pytest.fixture
def connect():
    """Open HTTP connections to a server; close them all at the end of the test."""
    opened = []

    def open_to(server) -> http.client.HTTPConnection:
        opened.append(http.client.HTTPConnection(server.host, server.port, timeout=10))
        return opened[-1]

    yield open_to
    for conn in opened:
        conn.close()


def started_post(conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
    """Send a POST's headers and half its body."""
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", FORM)
    conn.putheader("Content-Length", str(len(BODY)))
    conn.endheaders()
    conn.send(BODY[:10])
    return conn


def kept_alive(conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
    """Make a keep-alive connection that has had one answer and is now idle."""
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    return conn


def wait_until_refused(server, timeout=5):
    """Wait until the server refuses new connections; fail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):  # a reset is a refusal too
            return
        time.sleep(0.02)
    raise AssertionError(f"still accepting connections {timeout}s after SIGTERM")


# Two listen addresses make Waitress run a MultiSocketServer, which shutdown.py must find too.
COMMANDS = {
    **SERVER_COMMANDS,
    "two addresses": SERVER_COMMANDS["procfile"].replace(" app:", " --listen=127.0.0.1:0 app:"),
}


@pytest.fixture(params=list(COMMANDS))
def fresh_server(request, tmp_path):
    """A real server of its own, since the test stops it."""
    server = start_server(COMMANDS[request.param], tmp_path / "server.log")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_sigterm_finishes_requests_in_flight_and_exits_0(fresh_server, connect):
    slow = [started_post(connect(fresh_server)) for _ in range(3)]
    busy = [kept_alive(connect(fresh_server)) for _ in range(8)]  # more than Waitress's 4 threads
    idle = kept_alive(connect(fresh_server))
    time.sleep(0.2)  # let Waitress read the half bodies

    for conn in busy:  # a new request on each, sent just before the signal
        conn.request("POST", "/", BODY, {"Content-Type": FORM})
    fresh_server.process.send_signal(signal.SIGTERM)
    wait_until_refused(fresh_server)
    for conn in slow:  # bodies still arriving after the signal
        conn.send(BODY[10:])

    for conn in slow + busy:
        res = conn.getresponse()
        assert_saved_whole(res)
        if conn in slow:  # answered during the drain, which closes each connection after it
            assert res.getheader("Connection") == "close"
        conn.close()  # a busy one may have been answered before the drain began: kept alive
    # An idle keep-alive connection is not cut under its client (a proxy may be sending on it):
    # its next request is answered, with Connection: close, and then the connection closes.
    idle.request("GET", "/healthz")
    res = idle.getresponse()
    assert (res.status, res.read(), res.getheader("Connection")) == (200, b"ok\n", "close")
    assert idle.sock is None or idle.sock.recv(1) == b""
    assert fresh_server.process.wait(timeout=15) == 0, fresh_server.output()


def test_requests_that_reached_a_paused_server_before_sigterm_are_answered(fresh_server, connect):
    # The server is stopped (SIGSTOP) so that everything below is waiting for it when SIGTERM
    # comes: requests on idle keep-alive connections, and new connections in the listen backlog
    # that the kernel accepted for it. Closing either under the client loses a request.
    idle = [kept_alive(connect(fresh_server)) for _ in range(5)]
    fresh_server.process.send_signal(signal.SIGSTOP)
    try:
        queued = [connect(fresh_server) for _ in range(5)]
        for conn in idle + queued:
            conn.request("POST", "/", BODY, {"Content-Type": FORM})
        time.sleep(0.2)  # let the requests reach the server's sockets
        fresh_server.process.send_signal(signal.SIGTERM)
    finally:
        fresh_server.process.send_signal(signal.SIGCONT)
    for conn in idle + queued:
        assert_saved_whole(conn.getresponse())
    assert fresh_server.process.wait(timeout=15) == 0, fresh_server.output()


def test_sigterm_with_nothing_in_flight_exits_0(fresh_server):
    fresh_server.process.send_signal(signal.SIGTERM)
    assert fresh_server.process.wait(timeout=15) == 0, fresh_server.output()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_hang_up_and_quit_drain_like_sigterm(tmp_path, connect, sig):
    server = start_server(SERVER_COMMANDS["procfile"], tmp_path / "server.log")
    try:
        slow = started_post(connect(server))
        time.sleep(0.2)
        server.process.send_signal(sig)
        wait_until_refused(server)
        slow.send(BODY[10:])
        assert_saved_whole(slow.getresponse())
        assert server.process.wait(timeout=15) == 0, server.output()
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2], ids=["SIGUSR1", "SIGUSR2"])
def test_user_signals_do_not_stop_the_server(tmp_path, connect, sig):
    server = start_server(SERVER_COMMANDS["procfile"], tmp_path / "server.log")
    try:
        server.process.send_signal(sig)
        time.sleep(0.3)
        conn = connect(server)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        conn.close()  # an idle keep-alive connection would hold the drain below
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.output()
