"""The service manager's notifications (notify.py): READY=1 once Waitress listens, WATCHDOG=1
while its loop turns and not once it stops, STOPPING=1 when the drain begins.

A real server, started as the tests start servers, sends them to a real datagram socket given as
$NOTIFY_SOCKET, as systemd and run_proxy.py give one: the point is the process and its loop.
"""

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import SERVER_COMMANDS
from waitress.server import BaseWSGIServer

import notify
from deploy.servers import free_port, listens, spawn


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket bound where $NOTIFY_SOCKET will say, as systemd's is."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        yield sock


def received(sock: socket.socket, timeout: float = 10) -> str:
    """Return the next message on the socket; TimeoutError if none comes within `timeout`."""
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


def stopped(pid: int) -> bool:
    """Tell whether every thread of a process is stopped (state T in /proc)."""
    tasks = Path(f"/proc/{pid}/task").glob("*/stat")
    return all(stat.read_text().rsplit(")", 1)[1].split()[0] == "T" for stat in tasks)


@pytest.mark.parametrize("command", list(SERVER_COMMANDS))
def test_a_real_server_says_ready_once_it_listens_then_pings_until_it_is_stopped(
    notify_socket, command, tmp_path
):
    port = free_port()
    environ = {"HOST": "127.0.0.1", "PORT": str(port), "NOTIFY_SOCKET": notify_socket.getsockname()}
    process = spawn(SERVER_COMMANDS[command], environ, tmp_path / "server.log")
    try:
        assert received(notify_socket) == "READY=1"
        assert listens(process.pid, port)  # already, when it said so
        assert [received(notify_socket) for _ in range(2)] == ["WATCHDOG=1"] * 2
        process.send_signal(signal.SIGSTOP)  # as a deadlock or a swap storm would hold it
        while not stopped(process.pid):
            time.sleep(0.01)
        notify_socket.setblocking(False)
        while True:  # what it sent before it stopped
            try:
                notify_socket.recv(4096)
            except BlockingIOError:
                break
        with pytest.raises(TimeoutError):
            received(notify_socket, timeout=2.5)  # over twice the longest gap between pings
        process.send_signal(signal.SIGCONT)
        assert received(notify_socket) == "WATCHDOG=1"
        process.terminate()
        messages = []
        while (message := received(notify_socket)) != "STOPPING=1":
            messages.append(message)
        assert set(messages) <= {"WATCHDOG=1"}
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()


def test_an_abstract_socket_address_is_reached(monkeypatch):
    name = f"form-app-test-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # Linux's abstract namespace: $NOTIFY_SOCKET says "@name"
        notifier = notify.Notifier("@" + name)
        notifier.loop_turned()
        assert [received(sock), received(sock)] == ["READY=1", "WATCHDOG=1"]
        notifier.loop_turned()  # within PING_SECONDS of the last ping: none
        notifier.next_ping = 0
        notifier.loop_turned()
        notifier.socket.close()
        assert received(sock) == "WATCHDOG=1"


def test_a_notification_nobody_reads_is_dropped_not_waited_for(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))  # and never read: its queue fills
        full = notify.Notifier(str(tmp_path / "notify"))
        gone = notify.Notifier(str(tmp_path / "nobody"))
        sender = threading.Thread(
            target=lambda: [n.send("WATCHDOG=1") for n in [full, gone] * 1000]
        )
        sender.start()
        sender.join(10)
        full.socket.close()
        gone.socket.close()
        assert not sender.is_alive()


def test_without_notify_socket_nothing_is_installed(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    readable = BaseWSGIServer.readable
    notify.install()
    assert BaseWSGIServer.readable is readable
    assert notify.NOTIFIER is None
    notify.stopping()  # and says nothing


def test_no_ping_follows_stopping(tmp_path, monkeypatch):
    # The drain says STOPPING=1 from its own thread; the loop turns on until it closes the
    # listening sockets, and a ping then would arm the watchdog again during the drain.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        notifier = notify.Notifier(str(tmp_path / "notify"))
        notifier.loop_turned()
        assert [received(sock), received(sock)] == ["READY=1", "WATCHDOG=1"]
        monkeypatch.setattr(notify, "NOTIFIER", notifier)
        notify.stopping()
        notifier.next_ping = 0  # a ping is due
        notifier.loop_turned()
        notifier.socket.close()
        assert received(sock) == "STOPPING=1"
        sock.setblocking(False)  # a datagram on a local socket is queued when sendto returns
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
