"""Running it: entry points, settings, health check, access log, working directory."""

import http.client
import json
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import bottle
import pytest
import waitress
import webtest
from helpers import SERVER_COMMANDS, exchange
from waitress.adjustments import Adjustments

import app
import guards
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


def test_a_hook_added_to_the_app_applies_to_every_route(testapp):
    # One request path: a hook someone adds (a login, a rate limit) sees every request.
    static = next(route.rule for route in app.app.routes if route.callback is app.static)
    saved = next(route.rule for route in app.app.routes if route.callback is app.show_saved)
    paths = {
        "/": "/",
        "/healthz": "/healthz",
        "/results": "/results",
        "/results.csv": "/results.csv",
        static: "/static/style.css",
        saved: "/saved/" + "A" * 22,
    }
    assert {route.rule for route in app.app.routes} == set(paths)

    def refuse_everything():
        bottle.abort(403)

    app.app.add_hook("before_request", refuse_everything)
    try:
        for route in app.app.routes:  # one a method: GET, HEAD and POST of /, ...
            testapp.request(paths[route.rule], method=route.method, status=403)
    finally:
        app.app.remove_hook("before_request", refuse_everything)
    testapp.get("/", status=200)


def test_the_health_check_is_plain_text(testapp):
    res = testapp.get("/healthz")
    assert res.content_type == "text/plain"
    assert res.text == "ok\n"


def output_once(server, has, timeout: float = 10) -> str:
    """Return the server's output once `has(output)` holds: one thread writes the log, a moment
    after the event."""
    deadline = time.monotonic() + timeout
    while not has(output := server.output()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return output


def test_real_servers_log_each_request_and_where_they_listen(server):
    said = f"Serving on http://127.0.0.1:{server.port}"
    assert said in output_once(server, lambda output: said in output)
    # Earlier tests' lines may still be on their way (one thread writes them, in order): this
    # test's lines begin after the line of a request of its own.
    client = webtest.TestApp(server.url)
    client.get("/this-test-starts-here", status=404)
    output = output_once(server, lambda output: "/this-test-starts-here" in output)
    before = output.index("\n", output.rindex("/this-test-starts-here")) + 1
    client.post("/logged", {"age": "secret-age"}, status=404)
    forged = "/x%0Aaccess:%20GET%20/forged%20200%201.0ms"  # a newline, then a fake log line
    exchange(server, f"GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    output = output_once(server, lambda output: len(output[before:].splitlines()) >= 2)
    lines = output[before:].splitlines()
    assert [line.split()[:5] for line in lines] == [
        ["INFO:access:127.0.0.1", "http", "POST", "/logged", "404"],
        [
            "INFO:access:127.0.0.1",
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


@pytest.mark.parametrize("name", ["app", "application"])
def test_every_name_for_the_app_serves_the_whole_app(tmp_path, name):
    # `waitress-serve app:app` is Bottle's usual spelling: it must get the headers and the log.
    command = SERVER_COMMANDS["procfile"].replace("app:application", f"app:{name}")
    server = start_server(command, tmp_path / "server.log")
    try:
        res = webtest.TestApp(server.url).get("/")
    finally:
        server.stop()
    assert dict(guards.SECURITY_HEADERS).items() <= dict(res.headers).items()
    assert "INFO:access:127.0.0.1 http GET / 200 " in server.output()


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        # Which ports main() refuses, and what it says, is tests/test_main.py's: here, that the
        # process prints it as one line and exits 1, and Waitress's own refusals of a host.
        ({"PORT": "eighty"}, "PORT must be a port number from 1 to 65535, not 'eighty'"),
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
    # With a 1 s timeout instead of 95, so the test is short; the Procfile's cleanup interval
    # decides how late past the timeout the close comes (Waitress's default made it 30 s late).
    command = re.sub(r"--channel-timeout=\d+", "--channel-timeout=1", procfile_web_command())
    server = start_server(command, tmp_path / "server.log")
    try:
        with socket.create_connection((server.host, server.port), timeout=15) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server
            waited = time.monotonic() - started
    finally:
        server.stop()
    assert 1 <= waited < 1 + app.SERVER["cleanup_interval"] + 5


def test_each_answer_leaves_in_one_send_so_a_crash_cannot_cut_it(monkeypatch):
    # An instance killed between sending an answer's head and its body cuts the answer short,
    # and nginx, which has passed the head on, cannot retry it elsewhere: app.SERVER's send_bytes.
    sends = []
    original = waitress.channel.HTTPChannel.send

    def send(channel, data, do_close=True):
        sends.append(bytes(data))
        return original(channel, data, do_close)

    monkeypatch.setattr(waitress.channel.HTTPChannel, "send", send)
    server = waitress.create_server(app.application, host="127.0.0.1", port=0, **app.SERVER)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
        for path in ("/", "/static/style.css", "/static/favicon.svg", "/nowhere"):
            conn.request("GET", path)
            answer = conn.getresponse()
            body = answer.read()
            assert sends[-1].startswith(b"HTTP/1.1 ") and sends[-1].endswith(body), path
        conn.close()
    finally:
        server.close()
    assert all(data.startswith(b"HTTP/1.1 ") for data in sends), [d[:20] for d in sends]
