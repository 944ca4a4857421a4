"""Tell the service manager that the app is up and that its loop still turns: systemd's notify
protocol (sd_notify), which deploy/run_proxy.py speaks too.

A hung instance (a deadlock, a swap storm, a stopped process) still holds its port: the kernel
accepts connections for it, nginx sends it requests, and each waits for the proxy's timeout. A
watchdog ends that: systemd (WatchdogSec= in deploy/form-app@.service), or run_proxy.py for
`make run-proxy`, kills and restarts an instance whose pings stop. So the pings come from the
thread that accepts and answers connections, Waitress's main loop, between two of its events: a
thread of their own would go on pinging while the loop was stuck. With $NOTIFY_SOCKET set, this
sends a datagram there:

- READY=1 on the loop's first turn, once Waitress listens (Type=notify: `systemctl start` and
  `restart` return then, not before it can answer);
- WATCHDOG=1 every PING_SECONDS while the loop turns;
- STOPPING=1 when the drain begins (shutdown.py).

Without $NOTIFY_SOCKET (`make run`, a platform, the tests' in-process app) it does nothing. A
datagram that cannot be sent (nobody listens, their queue is full) is dropped, never waited for:
the loop must not stall on its own watchdog.
"""

import os
import socket
import threading
import time

from waitress.server import BaseWSGIServer

# At most this often; an idle loop turns once a second (Waitress's asyncore_loop_timeout), so
# the watchdog (WatchdogSec= in deploy/form-app@.service, WATCHDOG_SECONDS in run_proxy.py: 5 s)
# gets about one ping a second, several in each of its periods, as sd_notify's manual asks.
PING_SECONDS = 0.5


class Notifier:
    """The datagrams to $NOTIFY_SOCKET, and when the last ping went."""

    def __init__(self, address: str):
        # "@name" is a socket in Linux's abstract namespace: its address begins with a NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.socket.setblocking(False)
        self.ready = False
        self.next_ping = 0.0
        # The drain (shutdown.py) says STOPPING=1 from a thread of its own while the loop turns
        # on until it closes the listening sockets: a ping after it would tell the service
        # manager the instance runs again, and arm its watchdog during the drain.
        self.stopping = False
        self.lock = threading.Lock()

    def send(self, message: str) -> None:
        """Send one message; drop it if it cannot go now."""
        try:
            self.socket.sendto(message.encode(), self.address)
        except OSError:  # nobody listens, or their queue is full: the next ping will do
            pass

    def loop_turned(self) -> None:
        """Say READY=1 on the first call, then WATCHDOG=1 every PING_SECONDS, until STOPPING=1."""
        with self.lock:
            if self.stopping:
                return
            if not self.ready:
                self.ready = True
                self.send("READY=1")
            now = time.monotonic()
            if now >= self.next_ping:
                self.next_ping = now + PING_SECONDS
                self.send("WATCHDOG=1")

    def stop(self) -> None:
        """Say STOPPING=1, the last message: no ping follows it."""
        with self.lock:
            self.stopping = True
            self.send("STOPPING=1")


NOTIFIER: Notifier | None = None


def install() -> None:
    """With $NOTIFY_SOCKET set, ping from each turn of Waitress's loop; without, do nothing."""
    global NOTIFIER
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or NOTIFIER is not None:
        return
    NOTIFIER = Notifier(address)
    readable = BaseWSGIServer.readable

    # Waitress's loop asks each listening socket whether to watch it for connections, on every
    # turn, at least once a second (asyncore_loop_timeout) when idle. Its own maintenance()
    # runs from there too, but timed by the wall clock: a clock set back would stop the pings.
    def readable_and_ping(server: BaseWSGIServer) -> bool:
        NOTIFIER.loop_turned()
        return readable(server)

    BaseWSGIServer.readable = readable_and_ping


def stopping() -> None:
    """Say STOPPING=1: the drain has begun."""
    if NOTIFIER is not None:
        NOTIFIER.stop()
