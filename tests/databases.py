"""Real databases for the tests: an SQLite file, and a PostgreSQL server (Debian's `postgresql`)
that the tests start themselves, in a folder of their own, as an unprivileged user, on a Unix
socket and loopback; never a system service, never the database of `make run`."""

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from helpers import skip_unless_ci

import store

NAMES = itertools.count()


def postgres_programs() -> Path | None:
    """Return the folder of the newest PostgreSQL's initdb, pg_ctl and postgres, if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[4]))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Postgres:
    """A PostgreSQL server of the test run's own: initdb in a temporary folder, then postgres in
    the foreground, as the `postgres` user when the tests run as root (it refuses root).

    It serves TCP on `listen`; `wrapper` is a command it runs under (a test's `ip netns exec
    NAME`, to serve on another "host"). The tests themselves reach it on its Unix socket, in its
    folder, which no network namespace stands in the way of.
    """

    def __init__(self, listen: str = "127.0.0.1", wrapper: tuple[str, ...] = ()):
        programs = postgres_programs()
        if programs is None:
            skip_unless_ci("initdb not found: install PostgreSQL with `apt-get install postgresql`")
        self.programs = programs
        self.folder = Path(tempfile.mkdtemp(prefix="form-app-postgres-"))
        self.data = self.folder / "data"
        self.host, self.port = listen, free_port()
        self.wrapper = list(wrapper)
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.run(
            "initdb",
            "--auth=trust",
            "--username=form",
            "--encoding=UTF8",
            "--no-instructions",
            "-D",
            str(self.data),
        )
        if listen != "127.0.0.1":  # initdb trusts loopback only; and then the listen address's net
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all form samenet trust\n")
        self.process = None
        self.start()

    def run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.programs / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start the server in the foreground (its log in the folder); return once it accepts."""
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 (the server's, until it stops)
        settings = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.folder),
            "fsync": "on",
        }
        args = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
        postgres = [str(self.programs / "postgres"), "-D", str(self.data), *args]
        command = [*self.wrapper, *self.as_user, *postgres]
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        log.close()
        for _ in range(300):
            if self.accepts():
                return
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "postgres.log").read_text())
            subprocess.run(["sleep", "0.1"], check=True)
        raise RuntimeError("PostgreSQL did not start in 30 s")

    def accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.local_url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Stop the server (a fast shutdown: its clients are cut off); start() starts it again."""
        if self.process and self.process.poll() is None:
            # Not a signal to runuser: it would pass SIGTERM on, a smart shutdown that waits
            # for the clients to leave, and kill the server 2 s later, its backends still there.
            self.run("pg_ctl", "stop", "--mode=fast", "--pgdata", str(self.data))
            self.process.wait(timeout=30)

    def url(self, name: str) -> str:
        """Return the URL of one of its databases, over TCP (loopback unless told otherwise)."""
        return f"postgresql://form@{self.host}:{self.port}/{name}"

    def local_url(self, name: str) -> str:
        """Return the URL of one of its databases over its Unix socket, for the tests' own use."""
        return f"postgresql://form@/{name}?host={self.folder}&port={self.port}"

    def create(self) -> str:
        """Create an empty database of a test's own; return its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(NAMES)}"
        with psycopg.connect(self.local_url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / store.FILE_NAME}"
