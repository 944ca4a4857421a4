"""main(), in-process: where `python app.py` listens, and what it says when it cannot.

waitress.serve is replaced, so no server starts; tests/test_operations.py starts the real one.
"""

import pytest
import waitress

import app


def run_main(monkeypatch, environ: dict[str, str], refusal: Exception | None = None) -> list:
    """Run app.main() with only the given HOST and PORT set; return the calls to waitress.serve,
    which raises `refusal` if given, as it does for an address it cannot listen on."""
    calls = []

    def serve(application, **settings):
        calls.append((application, settings))
        if refusal is not None:
            raise refusal

    for name in ("HOST", "PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(waitress, "serve", serve)
    app.main()
    return calls


@pytest.mark.parametrize(
    ("environ", "host", "port"),
    [
        ({}, "127.0.0.1", 8080),
        ({"HOST": "127.0.0.2", "PORT": "9000"}, "127.0.0.2", 9000),
        ({"PORT": "1"}, "127.0.0.1", 1),
        ({"PORT": "65535"}, "127.0.0.1", 65535),
    ],
)
def test_main_serves_the_app_where_host_and_port_say(monkeypatch, environ, host, port):
    calls = run_main(monkeypatch, environ)
    assert calls == [(app.application, {"host": host, "port": port, **app.SERVER})]


@pytest.mark.parametrize("port", ["0", "65536", "-1", "", " 80", "eighty", "²", "٨٠٨٠"])
def test_a_port_that_is_not_a_port_number_stops_main_with_why(monkeypatch, port):
    with pytest.raises(SystemExit) as stop:
        run_main(monkeypatch, {"PORT": port})
    assert stop.value.code == f"PORT must be a port number from 1 to 65535, not {port!r}"


@pytest.mark.parametrize(
    "refusal",
    [OSError(99, "Cannot assign requested address"), ValueError("Invalid host")],
    ids=["address not here", "unknown host"],
)
def test_an_address_the_server_cannot_listen_on_stops_main_with_why(monkeypatch, refusal):
    with pytest.raises(SystemExit) as stop:
        run_main(monkeypatch, {"HOST": "192.0.2.1", "PORT": "8000"}, refusal)
    assert stop.value.code == f"cannot listen on 192.0.2.1:8000: {refusal}"
