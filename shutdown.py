"""Graceful shutdown for Waitress: on SIGTERM stop accepting, finish the requests in flight, exit 0.

Waitress stops on KeyboardInterrupt (SIGINT), but then it only waits for the requests its worker
threads are running: a request whose body is still arriving, or one queued for a free thread, is
cut. So on SIGTERM this closes the listening sockets, lets every connection that is part-way
through a request finish it, closes idle keep-alive connections, and then closes Waitress's last
sockets, which ends its loop: serve() returns and the process exits 0. It works under
`python app.py` and `waitress-serve app:application` alike, because it finds the server in the
main thread's stack, where the signal interrupts Waitress (3.0, pinned in requirements.txt).
"""

import signal
import socket
import threading
import time

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer

DRAIN_SECONDS = 20  # then stop anyway: platforms kill a process 30 s after SIGTERM


def install():
    """Make SIGTERM drain the Waitress server that runs in the main thread, unless taken already."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, drain_on_signal)


def drain_on_signal(signum, frame):
    """Start draining the server this signal interrupted; without one, stop at once as on SIGINT."""
    server = running_server(frame)
    if server is None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the drain short
    threading.Thread(target=drain, args=(server,), name="drain", daemon=True).start()


def running_server(frame) -> BaseWSGIServer | None:
    """Return the (fully built) Waitress server whose code this stack is running, if any."""
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, MultiSocketServer):  # several listen addresses: they share one map
            owner = next(obj for obj in owner.map.values() if isinstance(obj, BaseWSGIServer))
        if isinstance(owner, BaseWSGIServer) and hasattr(owner, "task_dispatcher"):
            return owner
        frame = frame.f_back
    return None


def drain(server: BaseWSGIServer):
    """Stop accepting, wait for the requests in flight, then end Waitress's loop."""
    socket_map = server._map  # every socket Waitress's loop watches: listeners, clients, trigger
    # The trigger runs code in the loop's own thread, between events, where changing it is safe.
    server.trigger.pull_trigger(lambda: stop_accepting(socket_map))
    deadline = time.monotonic() + DRAIN_SECONDS
    while connections(socket_map) and time.monotonic() < deadline:
        server.trigger.pull_trigger(lambda: close_idle(socket_map))
        time.sleep(0.05)
    # An empty map ends the loop: serve() returns normally and the process exits 0.
    server.trigger.pull_trigger(lambda: [obj.close() for obj in list(socket_map.values())])


def connections(socket_map: dict) -> list[HTTPChannel]:
    """Return the open client connections."""
    return [obj for obj in list(socket_map.values()) if isinstance(obj, HTTPChannel)]


def stop_accepting(socket_map: dict):
    """Close the listening sockets, so that new connections are refused, not left waiting."""
    for obj in list(socket_map.values()):
        if isinstance(obj, BaseWSGIServer):
            obj.del_channel()
            obj.socket.close()


def close_idle(socket_map: dict):
    """Close the connections that have no request under way (idle keep-alive ones)."""
    for channel in connections(socket_map):
        idle = channel.request is None and not channel.requests and not channel.total_outbufs_len
        if idle and not unread(channel.socket):
            channel.will_close = True


def unread(sock: socket.socket) -> bool:
    """Tell whether a request has reached the socket that Waitress has not read yet."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing to read yet (BlockingIOError), or a broken connection
        return False
