"""Running it: entry points, settings, health check, access log, working directory."""

import runpy
import shlex
import sys

import bottle
import waitress
import webtest
from helpers import ROOT, SERVER_COMMANDS, exchange, procfile_web_command, start_server
from waitress.adjustments import Adjustments

import app

LISTEN = "${HOST:-0.0.0.0}:${PORT:?set PORT to the port to listen on}"  # the Procfile's address


def test_the_procfile_and_app_py_use_the_same_server_settings():
    options, _ = Adjustments.parse_args(shlex.split(procfile_web_command())[1:])
    assert options.pop("listen").strip() == LISTEN
    assert options.pop("call") is False and options.pop("help") is False
    assert set(options) == set(app.SERVER)
    procfile, app_py = Adjustments(**options), Adjustments(**app.SERVER)
    assert {name: getattr(procfile, name) for name in app.SERVER} == {
        name: getattr(app_py, name) for name in app.SERVER
    }


def test_the_health_check_is_plain_text(testapp):
    res = testapp.get("/healthz")
    assert res.content_type == "text/plain"
    assert res.text == "ok\n"


def test_each_request_logs_one_line_without_form_values(wsgiapp, capsys):
    wsgiapp.post("/", {"age": "secret-age", "hobbies": "software"}, status=422)
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
    monkeypatch.setattr(sys, "stderr", BrokenStream())
    wsgiapp.get("/").mustcontain("Age and hobbies")
    wsgiapp.post("/", {"age": "34"}).mustcontain("Age: 34")


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


def test_templates_are_found_from_any_working_directory(wsgiapp, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bottle, "TEMPLATES", {})
    wsgiapp.post("/", {"age": "34"}).mustcontain("Age: 34")  # rendered now, not cached
    wsgiapp.get("/nope", status=404).mustcontain("Back to the form")


def test_app_py_runs_from_another_directory(tmp_path):
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'app.py'))}"
    server = start_server(command, tmp_path / "server.log", cwd=tmp_path)
    try:
        webtest.TestApp(server.url).get("/").mustcontain("Age and hobbies")
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
