"""Running it: entry points, settings, health check, access log, working directory."""

import functools
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote

import bottle
import pytest
import waitress
import webtest
from helpers import SERVER_COMMANDS, example, exchange
from waitress.adjustments import Adjustments

import app
from deploy.servers import ROOT, procfile_web_command, start_server

LISTEN = "${HOST:-0.0.0.0}:${PORT:?set PORT to the port to listen on}"  # the Procfile's address


def procfile_words(environ: dict) -> list[str]:
    """Return the Procfile's command as the shell hands it to waitress-serve, in an environment."""
    command = f"printf '%s\\0' {procfile_web_command()}"
    env = {"PATH": os.environ["PATH"], "PORT": "8000", **environ}
    out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


def app_py_server(environ: dict) -> dict:
    """Return app.SERVER as app.py builds it in an environment (in a process of its own)."""
    code = "import app, json; print(json.dumps(app.SERVER, default=sorted))"
    env = {name: value for name, value in os.environ.items() if name != "TRUSTED_PROXY"}
    env.update(environ)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("environ", [{}, {"TRUSTED_PROXY": "10.0.0.1"}], ids=["default", "set"])
def test_the_procfile_and_app_py_use_the_same_server_settings(environ):
    assert f"--listen={LISTEN}" in shlex.split(procfile_web_command())
    words = procfile_words({"HOST": "127.0.0.1", **environ})
    options, _ = Adjustments.parse_args(words[1:])
    assert options.pop("listen").strip() == "127.0.0.1:8000"
    assert options.pop("call") is False and options.pop("help") is False
    server = app_py_server(environ)
    assert set(options) == set(server)
    procfile, app_py = Adjustments(**options), Adjustments(**server)
    assert {name: getattr(procfile, name) for name in server} == {
        name: getattr(app_py, name) for name in server
    }
    assert procfile.trusted_proxy == environ.get("TRUSTED_PROXY", "127.0.0.1")


def test_the_health_check_is_plain_text(testapp):
    res = testapp.get("/healthz")
    assert res.content_type == "text/plain"
    assert res.text == "ok\n"


def test_the_form_is_sent_as_bottle_routes_it(wsgiapp):
    # app.wsgi answers GET / before Bottle's routing, for speed: it must send what the route does.
    routed = webtest.TestApp(functools.partial(bottle.Bottle.wsgi, app.app)).get("/")
    sent = wsgiapp.get("/?age=34")  # a query changes nothing
    assert (sent.status, sent.body) == (routed.status, routed.body)
    assert sent.headerlist == routed.headerlist + app.SECURITY_HEADERS


def test_each_request_logs_one_line_without_form_values(wsgiapp, capsys):
    wsgiapp.post("/", example(age=["secret-age"]), status=422)
    wsgiapp.get("/?age=secret-query")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    # access: client scheme method path status duration
    assert [line.split()[:6] for line in lines] == [
        ["access:", "-", "http", "POST", "/", "422"],
        ["access:", "-", "http", "GET", "/", "200"],
    ]
    assert all(line.endswith("ms") for line in lines)
    assert "secret" not in "".join(lines)


class BrokenStream:
    """A log stream whose reader has gone away."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_log_stream_does_not_fail_the_request(wsgiapp, monkeypatch):
    monkeypatch.setattr(sys, "stderr", BrokenStream())  # plain asserts: mustcontain logs there
    assert app.TITLE in wsgiapp.get("/").text
    assert f"Age: {app.EXAMPLE['age'][0]}" in wsgiapp.post("/", example()).text


def test_real_servers_log_each_request_and_where_they_listen(server):
    assert f"Serving on http://127.0.0.1:{server.port}" in server.output()
    before = len(server.output())
    webtest.TestApp(server.url).post("/logged", {"age": "secret-age"}, status=404)
    forged = "/x%0Aaccess:%20GET%20/forged%20200%201.0ms"  # a newline, then a fake log line
    exchange(server, f"GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    lines = server.output()[before:].splitlines()
    assert [line.split()[:6] for line in lines] == [
        ["access:", "127.0.0.1", "http", "POST", "/logged", "404"],
        [
            "access:",
            "127.0.0.1",
            "http",
            "GET",
            "/x%0Aaccess:%20GET%20/forged%20200%201.0ms",
            "404",
        ],
    ]
    assert "secret" not in server.output()


def test_app_py_runs_from_another_directory(tmp_path):
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'app.py'))}"
    server = start_server(command, tmp_path / "server.log", cwd=tmp_path)
    try:
        webtest.TestApp(server.url).get("/").mustcontain(app.TITLE)
    finally:
        server.stop()


def test_a_form_that_cannot_render_stops_the_app_at_start(tmp_path):
    # GET / is answered outside Bottle, so its page must be known good before the first request.
    for name in ("app.py", "shutdown.py", "views", "static"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, tmp_path / name)
    form = tmp_path / "views" / "form.tpl"
    form.write_text(form.read_text() + "{{no_such_name}}\n")
    command = [sys.executable, "-c", "import app"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "no_such_name" in run.stderr


def test_app_py_listens_on_loopback_8080_by_default(monkeypatch):
    calls = []
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.setattr(waitress, "serve", lambda app, **kwargs: calls.append(kwargs))
    runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
    assert calls == [{"host": "127.0.0.1", "port": 8080, **app.SERVER}]


def test_the_procfile_listens_on_all_interfaces_by_default(tmp_path):
    server = start_server(SERVER_COMMANDS["procfile"], tmp_path / "log", environ={"HOST": None})
    server.stop()
    assert f"Serving on http://0.0.0.0:{server.port}" in server.output()


@pytest.mark.parametrize("path", ["/ 200 0.1ms", "/a b", '/"quoted"', "/100%"])
def test_the_logged_path_is_one_unambiguous_token(wsgiapp, capsys, path):
    wsgiapp.get(quote(path), status=404)  # `GET /%20200%200.1ms` once read as a 200 in the log
    [line] = capsys.readouterr().err.splitlines()
    fields = line.split(" ")
    assert len(fields) == 7 and fields[5:] == ["404", fields[6]] and fields[6].endswith("ms")
    assert unquote(fields[4]) == path


def test_text_is_logged_as_is_only_where_percent_encoding_would_keep_it():
    # loggable() skips quote() for text that LOGS_AS_IS matches: the two must agree on each byte.
    for code in range(256):
        char = chr(code)
        assert bool(app.LOGS_AS_IS.fullmatch(char)) == (
            quote(char.encode("latin-1"), safe=app.LOG_SAFE) == char
        )
        assert app.loggable(f"/{char}x") == quote(f"/{char}x".encode("latin-1"), safe=app.LOG_SAFE)


def test_an_empty_path_is_logged_as_a_dash(wsgiapp, capsys):
    # `GET ?x` and absolute-form targets reach the app with an empty path, which Bottle serves as /.
    wsgiapp.get("/", extra_environ={"PATH_INFO": ""})
    [line] = capsys.readouterr().err.splitlines()
    assert line.split(" ")[3:6] == ["GET", "-", "200"]


def test_a_long_path_is_logged_capped(wsgiapp, capsys):
    wsgiapp.get("/" + "%01" * 5000, status=404)
    wsgiapp.get("/x...(999B)", status=404)  # a path that looks like the mark of a capped one
    long, looks_capped = capsys.readouterr().err.splitlines()
    assert len(long) < 300
    assert "...(15001B)" in long
    assert "/x...%28999B%29 " in looks_capped


def test_a_forwarded_client_address_is_one_token(wsgiapp, capsys):
    # Waitress takes REMOTE_ADDR from X-Forwarded-For when the trusted proxy sends it.
    forged = "203.0.113.9 https GET /admin 200 0.1ms\x85"
    wsgiapp.get("/healthz", extra_environ={"REMOTE_ADDR": forged})
    [line] = capsys.readouterr().err.splitlines()
    fields = line.split()
    assert fields[2:5] == ["http", "GET", "/healthz"]
    assert fields[1].startswith("203.0.113.9%20https%20GET%20/admin")


def waitress_lines(capsys, log) -> list[str]:
    """Log through Waitress's own loggers, as the process does; return the stderr lines."""
    handler, waitress_logger = logging.StreamHandler(sys.stderr), logging.getLogger("waitress")
    level = waitress_logger.level
    logging.getLogger().addHandler(handler)
    waitress_logger.setLevel(logging.INFO)  # as waitress-serve and app.py set it
    try:
        log()
    finally:
        logging.getLogger().removeHandler(handler)
        waitress_logger.setLevel(level)
    return capsys.readouterr().err.splitlines()


def test_waitress_messages_are_one_line_each_with_controls_escaped(capsys):
    # Waitress puts the request's decoded path in some of its messages.
    path = "/x\naccess: 127.0.0.1 http GET /forged 200 1.0ms\r\x1b[2J"

    def log():
        logger = logging.getLogger("waitress")
        logger.info("Client disconnected while serving " + path)
        try:
            raise ValueError(path)
        except ValueError:
            logger.exception("Exception while serving %s", path)

    lines = waitress_lines(capsys, log)
    assert len(lines) == 2
    assert lines[0] == "Client disconnected while serving /x\\naccess: 127.0.0.1 http GET " + (
        "/forged 200 1.0ms\\r\\x1b[2J"
    )
    assert lines[1].startswith("Exception while serving /x\\naccess:")
    assert "Traceback" in lines[1] and "ValueError" in lines[1]


def test_task_queue_warnings_are_summarised_not_flooded(capsys, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(app.ONE_LINE, "next_queue_warning", 0.0)

    def log():
        queue = logging.getLogger("waitress.queue")
        for depth in range(1, 1001):
            queue.warning("Task queue depth is %d", depth)
        clock[0] += app.OneLineRecords.QUIET
        queue.warning("Task queue depth is %d", 1)

    lines = waitress_lines(capsys, log)
    assert lines == [
        "Task queue depth is 1",
        "Task queue depth is 1 (999 more since the last one logged)",
    ]


@pytest.mark.parametrize("name", ["app", "application"])
def test_every_name_for_the_app_serves_the_whole_app(tmp_path, name):
    # `waitress-serve app:app` is Bottle's usual spelling: it must get the headers and the log.
    command = SERVER_COMMANDS["procfile"].replace("app:application", f"app:{name}")
    server = start_server(command, tmp_path / "server.log")
    try:
        res = webtest.TestApp(server.url).get("/")
    finally:
        server.stop()
    assert dict(app.SECURITY_HEADERS).items() <= dict(res.headers).items()
    assert "access: 127.0.0.1 http GET / 200 " in server.output()


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"PORT": "eighty"}, "PORT must be a port number from 1 to 65535, not 'eighty'"),
        ({"PORT": "70000"}, "PORT must be a port number from 1 to 65535, not '70000'"),
        ({"PORT": "²"}, "PORT must be a port number from 1 to 65535, not '²'"),
        ({"PORT": "٨٠٨٠"}, "PORT must be a port number from 1 to 65535, not '٨٠٨٠'"),
        ({"HOST": "no-such-host.invalid"}, "cannot listen on no-such-host.invalid:"),
        ({"HOST": "192.0.2.1"}, "cannot listen on 192.0.2.1:"),
    ],
)
def test_app_py_with_a_bad_address_says_so_in_one_line(environ, says):
    run = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "8080", **environ},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert line.startswith(says)


def test_the_procfile_without_port_fails_at_once_and_says_why():
    command = procfile_web_command()
    env = {name: value for name, value in os.environ.items() if name != "PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    run = subprocess.run(
        ["sh", "-c", f"exec {command}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0
    assert "set PORT to the port to listen on" in run.stderr


def test_idle_connections_are_closed_soon_after_the_channel_timeout(tmp_path):
    # With a 2 s timeout instead of 30, so the test is short; the Procfile's cleanup interval
    # decides how late past the timeout the close comes (Waitress's default made it 30 s late).
    command = re.sub(r"--channel-timeout=\d+", "--channel-timeout=2", procfile_web_command())
    server = start_server(command, tmp_path / "server.log")
    try:
        with socket.create_connection((server.host, server.port), timeout=15) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server
            waited = time.monotonic() - started
    finally:
        server.stop()
    assert 2 <= waited < 2 + app.SERVER["cleanup_interval"] + 5
