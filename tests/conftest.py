"""Fixtures: the app in-process, on real Waitress servers started as in production, behind nginx."""

import pytest
import webtest
from helpers import SERVER_COMMANDS, raise_open_file_limit, start_proxy

import app
from deploy.servers import start_server


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """Start each real server on first use, by name; stop them all at the end of the run."""
    started = {}

    def get(name):
        if name not in started:
            log = tmp_path_factory.mktemp("server") / "server.log"
            started[name] = start_server(SERVER_COMMANDS[name], log)
        return started[name]

    yield get
    for running in started.values():
        running.stop()


@pytest.fixture(scope="session")
def proxy(tmp_path_factory):
    """The app behind nginx, started by deploy/run_proxy.py as `make run-proxy` starts it."""
    raise_open_file_limit()  # nginx inherits it: tests/test_proxy.py opens 600 connections to it
    running = start_proxy(tmp_path_factory.mktemp("proxy"))
    yield running
    assert running.server.stop() == 0, running.server.output()


@pytest.fixture(params=list(SERVER_COMMANDS))
def server(request, servers):
    """The app on a real Waitress server: from the Procfile's web: line, then from app.py."""
    return servers(request.param)


@pytest.fixture
def wsgiapp():
    """The WSGI application in-process, with WebTest's lint on."""
    return webtest.TestApp(app.application)


@pytest.fixture(params=["in-process", *SERVER_COMMANDS])
def testapp(request, servers):
    """The app as a webtest.TestApp: in-process, then on each real server."""
    if request.param == "in-process":
        return webtest.TestApp(app.application)
    return webtest.TestApp(servers(request.param).url)
