"""Helpers for the tests: starting real servers, reading pages."""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: where waitress-serve lives


def procfile_web_command() -> str:
    """Return the Procfile's `web:` command line."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise AssertionError("the Procfile has no web: line")


def free_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A real server in a subprocess: where it listens and what it logged."""

    process: subprocess.Popen
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:  # longer than the app's 20 s drain
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # never leave a server behind
            self.process.wait()
            raise


def start_server(
    command: str, log: Path, cwd: Path = ROOT, environ: dict | None = None, timeout: float = 60
) -> Server:
    """Run a shell command that serves the app and wait until it accepts connections.

    It gets HOST=127.0.0.1 and a free PORT unless `environ` says otherwise (None unsets a name).
    A server starts in well under a second; the timeout is only there to end a hang, and is long
    because a machine shared with other test runs can take many seconds to start Python.
    """
    settings = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), **(environ or {})}
    settings["PATH"] = f"{BIN}:{os.environ['PATH']}"
    env = {name: value for name, value in settings.items() if value is not None}
    port = int(env.get("PORT", 8080))
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["sh", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{command!r} exited {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Server(process, "127.0.0.1", port, log)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{command!r} did not listen on {port} within {timeout}s")


SERVER_COMMANDS = {
    "procfile": procfile_web_command(),
    "python app.py": f"{shlex.quote(sys.executable)} app.py",
}


def same_origin(testapp) -> str:
    """Return the Origin a browser would send from the app's own page."""
    return "http://" + testapp.get("/").request.environ["HTTP_HOST"]


def exchange(server: Server, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes to a server and return all it answers until it closes (or timeout)."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def result_line(res) -> str:
    """Return the result paragraph's text, whitespace folded."""
    return " ".join(res.html.find(id="result").get_text().split())


# Tools from Debian that some tests need; .ci/run installs them.
INSTALL_HINTS = {
    "chromium": "install Debian's browser with `apt-get install chromium`",
    "java": "install Java for the Nu HTML validator with `apt-get install default-jre-headless`",
    "wrk": "install the HTTP load generator with `apt-get install wrk`",
}


def in_ci() -> bool:
    """Tell whether this run is CI's, where every test must run."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def require(program: str) -> str:
    """Return a program's path; without it skip, but fail in CI, where nothing may skip."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} not found: {INSTALL_HINTS[program]}"
        if in_ci():
            pytest.fail(f"{message} (CI is set: these checks must run, not skip)", pytrace=False)
        pytest.skip(message)
    return path
