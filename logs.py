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
from urllib.parse import quote

FORMAT = logging.BASIC_FORMAT  # LEVEL:logger:message, the format waitress-serve's users know
QUEUE_LINES = 10_000  # lines held while the stream stalls (a MB of access lines), then dropped
QUIET = 10.0  # seconds between two of Waitress's task-queue warnings
# The writer thread wakes at most this often. Woken for every line, it took the interpreter lock
# from the requests' threads so often that Waitress served 40% fewer GETs (docs/benchmark.md).
BATCH_SECONDS = 0.1

# Paths whose rest is a bearer secret, logged without it: the saved page's token (app.py) lets
# whoever holds it read a person's answers, and a log is read by more people, kept longer.
SECRET_PATHS = ("/saved/",)

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


class LineWriter(logging.Handler):
    """The one log handler. Each record is formatted as one line in the thread that logs it and
    queued; a thread of the handler's own writes the queue to the stream, lines queued together in
    one write. When the queue is full, a line is counted rather than waited for."""

    def __init__(self, stream):
        super().__init__()
        self.setFormatter(OneLineFormatter(FORMAT))
        self.stream = stream
        # SimpleQueue: a put costs a fraction of a microsecond, where Queue's costs several
        # (docs/benchmark.md); the bound is kept by its size instead.
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.limit = QUEUE_LINES
        self.lost = Lost()
        self.closing = threading.Event()  # flush() sets it: write what is queued, now
        self.thread = threading.Thread(target=self.write_queued, name="log writer", daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if self.lines.qsize() >= self.limit:  # the stream has stalled: count the line, never wait
            self.lost.add()
            return
        try:
            line = self.format(record)
        except Exception:  # a log call's own mistake (its arguments): said, never raised
            line = f"ERROR:logs:a {record.levelname} line from {record.name} could not be formatted"
        self.lines.put(line)

    def write_queued(self) -> None:
        """Write the queued lines, those of a tenth of a second at a time, until the end mark
        (None): the writer thread."""
        done = False
        while not done:
            lines = [self.lines.get()]
            self.closing.wait(BATCH_SECONDS)  # and let the lines that follow it queue up behind it
            while not self.lines.empty():  # this thread alone takes from the queue
                lines.append(self.lines.get_nowait())
            if None in lines:
                lines, done = lines[: lines.index(None)], True
            self.write(lines)

    def write(self, lines: list[str]) -> None:
        """Write lines to the stream, after the count of those lost since the last write."""
        lost = self.lost.take()
        said = (
            [f"WARNING:logs:{lost} log lines lost: the stream was full or closed"] if lost else []
        )
        if not said + lines:
            return
        try:
            self.stream.write("".join(line + "\n" for line in said + lines))
            self.stream.flush()
        except Exception:  # closed (None), broken or gone: count, never raise
            self.lost.add(lost + len(lines))


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


def logged_path(environ: dict) -> str:
    """Return a request's path as logged: as sent, or, for a path that holds a secret, its
    start alone (decided on the path as the app routes it: %-escapes decoded)."""
    path = environ.get("bottle.raw_path") or "-"  # as sent: Bottle re-decodes PATH_INFO
    for start in SECRET_PATHS:
        if environ.get("PATH_INFO", "").startswith(start):
            return f"{start}<token>"
    return loggable(path)


def access(environ: dict, status: str, seconds: float) -> None:
    """Log one request: client, scheme, method, path (no query: it may hold form values; no
    token: it is a secret), status and duration."""
    fields = [
        loggable(environ.get("REMOTE_ADDR") or "-", 50),  # from X-Forwarded-For behind nginx
        environ.get("wsgi.url_scheme") or "-",
        loggable(environ.get("REQUEST_METHOD") or "-", 20),
        logged_path(environ),
        status[:3],  # the code: a status line is three digits, a space, a phrase (PEP 3333)
        f"{seconds * 1000:.1f}ms",
    ]
    ACCESS.info(" ".join(fields))


def configure(stream=None) -> LineWriter:
    """Send every record to stderr (or `stream`) through a bounded queue and one writer thread.

    Safe to call again: it replaces what an earlier call set up.
    """
    root = logging.getLogger()
    replaced = [handler for handler in root.handlers if isinstance(handler, LineWriter)]
    writer = LineWriter(stream or sys.stderr)
    # One swap, so that no line meanwhile finds no handler, or two.
    root.handlers = [h for h in root.handlers if h not in replaced] + [writer]
    for handler in replaced:
        flush(handler)  # its queued lines written, its thread ended: not left waiting
    root.setLevel(logging.INFO)
    # What the format above does not show, not gathered for each record (logging HOWTO,
    # "Optimization"): the calling function's file and line, the thread, the process.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("waitress.queue").filters = [RareQueueWarnings()]
    atexit.unregister(flush)  # the writers replaced are flushed already
    atexit.register(flush, writer)
    return writer


def flush(writer: LineWriter, timeout: float = 2.0) -> None:
    """Write the lines still queued and stop the writer thread, waiting no longer than `timeout`
    for a stalled stream (this runs at exit)."""
    writer.lines.put(None)  # the end mark, after what is queued
    writer.closing.set()  # not waiting out the batch
    writer.thread.join(timeout)
