"""Starting and stopping the app's servers as child processes: for `make run-proxy`, the tests and
the benchmark alike, so that each starts a server the same way (the Procfile's command, the venv's
`waitress-serve`, a free loopback port) and none of them imports another's folder.

Nothing here is about the form; it only runs commands and waits for ports.
"""

import dataclasses
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: where waitress-serve lives


def procfile_web_command() -> str:
    """Return the Procfile's `web:` command line."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise ValueError("the Procfile has no web: line")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port on `host` that nothing listens on."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(
    count: int, host: str = "127.0.0.1", taken: frozenset[int] = frozenset()
) -> list[int]:
    """Return `count` different ports on `host` that nothing listens on, none of those `taken`
    (chosen already, not yet listened on)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port(host)) not in ports and port not in taken:
            ports.append(port)
    return ports


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something accepts connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Return the processes started by a process, and by those, and so on (Linux's /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # bytes: a process may give itself a name that is not UTF-8 (it ends at the last ")")
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    found, level = [], [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def listens(pid: int, port: int) -> bool:
    """Tell whether a process, or one it started, holds a socket listening on a TCP port over
    IPv4, where every server here listens (nginx on [::1] alone, its IPv4 port taken, is not).

    Asked of the process itself, not of the port: a connection that succeeds may reach another
    program on that port, which must not pass for ours having started.
    """
    held = set()  # the sockets the process and its children hold, as their fds name them
    for owner in [pid, *descendants(pid)]:
        try:
            held.update(os.readlink(fd) for fd in Path(f"/proc/{owner}/fd").iterdir())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # it ended, or closed that fd, while we looked
    if not any(link.startswith("socket:[") for link in held):
        return False  # none yet: spare reading the whole TCP table, thousands of lines
    try:  # as the process's own network namespace sees it
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except (FileNotFoundError, ProcessLookupError):
        return False
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
            if f"socket:[{fields[9]}]" in held:
                return True
    return False


@dataclass
class Server:
    """A server in a child process: where it listens and where its output goes."""

    process: subprocess.Popen
    host: str
    port: int
    log: Path | None = None  # None: it writes to this process's stdout and stderr

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        return self.log.read_text() if self.log else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server to stop and return its exit status; kill it if it takes longer
        than `timeout` (the default outlasts the app's 20 s drain)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # never leave a server behind
            self.process.wait()
            return -signal.SIGKILL


def spawn(command: str, environ: dict, log=None, cwd: Path = ROOT) -> subprocess.Popen:
    """Run a shell command in its own process group, the venv's bin first on its PATH, its
    output to `log`: a file's path (appended to), a file open for writing, or None (this
    process's stdout and stderr).

    Its own group: Ctrl-C in a terminal reaches only the parent, which stops its children in
    order. `environ` is laid over this process's environment; None there unsets a name.
    """
    settings = {**os.environ, **environ}
    settings["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {name: value for name, value in settings.items() if value is not None}
    command = ["sh", "-c", f"exec {command}"]
    out = log.open("ab") if isinstance(log, Path) else log
    try:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out, process_group=0)
    finally:
        if isinstance(log, Path):
            out.close()


def wait_until_listening(process: subprocess.Popen, port: int, timeout: float = 60) -> bool:
    """Wait until `process` (or a child of it) listens on a port; False if it exits first.

    A server starts in well under a second; the timeout only ends a hang, and is long because a
    machine shared with other work can take many seconds to start Python.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if listens(process.pid, port):
            return True
        time.sleep(0.05)
    return False


def instance_environ(port: int) -> dict[str, str]:
    """Return what an app instance gets, as deploy/form-app@.service gives it: loopback, a port."""
    return {"HOST": "127.0.0.1", "PORT": str(port)}


def spawn_instance(
    port: int, log: Path | None = None, notify_socket: str | None = None
) -> subprocess.Popen:
    """Start one app instance as the systemd unit does: the Procfile's command, on a port, and
    (as systemd gives it) a $NOTIFY_SOCKET to say when it is ready and that it is alive."""
    return spawn(
        procfile_web_command(), {**instance_environ(port), "NOTIFY_SOCKET": notify_socket}, log
    )


def start_server(
    command: str,
    log: Path | None = None,
    cwd: Path = ROOT,
    environ: dict | None = None,
    timeout: float = 60,
) -> Server:
    """Run a command that serves the app and wait until it accepts connections.

    It gets HOST=127.0.0.1 and a free PORT unless `environ` says otherwise.
    """
    settings = {"HOST": "127.0.0.1", "PORT": str(free_port()), **(environ or {})}
    port = int(settings.get("PORT") or 8080)
    if listening(port):
        raise RuntimeError(f"port {port} is in use already: {command!r} cannot listen there")
    process = spawn(command, settings, log, cwd)
    try:
        ready = wait_until_listening(process, port, timeout)
    except BaseException:  # never leave a server behind, whatever went wrong here
        Server(process, "127.0.0.1", port, log).stop()
        raise
    if not ready:
        server = Server(process, "127.0.0.1", port, log)
        server.stop(signal.SIGKILL)
        raise RuntimeError(
            f"{command!r} did not listen on {port} within {timeout}s "
            f"(exit status {process.returncode}):\n{server.output()}"
        )
    return Server(process, "127.0.0.1", port, log)


@dataclass
class Proxy:
    """nginx from deploy/ in front of the app, as `make run-proxy` serves it."""

    port: int  # nginx, on loopback
    run_dir: Path  # the certificate, nginx.conf, nginx's access log
    app_ports: list[int] = dataclasses.field(default_factory=list)  # the instances behind nginx
    server: Server | None = None  # deploy/run_proxy.py, with the app's and nginx's output
    http_port: int = 0  # nginx's plain HTTP: the ACME challenge and the redirect to HTTPS

    @property
    def app_port(self) -> int:
        """The first instance's port: where a test talks to Waitress without nginx."""
        return self.app_ports[0]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def certificate(self) -> Path:
        return self.run_dir / "cert.pem"

    def tls(self) -> ssl.SSLContext:
        """Return a client TLS context that trusts the proxy's self-signed certificate."""
        return ssl.create_default_context(cafile=self.certificate)

    def connect(self, source: str = "127.0.0.1", timeout: float = 5) -> ssl.SSLSocket:
        """Open a TLS connection to nginx from a loopback address."""
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0)
        )
        return self.tls().wrap_socket(sock, server_hostname="localhost")


PROXY_COMMAND = f"{shlex.quote(sys.executable)} -m deploy.run_proxy"


def start_proxy(folder: Path, environ: dict | None = None, command: str = PROXY_COMMAND) -> Proxy:
    """Run deploy/run_proxy.py as `make run-proxy` does, its files in `folder`; wait until it
    says where it serves. `environ` may set WEB_CONCURRENCY, the number of app instances."""
    run_dir = folder / "run"
    for attempt in range(3):
        # Free ports are found before nginx binds them: on a busy machine another program may
        # take one meanwhile. Then run_proxy stops and says so, and new ports are tried.
        http_port = free_port()
        settings = {"RUN_DIR": str(run_dir), "HTTP_PORT": str(http_port), **(environ or {})}
        try:
            server = start_server(command, folder / "proxy.log", environ=settings)
            break
        except RuntimeError as error:
            if "in use" not in str(error) or attempt == 2:
                raise
    said = re.compile(r"in front of \d+ app instance\(s\): ([^;]+);")
    deadline = time.monotonic() + 5
    while not (found := said.search(server.output())):
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"run_proxy.py did not say where it serves:\n{server.output()}")
        time.sleep(0.05)
    app_ports = [int(url.rsplit(":", 1)[1]) for url in found[1].split()]
    return Proxy(server.port, run_dir, app_ports, server, http_port)
