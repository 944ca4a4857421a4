"""Logging: one line per event on stderr, in one format, and never a reason for a request to wait.

Twelve-factor apps write their log to stderr and let the platform (journald, a container runtime,
Heroku's router) collect it. Three things can go wrong there, and none may cost an answer:
- a request could forge log lines: every record, traceback included, is one line with control
  characters escaped, and a request's path is percent-encoded and capped;
- the stream can stall (a paused terminal, a blocked `tee`, a log reader that stopped): a write to
  a full pipe blocks, so requests only queue their lines, and one thread writes them. When the
  queue is full, lines are counted and dropped, and the count is logged once the stream flows;
- the stream can be closed (`2>&-`, `sys.stderr` is None) or broken: the writer counts those
  lines too, and no request sees the error.
Waitress's records, the app's tracebacks and the access line share the one format below.
A flood of Waitress's "task queue depth" warnings is logged at most once every QUIET seconds.
"""

import atexit
import logging
import queue
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener
from urllib.parse import quote

FORMAT = logging.BASIC_FORMAT  # LEVEL:logger:message, the format waitress-serve's users know
QUEUE_LINES = 10_000  # lines held while the stream stalls (a few MB at most), then dropped
QUIET = 10.0  # seconds between two of Waitress's task-queue warnings

ACCESS = logging.getLogger("access")
APP = logging.getLogger("app")


def escaped(text: str) -> str:
    """Return text as one line: line breaks and other control characters escaped."""
    return text.encode("unicode_escape").decode("ascii")


class OneLineFormatter(logging.Formatter):
    """Format a record, its traceback included, as one escaped line."""

    def format(self, record: logging.LogRecord) -> str:
        return escaped(super().format(record))


class Lost:
    """A count of the log lines that could not be written, shared by the queue and the writer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def add(self, lines: int = 1) -> None:
        with self.lock:
            self.count += lines

    def take(self) -> int:
        with self.lock:
            count, self.count = self.count, 0
        return count


class DroppingQueueHandler(QueueHandler):
    """Queue a record for the writer thread; when the queue is full, count it rather than wait."""

    def __init__(self, lines: queue.Queue, lost: Lost):
        super().__init__(lines)
        self.lost = lost

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.lost.add()


class StreamWriter(logging.StreamHandler):
    """Write each line to the stream (the writer thread's handler); say how many were lost."""

    def __init__(self, stream, lost: Lost):
        super().__init__(stream)
        self.lost = lost

    def emit(self, record: logging.LogRecord) -> None:
        lost = self.lost.take()
        lines = [record.getMessage()]  # formatted already, in the request's thread
        if lost:
            lines.insert(0, f"WARNING:logs:{lost} log lines lost: the stream was full or closed")
        try:
            self.stream.write("".join(line + "\n" for line in lines))
            self.stream.flush()
        except Exception:  # closed (None), broken or gone: count, never raise
            self.lost.add(len(lines))


class RareQueueWarnings(logging.Filter):
    """Let one of Waitress's task-queue warnings through every QUIET seconds, with a count of the
    others: a client that floods the server makes Waitress warn on every request."""

    def __init__(self):
        super().__init__()
        self.next_warning = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self.next_warning:
            self.suppressed += 1
            return False
        self.next_warning = now + QUIET
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more since the last one logged)"
            self.suppressed = 0
        return True


class ErrorStream:
    """A WSGI error stream (Bottle writes tracebacks there) that logs what it is given."""

    def write(self, text: str) -> None:
        APP.error(text.rstrip("\n"))

    def writelines(self, lines) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        pass  # the writer thread flushes


ERRORS = ErrorStream()


def loggable(text: str, limit: int = 200) -> str:
    """Return request text as one log token: percent-encoded (no spaces or controls), capped,
    so that the cap's mark `...(NB)` cannot be sent as text."""
    token = quote(text.encode("latin-1", "replace"), safe="/:@!$&'*+,;=~")
    return token if len(token) <= limit else f"{token[:limit]}...({len(token)}B)"


def access(environ: dict, status: str, seconds: float) -> None:
    """Log one request: client, scheme, method, path (no query: it may hold form values),
    status and duration."""
    fields = [
        loggable(environ.get("REMOTE_ADDR") or "-", 50),  # from X-Forwarded-For behind nginx
        environ.get("wsgi.url_scheme") or "-",
        loggable(environ.get("REQUEST_METHOD") or "-", 20),
        loggable(environ.get("bottle.raw_path") or "-"),  # as sent: Bottle re-decodes PATH_INFO
        status[:3],  # the code: a status line is three digits, a space, a phrase (PEP 3333)
        f"{seconds * 1000:.1f}ms",
    ]
    ACCESS.info(" ".join(fields))


def configure(stream=None) -> QueueListener:
    """Send every record to stderr (or `stream`) through a bounded queue and one writer thread.

    Safe to call again: it replaces what an earlier call set up.
    """
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, DroppingQueueHandler):
            root.removeHandler(handler)
    lost = Lost()
    lines = queue.Queue(QUEUE_LINES)
    handler = DroppingQueueHandler(lines, lost)
    handler.setFormatter(OneLineFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.filters = [RareQueueWarnings()]
    listener = QueueListener(lines, StreamWriter(stream or sys.stderr, lost))
    listener.start()
    atexit.register(flush, listener)
    return listener


def flush(listener: QueueListener, timeout: float = 2.0) -> None:
    """Write the lines still queued, waiting no longer than `timeout` for a stalled stream."""
    try:
        listener.queue.put(listener._sentinel, timeout=timeout)  # after what is queued
    except queue.Full:  # stalled: what is queued cannot be written
        return
    listener._thread.join(timeout)  # QueueListener.stop() would wait without end
