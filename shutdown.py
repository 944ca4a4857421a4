"""Graceful shutdown for Waitress: on SIGTERM stop accepting, finish the requests in flight, exit 0.

Waitress stops on KeyboardInterrupt (SIGINT), but then it only waits for the requests its worker
threads are running: a request whose body is still arriving, or one queued for a free thread, is
cut. So on SIGTERM (and SIGHUP or SIGQUIT) this

- accepts the connections already waiting in the listen backlog, then closes the listening
  sockets, so that new connections are refused (a proxy then tries another instance) while
  those that the kernel had accepted for us are served rather than reset;
- answers every request from then on with `Connection: close`, and closes each connection once
  its answer is sent. An idle keep-alive connection is left open, not cut: a proxy may have
  sent a request on it already, and a POST lost that way is not retried. The peer closes it (nginx
  drops idle upstream connections within its keepalive_timeout, shorter than the drain), or it
  gets its next answer with `Connection: close`;
- after DRAIN_SECONDS at most, closes Waitress's last sockets, which ends its loop: serve()
  returns and the process exits 0.

It works under `python app.py` and `waitress-serve app:application` alike, because it finds the
server in the main thread's stack, where the signal interrupts Waitress (3.0, pinned in
requirements.txt).
"""

import select
import signal
import threading
import time

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.task import ErrorTask, WSGITask

import notify

DRAIN_SECONDS = 20  # then stop anyway: platforms kill a process 30 s after SIGTERM
# SIGTERM is how platforms and systemd stop a process; SIGHUP is a closed terminal, SIGQUIT is
# nginx's and gunicorn's graceful stop: none of them should lose a request. (There is no
# configuration to reload on SIGHUP: the settings are read once, at start.)
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Signals whose default would kill the process at once, though they ask for nothing of the kind
# here: USR1/USR2 mean "reopen the logs" to many daemons, and this one logs to stderr.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def install():
    """Make the drain signals drain the Waitress server in the main thread, unless taken already.

    A signal someone set to be ignored (`nohup` ignores SIGHUP) stays ignored.
    """
    for sig in DRAIN_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, drain_on_signal)
    for sig in IGNORED_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, signal.SIG_IGN)


def drain_on_signal(signum, frame):
    """Start draining the server this signal interrupted; without one, stop at once as on SIGINT."""
    server = running_server(frame)
    if server is None:
        raise KeyboardInterrupt
    for sig in DRAIN_SIGNALS:  # a second signal must not cut the drain short
        if signal.getsignal(sig) is drain_on_signal:
            signal.signal(sig, signal.SIG_IGN)
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


class ClosingTask(WSGITask):
    """A request answered during the drain: with `Connection: close`, then the connection closed."""

    def build_response_header(self):
        self.set_close_on_finish()
        return super().build_response_header()


class ClosingErrorTask(ErrorTask):
    """Waitress's own error answer (400, 413, ...) during the drain, likewise."""

    def build_response_header(self):
        self.set_close_on_finish()
        return super().build_response_header()


def drain(server: BaseWSGIServer):
    """Stop accepting, answer what has arrived, then end Waitress's loop."""
    # The service manager expects the exit now, not pings: none follows STOPPING=1, though the
    # loop turns on until it closes the listening sockets (notify.py).
    notify.stopping()
    # The process is stopping: every answer from now on, on any connection, closes it.
    HTTPChannel.task_class, HTTPChannel.error_task_class = ClosingTask, ClosingErrorTask
    socket_map = server._map  # every socket Waitress's loop watches: listeners, clients, trigger
    # The trigger runs code in the loop's own thread, between events, where changing it is safe.
    server.trigger.pull_trigger(lambda: stop_accepting(socket_map))
    deadline = time.monotonic() + DRAIN_SECONDS
    while connections(socket_map) and time.monotonic() < deadline:
        time.sleep(0.05)
    # An empty map ends the loop: serve() returns normally and the process exits 0.
    server.trigger.pull_trigger(lambda: [obj.close() for obj in list(socket_map.values())])


def connections(socket_map: dict) -> list[HTTPChannel]:
    """Return the open client connections."""
    return [obj for obj in list(socket_map.values()) if isinstance(obj, HTTPChannel)]


def stop_accepting(socket_map: dict):
    """Accept what the listen backlog holds, then close the listening sockets.

    Closing a listening socket resets the connections still in its backlog: the kernel completed
    their handshakes, so the client (nginx) may have sent its request, and would get an error it
    does not retry for a POST. Taken into Waitress first, they are served like any other.
    """
    for obj in list(socket_map.values()):
        if isinstance(obj, BaseWSGIServer):
            for _ in range(obj.adj.backlog):  # at most what the backlog holds
                if not select.select([obj.socket], [], [], 0)[0]:
                    break
                obj.handle_accept()
            obj.del_channel()
            obj.socket.close()
