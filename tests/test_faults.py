"""Database faults, caused for real under real servers: nothing lost, nothing hung.

The database stopped, frozen, locked, out of disk or read-only: a POST gets the 503 page with
Retry-After and the person's values in the form, within BOUND; GET / and /healthz keep answering;
once the database is back, the same form sent again saves, without a restart. Several instances
on one SQLite file at full load: no 503, and as many rows as saves answered.

Real servers (the Procfile's command), because the point is the process: its connections left
open across the fault, its threads, its log. The disk faults need root (a tmpfs in a mount
namespace of the server's own); they run as root here and in CI.
"""

import collections
import contextlib
import http.client
import os
import re
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from databases import sqlite_url
from helpers import Answer, example, require, skip_unless_ci

import app
import store
from deploy.servers import ROOT, descendants, procfile_web_command, start_server

# An answer later than this is a hang: store.TIMEOUT (2 s) bounds each save, and a proxy in
# front gives up after 3 s (deploy/form-app.conf). Not a benchmark: a bound that proves no hang.
BOUND = 10
FORM = "application/x-www-form-urlencoded"
# What a person sent when the fault came: not the example's own values, so that the page shows
# them because they were kept, not because they are the form's defaults.
SENT = example(age=["41"], hobbies=list(app.HOBBIES)[-1:])


def send(server, method: str, path: str, body: str | None = None) -> Answer:
    """Send one request to a server; return its Answer. No answer within BOUND fails the test."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=BOUND)
    try:
        headers = {"Content-Type": FORM} if body is not None else {}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    except TimeoutError:
        pytest.fail(f"{method} {path}: no answer in {BOUND} s: the server hangs")
    finally:
        conn.close()


def submit(server, fields: dict[str, list[str]]) -> Answer:
    """POST a form's fields, as a browser sends them."""
    return send(server, "POST", "/", urlencode(fields, doseq=True))


def new_submission(**changes) -> dict[str, list[str]]:
    """Return the fields of a form as GET / gives it, with a token of its own, filled in."""
    return {"token": [secrets.token_urlsafe(16)], **SENT, **changes}


def form_fields(answer: Answer) -> dict[str, list[str]]:
    """Return what a browser would send from the page's form: its inputs, boxes checked."""
    fields: dict[str, list[str]] = {}
    for field in BeautifulSoup(answer.body, "html.parser").form.find_all("input"):
        if field.get("type") != "checkbox" or field.has_attr("checked"):
            fields.setdefault(field["name"], []).append(field.get("value", ""))
    return fields


def assert_unsaved(answer: Answer, sent: dict[str, list[str]]) -> None:
    """Check a 503 page: Retry-After, the alert, and the person's values kept in the form."""
    assert answer.status == 503, answer.body[:2000]
    assert answer.values("Retry-After") == [str(app.RETRY_SECONDS)]
    page = BeautifulSoup(answer.body, "html.parser")
    assert page.find(id="unsaved") is not None
    assert page.find("link", rel="stylesheet") is not None  # the app's layout, not a bare error
    kept = form_fields(answer)
    assert kept["token"] == sent["token"]  # sent again, it is stored once
    assert kept["age"] == sent["age"]
    assert kept.get("hobbies", []) == sent["hobbies"]


def assert_serving(server) -> None:
    """Check that the pages that need no database keep answering."""
    assert send(server, "GET", "/").status == 200
    assert send(server, "GET", "/healthz").status == 200


def assert_saved(answer: Answer, sent: dict[str, list[str]]) -> None:
    assert answer.status == 303, answer.body[:2000]
    assert answer.values("Location") == [f"/saved/{sent['token'][0]}"]


def faults_logged(server, count: int) -> list[str]:
    """Return the server's "not saved" lines, once there are `count` (its log is written by a
    thread of its own, a tenth of a second behind); fewer after a while, as many as there are."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in server.output().splitlines() if "not saved: " in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def rows(url: str) -> int:
    """Return how many submissions the database at url holds."""
    database = store.connect(url)
    try:
        return database.count()
    finally:
        database.close()


def migrated(url: str) -> str:
    database = store.connect(url)
    database.migrate()
    database.close()
    return url


def serve(url: str, log: Path, command: str | None = None):
    """Start the Procfile's web: command (or `command`) on the database at url."""
    return start_server(command or procfile_web_command(), log, environ={"DATABASE_URL": url})


# SQLite on a disk that fills up or turns read-only: a small tmpfs of the server's own, mounted in
# a mount namespace made for it, so that nothing else sees it, and it goes when the server does.


def in_namespace(server, *command: str) -> str:
    """Run a command in the server's mount namespace, with its environment; return its output."""
    return subprocess.run(
        [
            "nsenter",
            f"--target={server.process.pid}",
            "--mount",
            "--root",
            f"--wd={ROOT}",
            *command,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server.database_url},
    ).stdout


def rows_on_disk(server) -> int:
    """Return how many submissions the server's database holds, counted in its namespace (SQLite
    resolves /proc/PID/root as a link to /, so it cannot be reached from outside)."""
    return int(in_namespace(server, sys.executable, "-m", "store", "count"))


def fill(path: Path) -> None:
    """Fill the file system that path is on: write a file until no space is left."""
    block = b"\0" * 65536
    # Unbuffered: a buffer left unwritten would fail again at close (Python 3.14 raises it).
    with path.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(block)
        except OSError as error:
            assert error.errno == 28, error  # ENOSPC
    assert os.statvfs(path.parent).f_bavail == 0


@pytest.fixture
def small_disk(tmp_path):
    """The app on an SQLite file in a tmpfs of 1 MB, mounted in the server's own mount
    namespace; migrated there first, as a deploy does. The test reaches the files through
    /proc/PID/root."""
    if os.geteuid() != 0:
        skip_unless_ci("mounting a tmpfs needs root")
    mount = require("mount")
    folder = tmp_path / "disk"
    folder.mkdir()
    url = sqlite_url(folder)
    inner = (
        f"{mount} -t tmpfs -o size=1m,mode=0700 tmpfs {shlex.quote(str(folder))}"
        f" && {shlex.quote(sys.executable)} -m store migrate >/dev/null"
        f" && exec {procfile_web_command()}"
    )
    command = f"unshare --mount --propagation private sh -c {shlex.quote(inner)}"
    server = serve(url, tmp_path / "server.log", command)
    server.files = Path(f"/proc/{server.process.pid}/root{folder}")  # a file system's files
    server.folder, server.database_url = folder, url
    yield server
    server.stop()


def test_sqlite_read_only_then_writable_again_saves(small_disk):
    """A disk remounted read-only: 503 with the values kept; writable again, the same form sent
    again saves, without a restart: the connection that SQLite opened read-only is not kept."""
    server = small_disk
    # A process that had the database open and was killed (a crash, an instance SIGKILLed)
    # leaves its -wal and -shm files: with them, SQLite opens the file read-only on a read-only
    # disk, rather than failing to open it, and only the write fails.
    crash = "import os, store; store.connect().count(); os._exit(0)"
    in_namespace(server, sys.executable, "-c", crash)
    assert (server.files / f"{store.FILE_NAME}-shm").exists()
    # Linux refuses to remount read-only while a file is open for writing there (the kernel
    # itself does it, after a disk error): the app has opened nothing yet.
    in_namespace(server, "mount", "-o", "remount,ro", str(server.folder))
    sent = new_submission()
    unsaved = submit(server, sent)
    assert_unsaved(unsaved, sent)
    assert_serving(server)
    assert "readonly database" in faults_logged(server, 1)[0]

    in_namespace(server, "mount", "-o", "remount,rw", str(server.folder))
    assert_saved(submit(server, form_fields(unsaved)), sent)
    assert rows_on_disk(server) == 1
    assert len(faults_logged(server, 1)) == 1


def test_sqlite_disk_full_then_freed_saves(small_disk):
    """A full disk: 503 with the values kept; space freed, the same form sent again saves."""
    server = small_disk
    first = new_submission(age=["7"])
    assert_saved(submit(server, first), first)
    fill(server.files / "filler")
    sent = new_submission()
    unsaved = submit(server, sent)
    assert_unsaved(unsaved, sent)
    assert_serving(server)
    assert len(faults_logged(server, 1)) == 1

    (server.files / "filler").unlink()
    assert_saved(submit(server, form_fields(unsaved)), sent)
    assert rows_on_disk(server) == 2


# SQLite's file deleted or replaced under the running app (a restore by `mv` or `cp` while it
# serves, a mistaken `rm`): a connection kept open still saves, to a file nobody will read.


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_sqlite_file_deleted_or_replaced_is_not_saved_to_unseen(tmp_path, how):
    """The app's kept connections notice: deleted, a save is a 503 (a new, empty file has no
    schema), never a 303 for a row in a file gone; replaced, the save goes to the new file."""
    url = migrated(sqlite_url(tmp_path))
    server = serve(url, tmp_path / "server.log")
    try:
        warm(server)  # each of the app's threads holds a connection to the file
        for name in [store.FILE_NAME, *(f"{store.FILE_NAME}-{end}" for end in ("wal", "shm"))]:
            (tmp_path / name).unlink(missing_ok=True)
        if how == "replaced":
            migrated(url)
        for _ in range(4):  # one a thread: each one's connection
            sent = new_submission()
            if how == "deleted":
                assert_unsaved(submit(server, sent), sent)
            else:
                assert_saved(submit(server, sent), sent)
        if how == "replaced":
            assert rows(url) == 4
    finally:
        server.stop()


# SQLite locked: another process holds the write lock for longer than a save may wait.


def test_sqlite_locked_answers_503_then_saves(tmp_path):
    """A writer that holds the database's lock: 503 within the bound; released, it saves."""
    url = migrated(sqlite_url(tmp_path))
    server = serve(url, tmp_path / "server.log")
    try:
        with contextlib.closing(sqlite3.connect(tmp_path / store.FILE_NAME)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            sent = new_submission()
            unsaved = submit(server, sent)  # waits store.TIMEOUT for the lock, then gives up
            assert_unsaved(unsaved, sent)
            assert_serving(server)
        assert_saved(submit(server, form_fields(unsaved)), sent)
        assert rows(url) == 1
        assert len(faults_logged(server, 1)) == 1
    finally:
        server.stop()


# PostgreSQL stopped, frozen or locked, then back.


@pytest.fixture
def on_postgres(postgres, tmp_path):
    """The app on a database of the test's own, on the run's PostgreSQL server, which the test
    may stop or freeze: it is running again after the test."""
    url = migrated(postgres.create())
    server = serve(url, tmp_path / "server.log")
    server.url_of_database = url
    try:
        yield server
    finally:
        thaw(postgres)  # first: a server stopping waits for the requests in flight
        if postgres.process.poll() is not None:
            postgres.start()
        server.stop()


def freeze(postgres) -> None:
    """Stop every process of the server (SIGSTOP): it holds its connections and answers nothing,
    as a server that hangs, or a host that stopped, does."""
    signal_all(postgres, signal.SIGSTOP)


def thaw(postgres) -> None:
    signal_all(postgres, signal.SIGCONT)


def signal_all(postgres, number: int) -> None:
    """Send a signal to the server's processes (runuser, postgres and its children)."""
    for pid in [postgres.process.pid, *descendants(postgres.process.pid)]:
        with contextlib.suppress(ProcessLookupError):  # one that ended meanwhile
            os.kill(pid, number)


def warm(server, count: int = 8) -> None:
    """Save `count` submissions (a multiple of 4), four at a time, so that the app's pool holds
    a connection for each of its threads when the fault comes."""

    def save():
        sent = new_submission()
        assert_saved(submit(server, sent), sent)

    for _ in range(count // 4):
        savers = [threading.Thread(target=save) for _ in range(4)]
        for saver in savers:
            saver.start()
        for saver in savers:
            saver.join()


def test_postgresql_restarted_while_idle_first_save_succeeds(on_postgres, postgres):
    """The server restarted while the app had nothing to do: its pooled connections are all
    broken, and the first form sent after is saved all the same, on new ones."""
    server = on_postgres
    warm(server)
    postgres.stop()
    postgres.start()
    sent = new_submission()
    assert_saved(submit(server, sent), sent)
    assert rows(server.url_of_database) == 9


@pytest.mark.parametrize(
    "tries",
    [
        2,
        # Some twenty seconds down: a pool that backs off between its attempts to reconnect
        # (1, 2, 4, 8, 16 s...) would not try again for seconds after the server is back.
        pytest.param(10, marks=pytest.mark.stress),
    ],
)
def test_postgresql_stopped_answers_503_then_saves(on_postgres, postgres, tries):
    """The server stopped, while people try again and again (each try waits store.TIMEOUT for a
    connection): 503; started again, the first form sent saves, without a restart."""
    server = on_postgres
    warm(server)
    postgres.stop()
    sent = new_submission()
    for _ in range(tries):
        unsaved = submit(server, sent)
        assert_unsaved(unsaved, sent)
    assert_serving(server)
    assert len(faults_logged(server, tries)) == tries

    postgres.start()
    assert_saved(submit(server, form_fields(unsaved)), sent)
    assert rows(server.url_of_database) == 9


def test_postgresql_frozen_answers_503_then_saves(on_postgres, postgres):
    """The server frozen (its connections open, nothing answered): 503 within the bound, not a
    hang; thawed, the form sent again saves."""
    server = on_postgres
    warm(server)
    freeze(postgres)
    sent = new_submission()
    for _ in range(2):
        unsaved = submit(server, sent)
        assert_unsaved(unsaved, sent)
    assert_serving(server)
    assert len(faults_logged(server, 2)) == 2

    thaw(postgres)
    assert_saved(submit(server, form_fields(unsaved)), sent)
    assert rows(server.url_of_database) == 9


def test_postgresql_locked_answers_503_then_saves(on_postgres):
    """A session that holds the table's lock: 503 within the bound; released, it saves."""
    import psycopg

    server = on_postgres
    warm(server, 4)
    with psycopg.connect(server.url_of_database) as holder:
        holder.execute("LOCK TABLE submission IN ACCESS EXCLUSIVE MODE")
        sent = new_submission()
        unsaved = submit(server, sent)  # statement_timeout ends the wait
        assert_unsaved(unsaved, sent)
        assert_serving(server)
    assert_saved(submit(server, form_fields(unsaved)), sent)
    assert rows(server.url_of_database) == 5
    lines = faults_logged(server, 1)
    assert len(lines) == 1 and re.search("statement timeout", lines[0]), lines


# Several instances on one SQLite file at full load: SQLite lets one writer at a time, and the
# others wait their turn (up to store.TIMEOUT); none may give up.

INSTANCES = 3  # app instances, as `WEB_CONCURRENCY=3 make run-proxy` would run them
CLIENTS = 36  # keep-alive clients posting as fast as they can: 3 for each of the 12 threads
POSTS = 80  # each client's


def post_many(server, statuses: collections.Counter, lock: threading.Lock) -> None:
    """POST new submissions on one kept-alive connection; count the answers by status."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=BOUND)
    try:
        for _ in range(POSTS):
            conn.request(
                "POST", "/", urlencode(new_submission(), doseq=True), {"Content-Type": FORM}
            )
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] += 1
    finally:
        conn.close()


def test_instances_on_one_sqlite_file_save_every_post(tmp_path):
    """Several instances writing one SQLite file as fast as clients can send: every POST is
    saved (303), none waits too long for the lock, and the rows are as many as the 303s."""
    url = migrated(sqlite_url(tmp_path))
    servers = [serve(url, tmp_path / f"server-{n}.log") for n in range(INSTANCES)]
    try:
        statuses: collections.Counter = collections.Counter()
        lock = threading.Lock()
        clients = [
            threading.Thread(target=post_many, args=(servers[n % INSTANCES], statuses, lock))
            for n in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        for server in servers:
            server.stop()
    assert rows(url) == statuses[303]
    assert statuses == {303: CLIENTS * POSTS}
    logs = "".join(server.output() for server in servers).splitlines()
    assert [line for line in logs if "not saved" in line or "database is locked" in line] == []
