"""The log (logs.py): one line an event, in one format, with no form values; never a request's
reason to wait or fail, whatever the state of the stream."""

import atexit
import fcntl
import io
import logging
import os
import re
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote, unquote

import pytest
from helpers import (
    SERVER_COMMANDS,
    cleaned,
    encoded,
    example,
    result_line,
    saved_page,
    stop_unread,
)

import app
import guards
import logs
from deploy.audit import result_text
from deploy.servers import free_port, spawn, wait_until_listening


def test_each_request_logs_one_line_without_form_values(testapp, log):
    testapp.post("/", example(age=["secret-age"]), status=422)
    testapp.get("/?age=secret-query")
    lines = log()
    # level:logger:client scheme method path status duration
    assert [line.split()[:5] for line in lines] == [
        ["INFO:access:-", "http", "POST", "/", "422"],
        ["INFO:access:-", "http", "GET", "/", "200"],
    ]
    assert all(line.endswith("ms") for line in lines)
    assert "secret" not in "".join(lines)


@pytest.mark.parametrize("path", ["/ 200 0.1ms", "/a b", '/"quoted"', "/100%", "/café"])
def test_the_logged_path_is_one_unambiguous_token(testapp, log, path):
    testapp.get(quote(path), status=404)  # `GET /%20200%200.1ms` once read as a 200 in the log
    [line] = log()
    fields = line.split(" ")
    assert len(fields) == 6 and fields[4] == "404" and fields[5].endswith("ms")
    assert unquote(fields[3]) == path


def test_the_saved_pages_token_is_never_logged(testapp, log, database):
    # The token is a bearer secret: whoever reads it in the log could read the person's answers.
    saved = testapp.post("/", example(token=["A" * 22]), status=303)
    testapp.get(saved.headers["Location"])
    testapp.get("/saved/" + "B" * 22, status=404)  # unknown
    testapp.get("/saved/%43" + "C" * 21, status=404)  # escaped, as the app decodes it
    testapp.get("/saved/" + "D" * 23, status=404)  # mistyped
    lines = log()
    assert [line.split(" ")[2:5] for line in lines[1:]] == [
        ["GET", "/saved/<token>", code] for code in ["200", "404", "404", "404"]
    ]
    assert not any(letter * 21 in "".join(lines) for letter in "ABCD")


def test_an_empty_path_is_logged_as_a_dash(testapp, log):
    # `GET ?x` and absolute-form targets reach the app with an empty path, which Bottle serves as /.
    testapp.get("/", extra_environ={"PATH_INFO": ""})
    [line] = log()
    assert line.split(" ")[2:5] == ["GET", "-", "200"]


def test_a_paths_usual_characters_are_logged_as_sent(testapp, log):
    path = "/a:b@c!$&'*+,;=~d"
    testapp.get(path, status=404)
    [line] = log()
    assert line.split(" ")[2:5] == ["GET", path, "404"]


REQUEST = {
    "REMOTE_ADDR": "203.0.113.9",
    "wsgi.url_scheme": "https",
    "REQUEST_METHOD": "GET",
    "bottle.raw_path": "/",
}


# The caps are pinned on purpose: the path's is docs/deployment.md's, the others fit any real
# address or method. A field is capped only when longer: its exact length passes whole.
@pytest.mark.parametrize(("name", "limit"), [("REMOTE_ADDR", 50), ("REQUEST_METHOD", 20)])
def test_the_client_address_and_method_are_logged_capped(log, name, limit):
    field = {"REMOTE_ADDR": 0, "REQUEST_METHOD": 2}[name]
    for text in ["a" * limit, "a" * (limit + 1)]:
        logs.access({**REQUEST, name: text}, "200 OK", 0.0)
    whole, capped = (line.removeprefix("INFO:access:").split(" ")[field] for line in log())
    assert whole == "a" * limit
    assert capped == "a" * limit + f"...({limit + 1}B)"


def test_a_path_is_logged_whole_up_to_200_characters(log):
    for path in ["/" + "a" * 199, "/" + "a" * 200]:
        logs.access({**REQUEST, "bottle.raw_path": path}, "404 Not Found", 0.0)
    whole, capped = (line.split(" ")[3] for line in log())
    assert whole == "/" + "a" * 199
    assert capped == "/" + "a" * 199 + "...(201B)"


def test_what_a_request_lacks_is_logged_as_a_dash(log):
    logs.access({}, "200 OK", 0.0)
    assert log() == ["INFO:access:- - - - 200 0.0ms"]


def test_text_a_server_gives_outside_latin_1_is_logged_not_raised(log):
    # PEP 3333 servers give latin-1 text; another server's text must not cost the answer.
    logs.access({**REQUEST, "REMOTE_ADDR": "203.0.113.9\u2028"}, "200 OK", 0.0)
    assert log() == ["INFO:access:203.0.113.9%3F https GET / 200 0.0ms"]


def test_the_logged_duration_is_the_time_the_app_took(testapp, log, monkeypatch):
    clock = iter([10.0, 10.25])  # when the request came in, when the app was done with it
    monkeypatch.setattr(guards, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    testapp.get("/healthz")
    [line] = log()
    assert line.endswith(" 200 250.0ms")


def test_a_crash_bottle_does_not_catch_is_logged_as_a_500(testapp, log, monkeypatch):
    # Bottle answers most errors itself, but lets MemoryError through to the server.
    def out_of_memory(form):
        raise MemoryError

    monkeypatch.setattr(app, "validate", out_of_memory)
    with pytest.raises(MemoryError):
        testapp.post("/", example())
    [line] = log()
    assert line.split(" ")[4] == "500"


def test_a_long_path_is_logged_capped(testapp, log):
    testapp.get("/" + "%01" * 5000, status=404)
    testapp.get("/x...(999B)", status=404)  # a path that looks like the mark of a capped one
    long, looks_capped = log()
    assert len(long) < 300
    assert "...(15001B)" in long
    assert "/x...%28999B%29 " in looks_capped


def test_a_forwarded_client_address_is_one_token(testapp, log):
    # Waitress takes REMOTE_ADDR from X-Forwarded-For when the trusted proxy sends it.
    forged = "203.0.113.9 https GET /admin 200 0.1ms\x85"
    testapp.get("/healthz", extra_environ={"REMOTE_ADDR": forged})
    [line] = log()
    fields = line.split()
    assert fields[1:4] == ["http", "GET", "/healthz"]
    assert fields[0].startswith("INFO:access:203.0.113.9%20https%20GET%20/admin")


def test_waitress_messages_are_one_line_each_with_controls_escaped(log):
    # Waitress puts the request's decoded path in some of its messages.
    path = "/x\naccess: 127.0.0.1 http GET /forged 200 1.0ms\r\x1b[2J"
    logger = logging.getLogger("waitress")
    logger.info("Client disconnected while serving " + path)
    try:
        raise ValueError(path)
    except ValueError:
        logger.exception("Exception while serving %s", path)
    lines = log()
    assert len(lines) == 2
    assert lines[0] == (
        "INFO:waitress:Client disconnected while serving /x\\naccess: 127.0.0.1 http GET "
        "/forged 200 1.0ms\\r\\x1b[2J"
    )
    assert lines[1].startswith("ERROR:waitress:Exception while serving /x\\naccess:")
    assert "Traceback" in lines[1] and "ValueError" in lines[1]


# time.monotonic() counts from an undefined point: on Linux, the boot.
@pytest.mark.parametrize("start", [0.0, 1000.0])
def test_task_queue_warnings_are_summarised_not_flooded(log, monkeypatch, start):
    clock = [start]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    warnings = logging.getLogger("waitress.queue")
    for suppressed in [999, 5]:
        for depth in range(1, suppressed + 2):
            warnings.warning("Task queue depth is %d", depth)
        clock[0] += logs.QUIET
    warnings.warning("Task queue depth is %d", 1)
    assert log() == [
        "WARNING:waitress.queue:Task queue depth is 1",
        "WARNING:waitress.queue:Task queue depth is 1 (999 more since the last one logged)",
        "WARNING:waitress.queue:Task queue depth is 1 (5 more since the last one logged)",
    ]


class StalledStream:
    """A log stream that takes no more: each write waits until the test lets it go."""

    def __init__(self):
        self.writing = threading.Event()
        self.flowing = threading.Event()
        self.text = io.StringIO()

    def write(self, text):
        self.writing.set()
        self.flowing.wait()
        self.text.write(text)

    def flush(self):
        pass


def test_a_stalled_log_costs_lines_never_answers_and_says_so_later(testapp, monkeypatch):
    monkeypatch.setattr(logs, "QUEUE_LINES", 5)
    stream = StalledStream()
    listener = logs.configure(stream)
    try:
        started = time.monotonic()
        for _ in range(50):
            testapp.get("/healthz")
        assert time.monotonic() - started < 10  # answered, not stuck behind the stream
        stream.flowing.set()
        logs.flush(listener)
    finally:
        logs.configure(io.StringIO())  # back to the tests' sink
    lines = stream.text.getvalue().splitlines()
    said = [line for line in lines if line.startswith("WARNING:logs:")]
    lost = sum(int(line.split(":")[2].split()[0]) for line in said)
    assert lost > 0 and len(lines) - len(said) + lost == 50  # every line written or counted


def test_the_queue_holds_its_limit_and_counts_the_rest():
    writer = logs.LineWriter(io.StringIO())
    logs.flush(writer)  # no writer thread: what is queued stays there
    writer.limit = 2
    for number in range(3):
        writer.emit(logging.makeLogRecord({"msg": f"line {number}"}))
    assert writer.lines.qsize() == 2
    assert writer.lost.take() == 1


def test_lines_that_cannot_be_written_are_counted_with_those_lost_before():
    writer = logs.LineWriter(ClosedStream())
    logs.flush(writer)
    writer.lost.add(3)
    writer.write(["INFO:app:a", "INFO:app:b"])
    assert writer.lost.take() == 5  # the 3, and the 2 that failed now: not the warning line


def test_the_writer_thread_ends_at_the_end_mark_and_never_holds_the_exit():
    writer = logs.LineWriter(io.StringIO())
    # A daemon: Python waits for other threads before atexit runs flush(), so a writer that
    # was not one would hold the process for ever. Named, for a stack dump (py-spy, faulthandler).
    assert writer.thread.daemon and writer.thread.name == "log writer"
    logs.flush(writer)
    assert not writer.thread.is_alive()


def test_lost_lines_are_counted_before_the_next_line_written():
    stream = io.StringIO()
    writer = logs.LineWriter(stream)
    writer.lost.add(3)
    writer.write(["INFO:app:next"])
    logs.flush(writer)
    assert stream.getvalue().splitlines() == [
        "WARNING:logs:3 log lines lost: the stream was full or closed",
        "INFO:app:next",
    ]
    assert writer.lost.take() == 0


@pytest.mark.parametrize("queued", [0, 1], ids=["queue with room", "queue full"])
def test_a_stalled_log_holds_the_exit_up_2_s_at_most(monkeypatch, queued):
    # logs.flush runs at exit (atexit): it must not wait for ever for a stream that takes nothing.
    monkeypatch.setattr(logs, "QUEUE_LINES", 1)
    stream = StalledStream()
    listener = logs.configure(stream)
    try:
        logs.APP.info("being written")
        assert stream.writing.wait(5)
        for _ in range(queued):
            logs.APP.info("queued")
        flushing = threading.Thread(target=logs.flush, args=(listener,))
        started = time.monotonic()
        flushing.start()
        flushing.join(10)
        waited = time.monotonic() - started
    finally:
        stream.flowing.set()
        logs.configure(io.StringIO())  # back to the tests' sink
    assert 1.9 < waited < 2.9


def test_lines_still_queued_at_exit_are_written(monkeypatch):
    at_exit = []
    monkeypatch.setattr(atexit, "register", lambda *call: at_exit.append(call))
    stream = StalledStream()
    logs.configure(stream)
    try:
        for number in range(3):
            logs.APP.info("line %d", number)
        stream.flowing.set()
        for function, *args in at_exit:
            function(*args)
    finally:
        logs.configure(io.StringIO())  # back to the tests' sink
    assert stream.text.getvalue().splitlines() == [f"INFO:app:line {n}" for n in range(3)]


def test_flushing_writes_what_is_queued_without_waiting_out_the_batch(monkeypatch):
    monkeypatch.setattr(logs, "BATCH_SECONDS", 60)  # were flush() to wait it out: 60 s
    stream = io.StringIO()
    writer = logs.LineWriter(stream)
    writer.emit(logging.makeLogRecord({"msg": "queued"}))
    logs.flush(writer, timeout=5)
    assert not writer.thread.is_alive()
    assert stream.getvalue().endswith(":queued\n")


def test_configuring_the_log_again_replaces_it():
    stream = io.StringIO()
    listeners = [logs.configure(stream), logs.configure(stream)]
    try:
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, logs.LineWriter)]
        assert not listeners[0].thread.is_alive()  # ended by the second call, not left waiting
        logs.APP.info("once")
        for listener in listeners:
            logs.flush(listener)
    finally:
        logs.configure(io.StringIO())  # back to the tests' sink
    assert handlers == listeners[1:]  # the first is gone, not left to fill a queue nobody reads
    assert stream.getvalue().splitlines() == ["INFO:app:once"]


def test_only_the_last_writer_is_flushed_at_exit(monkeypatch):
    at_exit = []

    def unregister(function):
        at_exit[:] = [call for call in at_exit if call[0] is not function]

    monkeypatch.setattr(atexit, "register", lambda *call: at_exit.append(call))
    monkeypatch.setattr(atexit, "unregister", unregister)
    try:
        writers = [logs.configure(io.StringIO()) for _ in range(3)]
        registered = list(at_exit)
    finally:
        logs.configure(io.StringIO())  # back to the tests' sink
    assert registered == [(logs.flush, writers[-1])]  # the others were flushed when replaced


def test_a_log_call_with_wrong_arguments_logs_that_and_raises_nothing():
    stream = io.StringIO()
    writer = logs.LineWriter(stream)
    record = logging.getLogger("waitress").makeRecord(
        "waitress", logging.WARNING, "x.py", 1, "%d connections", ("many",), None
    )
    writer.emit(record)  # as the logger calls it; pytest's own log handler would raise here
    logs.flush(writer)
    assert stream.getvalue() == "ERROR:logs:a WARNING line from waitress could not be formatted\n"


# Bottle writes a traceback to wsgi.errors (logs.ERRORS) as one string; other code may write
# anything: each write is one record, as given, less its final newlines.
@pytest.mark.parametrize(
    ("written", "logged"),
    [
        (
            "Traceback (most recent call last):\nValueError: x\n\n",
            "ERROR:app:Traceback (most recent call last):\\nValueError: x",
        ),
        ("\nafter a blank line\n", "ERROR:app:\\nafter a blank line"),
        ("spaces at the end \t\n", "ERROR:app:spaces at the end \\t"),
        ("no box X", "ERROR:app:no box X"),
    ],
)
def test_what_is_written_to_the_wsgi_error_stream_is_logged_as_one_line(log, written, logged):
    logs.ERRORS.write(written)
    logs.ERRORS.flush()
    assert log() == [logged]


def test_lines_written_together_to_the_wsgi_error_stream_are_one_line(log):
    logs.ERRORS.writelines(["Traceback (most recent call last):\n", "ValueError: x\n"])
    assert log() == ["ERROR:app:Traceback (most recent call last):\\nValueError: x"]


class ClosedStream:
    """A log stream that fails every write, as a closed or broken one does."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


@pytest.mark.parametrize("stream", [ClosedStream(), None], ids=["broken", "closed"])
def test_a_broken_or_closed_log_stream_does_not_fail_the_request(testapp, monkeypatch, stream):
    monkeypatch.setattr("sys.stderr", stream)  # None: started with `2>&-`
    listener = logs.configure()
    try:
        assert app.TITLE in testapp.get("/").text
        saved = saved_page(testapp.post("/", example()))
        assert result_line(saved) == result_text(cleaned())
        logs.flush(listener)
    finally:
        monkeypatch.undo()
        logs.configure(io.StringIO())  # back to the tests' sink


def request_over(sock: socket.socket, request: bytes) -> bytes:
    """Send one request on a kept-alive connection and return its answer's status line, once
    the whole answer (its Content-Length) has come."""
    sock.sendall(request)
    answer = b""
    while not complete(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def complete(answer: bytes) -> bool:
    """Tell whether a raw answer has its head and as much body as its Content-Length says."""
    head, blank, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *([0-9]+)", head, re.IGNORECASE)
    return bool(blank) and len(body) >= int(length[1] if length else 0)


@pytest.mark.parametrize("command", list(SERVER_COMMANDS))
def test_a_real_server_answers_while_nobody_reads_its_log(command):
    # A pipe that holds 4 KiB (a page; 64 KiB by default): about 100 access lines fill it, and
    # then writes to it block.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    port = free_port()
    with os.fdopen(write_end, "wb") as out:
        process = spawn(SERVER_COMMANDS[command], {"HOST": "127.0.0.1", "PORT": str(port)}, out)
    try:
        assert wait_until_listening(process, port)
        body = encoded()
        post = (
            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            statuses = {request_over(sock, post) for _ in range(300)}  # the pipe 3 times over
        assert statuses == {b"HTTP/1.1 303 See Other"}
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            health = request_over(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert health == b"HTTP/1.1 200 OK"
    finally:
        assert stop_unread(process, read_end) == 0


@pytest.mark.parametrize("command", list(SERVER_COMMANDS))
def test_a_real_server_started_with_stderr_closed_answers(command):
    port = free_port()
    process = spawn(SERVER_COMMANDS[command] + " 2>&-", {"HOST": "127.0.0.1", "PORT": str(port)})
    try:
        assert wait_until_listening(process, port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert request_over(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.1 200 OK"
    finally:
        process.terminate()
        assert process.wait(30) == 0
