"""Every valid submission kept (store.py): stored once, with when it was received; durably;
backed up while the app serves and restored; purged after an age; readable by the app's user only.

Each test that touches a database runs twice, on SQLite and on a real PostgreSQL, with an empty
database of its own (the `database` and `database_url` fixtures). In-process (WebTest) where the
app's behaviour is the point; on a real server where the process is: a SIGKILL right after the
answer, a backup while the server saves.
"""

import base64
import http.client
import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    URLENCODED,
    cleaned,
    encoded,
    fill,
    result_line,
    run_store,
    stored,
    submitted,
)

import app
import store
from deploy.audit import result_text
from deploy.servers import ROOT, procfile_web_command, start_server

TOKEN_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
WAL_FILES = [f"{store.FILE_NAME}-wal", f"{store.FILE_NAME}-shm"]
VALUES = app.validate(submitted())[0]  # the example submission, cleaned, as the app saves it


@pytest.fixture
def umask():
    """A permissive umask (022, the usual default) for the test, so that the modes the code sets
    are its own doing."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def token_of(location: str) -> str:
    """Return the token of a /saved/<token> Location; fail on any other."""
    path = location.removeprefix("http://localhost")  # WebTest's host, when it makes it absolute
    assert path.startswith("/saved/"), location
    return path.removeprefix("/saved/")


# Saved once, shown back, readable only with the token.


@pytest.mark.parametrize(
    ("age", "hobbies", "stored_age"),
    [
        (app.EXAMPLE["age"][0], list(app.HOBBIES), int(app.EXAMPLE["age"][0])),
        (" 007 ", [next(iter(app.HOBBIES))], 7),
        ("", [], None),  # an empty age is NULL, not 0 or ""
    ],
)
def test_a_valid_submission_is_stored_once_with_when_it_was_received(
    testapp, database, age, hobbies, stored_age
):
    form = fill(testapp.get("/").form, age=[age], hobbies=hobbies)
    before = store.now()
    res = form.submit(status=303)
    after = store.now()
    [row] = stored(database)
    assert token_of(res.headers["Location"]) == row["token"] == form["token"].value
    received = database.from_time(row["received"])
    assert before <= received <= after and received.utcoffset() == timedelta(0)
    assert (row["age"], row["hobbies"]) == (stored_age, sorted(hobbies))
    assert stored_age is None or type(row["age"]) is int

    page = res.follow(status=200)  # what was saved, exactly
    shown_age = "" if stored_age is None else str(stored_age)
    assert result_line(page) == result_text(cleaned(age=[shown_age], hobbies=hobbies))
    assert page.html.find("time")["datetime"] == received.isoformat(timespec="seconds")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Robots-Tag"] == "noindex"
    assert testapp.get(res.headers["Location"]).text == page.text  # a reload stores nothing
    assert len(stored(database)) == 1


def test_a_form_sent_twice_is_stored_once_and_both_see_the_same_page(testapp, database):
    form = fill(testapp.get("/").form)
    first = form.submit(status=303)
    again = form.submit(status=303)  # a double click, a resent POST, back then send
    assert again.headers["Location"] == first.headers["Location"]
    assert len(stored(database)) == 1


def test_one_form_sent_by_several_clients_at_once_is_stored_once(testapp, database):
    body = encoded(token=[secrets.token_urlsafe(16)])
    clients = 8
    start = threading.Barrier(clients)

    def send(_) -> str:
        start.wait(timeout=30)
        res = testapp.post("/", body, content_type=URLENCODED, status=303)
        return res.headers["Location"]

    with ThreadPoolExecutor(clients) as pool:
        locations = list(pool.map(send, range(clients)))
    assert len(set(locations)) == 1
    assert len(stored(database)) == 1


def test_a_post_without_a_token_is_stored_under_one_the_server_makes(testapp, database):
    # The seed's clients and curl send no token: each POST is a submission of its own.
    answers = [testapp.post("/", encoded(), content_type=URLENCODED, status=303) for _ in "ab"]
    tokens = [token_of(res.headers["Location"]) for res in answers]
    assert [row["token"] for row in stored(database)] == tokens
    assert tokens[0] != tokens[1] and all(app.TOKEN.fullmatch(token) for token in tokens)
    page = answers[0].follow(status=200)
    assert result_line(page) == result_text(VALUES)


@pytest.mark.parametrize(
    "token",
    ["short", "x" * 23, "x" * 21 + "+", "x" * 21 + "=", "x" * 21 + "é", "../../" + "x" * 16],
)
def test_a_malformed_token_is_refused_and_nothing_stored(testapp, database, token):
    res = testapp.post("/", encoded(token=[token]), content_type=URLENCODED, status=400)
    assert app.BAD_TOKEN in res.html.main.get_text()
    assert stored(database) == []


def test_an_invalid_submission_stores_nothing_and_keeps_its_token(testapp, database):
    form = testapp.get("/").form
    token = form["token"].value
    res = fill(form, age=["thirty"]).submit(status=422)
    assert res.form["token"].value == token
    assert stored(database) == []
    res = fill(res.form).submit(status=303)  # corrected: stored under the form's token
    assert token_of(res.headers["Location"]) == token
    assert [row["token"] for row in stored(database)] == [token]


def test_a_bots_submission_is_answered_like_any_other_and_not_stored(testapp, database):
    person = fill(testapp.get("/").form).submit(status=303)
    form = fill(testapp.get("/").form)
    form[app.TRAP] = "https://spam.example/"
    bot = form.submit(status=303)
    assert (bot.status, bot.text) == (person.status, person.text) == ("303 See Other", "")
    assert sorted(bot.headers.keys()) == sorted(person.headers.keys())
    assert token_of(bot.headers["Location"]) == form["token"].value
    assert [row["token"] for row in stored(database)] == [token_of(person.headers["Location"])]
    testapp.get(bot.headers["Location"], status=404)  # and nothing to show for it


def test_a_saved_page_is_found_only_by_its_token(testapp, database):
    location = fill(testapp.get("/").form).submit(status=303).headers["Location"]
    token = token_of(location)
    [row] = stored(database)
    changed = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for path in [
        f"/saved/{secrets.token_urlsafe(16)}",  # anyone else's, guessed
        f"/saved/{changed}",  # this one's, one character changed
        f"/saved/{row['id']}",  # by the row's number: ids are never in URLs
        "/saved/",
    ]:
        res = testapp.get(path, status=404)
        assert "Age:" not in res.text
    testapp.get(location, status=200)


def assert_random_tokens(tokens: list[str]) -> None:
    """Check tokens look like secrets.token_urlsafe(16)'s: 22 URL-safe characters, 128 bits."""
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert len(token) == 22 and set(token) <= TOKEN_ALPHABET
        assert len(base64.urlsafe_b64decode(token + "==")) == 16
    # Not a counter, nor a time: no two share even their first 48 bits; and drawn from all 64
    # characters (hex, 88 bits in 22 characters, would use 16).
    assert len({token[:8] for token in tokens}) == len(tokens)
    assert len(set("".join(tokens))) > 48


def test_the_forms_tokens_are_22_url_safe_characters_of_128_random_bits(testapp):
    assert_random_tokens([testapp.get("/").form["token"].value for _ in range(50)])


def test_the_servers_tokens_are_22_url_safe_characters_of_128_random_bits(testapp, database):
    answers = [testapp.post("/", encoded(), content_type=URLENCODED) for _ in range(50)]
    assert_random_tokens([token_of(res.headers["Location"]) for res in answers])


# Durably: committed to disk before the answer.

DURABLE = {
    "sqlite": {"PRAGMA journal_mode": "wal", "PRAGMA synchronous": 2},  # 2: FULL
    "postgresql": {"SHOW synchronous_commit": "on"},
}


def test_the_apps_connection_commits_to_disk(testapp, database):
    fill(testapp.get("/").form).submit(status=303)  # on the connection the app saved with
    with database.transaction() as cursor:
        for statement, expected in DURABLE[database.kind].items():
            cursor.execute(statement)
            assert cursor.fetchone()[0] == expected, statement


def post(server, body: bytes) -> tuple[int, str | None]:
    """POST a form body to a real server, as curl does; return the status and the Location."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("POST", "/", body, {"Content-Type": URLENCODED})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def start_app(database_url: str, log: Path, **environ: str):
    """Start the app as the Procfile does, on the test's database."""
    environ = {"DATABASE_URL": database_url, **environ}
    return start_server(procfile_web_command(), log, environ=environ)


def test_a_submission_answered_as_saved_survives_a_sigkill_at_once(database_url, tmp_path):
    server = start_app(database_url, tmp_path / "server.log")
    token = secrets.token_urlsafe(16)
    try:
        answer = post(server, encoded(token=[token]))
    finally:
        status = server.stop(signal.SIGKILL)  # no drain, no close: the process is gone
    assert answer == (303, f"/saved/{token}"), server.output()
    assert status == -signal.SIGKILL
    database = store.connect(database_url)  # the file, or the server, as the kill left it
    try:
        [row] = stored(database)
    finally:
        database.close()
    assert (row["token"], row["age"], row["hobbies"]) == (
        token,
        int(VALUES["age"]),
        sorted(VALUES["hobbies"]),
    )


# Backups and restores.


def make(*args: str, **environ: str) -> subprocess.CompletedProcess:
    """Run make in the checkout as an operator does, with this run's Python (its venv is built
    already: -o keeps make from building .venv again)."""
    command = ["make", "-s", "-o", ".venv/.runtime", f"BIN={Path(sys.executable).parent}", *args]
    env = {**os.environ, **environ}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def wait_until(condition, timeout: float = 60) -> None:
    """Wait until condition() holds; the timeout only ends a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def saving(server, clients: int = 4):
    """Keep clients posting new submissions to a server, one at a time each, until the block
    ends; yield a function that returns the tokens answered 303 so far (each one committed)."""
    saved, stop = [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            token = secrets.token_urlsafe(16)
            assert post(server, encoded(token=[token])) == (303, f"/saved/{token}")
            saved.append(token)

    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client) for _ in range(clients)]

        def so_far() -> list[str]:
            for each in running:
                if each.done():
                    each.result()  # a client's failure, raised at once
            return list(saved)

        try:
            yield so_far
        finally:
            stop.set()
    so_far()  # every client done: any failure is the test's


def test_make_backup_while_the_app_saves_then_a_restore_gives_back_every_row(
    database_url, tmp_path
):
    backups = tmp_path / "backups"
    environ = {"DATABASE_URL": database_url, "BACKUP_DIRECTORY": str(backups)}
    server = start_app(database_url, tmp_path / "server.log")
    try:
        with saving(server) as saved:
            wait_until(lambda: len(saved()) >= 20)
            committed = saved()  # each answered 303 before the backup started
            backup = make("backup", **environ)
            during = len(saved())
            wait_until(lambda: len(saved()) > during)  # the app saved on, before and after
    finally:
        server.stop()
    assert backup.returncode == 0, backup.stderr
    copy = Path(backup.stdout.strip())
    assert copy.parent == backups and copy.is_file()
    if database_url.startswith("sqlite"):
        with closing(sqlite3.connect(copy)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    # A loss: every row deleted (a mistaken purge, a bad script).
    database = store.connect(database_url)
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM submission_hobby")
        cursor.execute("DELETE FROM submission")
    database.close()

    # The documented restore: the app stopped (above), `python -m store restore FILE`, start.
    restore = run_store(database_url, "restore", str(copy))
    assert restore.returncode == 0, restore.stderr
    database = store.connect(database_url)
    try:
        rows = stored(database)
    finally:
        database.close()
    tokens = {row["token"] for row in rows}
    assert tokens >= set(committed)
    assert tokens <= set(saved())  # nothing but what was saved
    assert f"restored from {copy}; {len(rows)} submissions" in restore.stdout
    assert all(row["hobbies"] == sorted(VALUES["hobbies"]) for row in rows)  # each row whole

    server = start_app(database_url, tmp_path / "server.log")
    try:
        token = secrets.token_urlsafe(16)
        assert post(server, encoded(token=[token])) == (303, f"/saved/{token}")  # saves go on
        for each in [*committed, token]:
            connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
            connection.request("GET", f"/saved/{each}")
            assert connection.getresponse().status == 200
            connection.close()
    finally:
        server.stop()


def test_make_restore_runs_the_store_command_and_needs_a_file():
    shown = make("-n", "restore", "FILE=backups/form-x.sqlite3")
    assert "-m store restore 'backups/form-x.sqlite3'" in shown.stdout
    refused = make("restore")
    assert refused.returncode == 2 and "usage: make restore FILE=" in refused.stdout


def test_a_restore_of_no_such_file_is_refused(database_url, tmp_path):
    result = run_store(database_url, "restore", str(tmp_path / "no-such-backup"))
    assert result.returncode == 2 and "no such backup" in result.stderr


@pytest.mark.parametrize("made", ["another app's database", "not a database"])
def test_a_restore_of_a_file_that_is_no_backup_keeps_every_row(tmp_path, made):
    database = store.connect(f"sqlite:///{tmp_path / store.FILE_NAME}")
    database.migrate()
    database.save(secrets.token_urlsafe(16), VALUES)
    database.close()
    other = tmp_path / "other.sqlite3"
    if made == "not a database":
        other.write_bytes(b"not SQLite at all" * 100)
    else:
        with closing(sqlite3.connect(other)) as connection:
            connection.execute("CREATE TABLE note (text)")
    result = run_store(f"sqlite:///{tmp_path / store.FILE_NAME}", "restore", str(other))
    assert result.returncode == 1
    assert "not a backup of this app's database" in result.stderr
    assert run_store(f"sqlite:///{tmp_path / store.FILE_NAME}", "count").stdout == "1\n"


def test_backups_keep_the_last_seven_readable_by_the_apps_user_only(
    database, tmp_path, monkeypatch, umask
):
    folder = tmp_path / "backups"  # not there yet
    monkeypatch.setenv("BACKUP_DIRECTORY", str(folder))
    first = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for day in range(store.BACKUPS_KEPT + 1):
        monkeypatch.setattr(store, "now", lambda day=day: first + timedelta(days=day))
        made.append(store.backup(database))
    assert sorted(folder.iterdir()) == made[-store.BACKUPS_KEPT :]
    assert mode(folder) == 0o700
    assert [mode(path) for path in made[-store.BACKUPS_KEPT :]] == [0o600] * store.BACKUPS_KEPT


def test_backups_go_to_backup_directory_or_the_state_folder(tmp_path, monkeypatch):
    for name in ("BACKUP_DIRECTORY", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    sqlite = store.connect(f"sqlite:///{tmp_path / store.FILE_NAME}")
    postgresql = store.connect("postgresql://form@db.example/form")
    assert store.backups_folder(sqlite) == tmp_path / "backups"  # beside the file
    assert store.backups_folder(postgresql) == ROOT / "data" / "backups"  # make run's folder
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/form-app")
    assert store.backups_folder(postgresql) == Path("/var/lib/form-app/backups")
    monkeypatch.setenv("BACKUP_DIRECTORY", "/srv/backups")
    assert store.backups_folder(sqlite) == store.backups_folder(postgresql) == Path("/srv/backups")


def test_a_restore_into_a_new_sqlite_file_makes_it_the_apps_users_alone(tmp_path, umask):
    database = store.connect(f"sqlite:///{tmp_path / store.FILE_NAME}")
    database.migrate()
    database.save(secrets.token_urlsafe(16), VALUES)
    copy = store.backup(database)
    database.close()
    folder = tmp_path / "new-machine"  # not there yet, as on a machine set up again
    result = run_store(f"sqlite:///{folder / store.FILE_NAME}", "restore", str(copy))
    assert result.returncode == 0, result.stderr
    assert "1 submissions" in result.stdout
    assert mode(folder) == 0o700 and mode(folder / store.FILE_NAME) == 0o600


def test_a_backup_of_a_database_not_made_yet_fails_and_makes_none(tmp_path):
    path = tmp_path / "state" / store.FILE_NAME
    result = run_store(f"sqlite:///{path}", "backup")
    assert result.returncode == 1 and "no such file" in result.stderr
    assert not path.exists()


# Purge: submissions older than an age deleted, with their hobbies.


def save_days_ago(database, monkeypatch, days: float) -> str:
    """Save the example submission as if received that many days ago; return its token."""
    token = secrets.token_urlsafe(16)
    with monkeypatch.context() as patch:
        patch.setattr(store, "now", lambda: datetime.now(UTC) - timedelta(days=days))
        database.save(token, VALUES)
    return token


def hobby_rows(database) -> int:
    with database.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM submission_hobby")
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        (["30"], {}),
        ([], {"PURGE_AFTER_DAYS": "30"}),  # as the purge timer runs it
        (["30"], {"PURGE_AFTER_DAYS": "1000"}),  # the command line's age wins
    ],
    ids=["argument", "environment", "both"],
)
def test_purge_deletes_submissions_older_than_the_age_and_their_hobbies(
    database, database_url, monkeypatch, args, environ
):
    old = [save_days_ago(database, monkeypatch, days) for days in (400, 30.01)]
    kept = [save_days_ago(database, monkeypatch, days) for days in (29.99, 0)]
    result = run_store(database_url, "purge", *args, **environ)
    assert result.returncode == 0, result.stderr
    assert "deleted 2 submissions" in result.stdout
    assert [row["token"] for row in stored(database)] == kept
    assert all(database.find(token) is None for token in old)
    assert hobby_rows(database) == len(kept) * len(VALUES["hobbies"])


@pytest.mark.parametrize(
    ("args", "environ", "said"),
    [
        ([], {}, "PURGE_AFTER_DAYS"),  # no age: say how to give one
        (["0"], {}, "not a whole number of days above 0"),
        (["-1"], {}, ""),
        (["thirty"], {}, "not a whole number of days above 0"),
        (["1.5"], {}, "not a whole number of days above 0"),
        ([], {"PURGE_AFTER_DAYS": "thirty"}, "not a whole number of days above 0"),
        (["1000000"], {}, f"more than {store.MAX_DAYS} days"),  # a traceback, once
        ([], {"PURGE_AFTER_DAYS": "99999999999"}, f"more than {store.MAX_DAYS} days"),
    ],
)
def test_purge_without_a_valid_age_deletes_nothing(
    database, database_url, monkeypatch, args, environ, said
):
    monkeypatch.delenv("PURGE_AFTER_DAYS", raising=False)
    token = save_days_ago(database, monkeypatch, 400)
    result = run_store(database_url, "purge", *args, **environ)
    assert result.returncode == 2
    assert "usage: python -m store purge" in result.stderr and said in result.stderr
    assert result.stdout == ""
    assert [row["token"] for row in stored(database)] == [token]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://form:s3cret@db.example/form",
        "postgresql://form:s3c@ret@db.example/form",  # an @ left unescaped in the password
        "postgresql://form@db.example/form?sslmode=require&password=s3cret",
        "postgres:///form?host=/run/postgresql&PASSWORD=s3cret#x",
    ],
)
def test_a_postgresql_url_is_printed_and_logged_without_its_password(url):
    shown = str(store.PostgreSQL(url, threads=1))
    assert "s3c" not in shown and "ret" not in shown
    assert "form" in shown


@pytest.mark.parametrize("method", ["backup", "restore"])
def test_pg_dump_and_pg_restore_get_the_password_in_their_environment(monkeypatch, method):
    # Anyone on the host reads a command line (ps); a process's environment, its user alone.
    runs = []
    monkeypatch.setattr(
        subprocess, "run", lambda command, **options: runs.append((command, options))
    )
    url = "postgresql://form:s3cret@db.example/form?sslmode=require"
    getattr(store.PostgreSQL(url, threads=1), method)(Path("form.dump"))
    [(command, options)] = runs
    assert "s3cret" not in " ".join(command)
    assert options["env"]["PGPASSWORD"] == "s3cret"
    assert any(arg.startswith("--dbname=") and "db.example" in arg for arg in command)


# Where the database is, and who may read it.


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, f"sqlite:///{ROOT}/data/{store.FILE_NAME}"),  # make run's: in the checkout
        ({"STATE_DIRECTORY": "/var/lib/form-app"}, "sqlite:////var/lib/form-app/form.sqlite3"),
        (
            {"STATE_DIRECTORY": "/var/lib/form-app", "DATABASE_URL": "postgresql://db/form"},
            "postgresql://db/form",
        ),
        ({"DATABASE_URL": "sqlite:////srv/form.sqlite3"}, "sqlite:////srv/form.sqlite3"),
    ],
    ids=["default", "systemd", "postgresql", "sqlite"],
)
def test_database_url_chooses_the_database_else_a_file_in_the_state_folder(
    monkeypatch, environ, url
):
    for name in ("DATABASE_URL", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert store.database_url() == url
    assert str(store.connect()) == str(store.connect(url))


def test_make_runs_folder_is_ignored_by_git():
    assert "data/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_tests_never_use_make_runs_database():
    # tests/conftest.py sets DATABASE_URL before the app is imported, for every server too.
    path = Path(os.environ["DATABASE_URL"].removeprefix("sqlite:///"))
    assert ROOT not in path.parents
    assert Path(str(app.DATABASE)) == path


@pytest.mark.parametrize("url", ["mysql://db/form", "form.sqlite3", "sqlite://form.sqlite3"])
def test_an_unknown_database_url_is_refused(url):
    with pytest.raises(ValueError, match="DATABASE_URL must start with"):
        store.connect(url)


def test_the_database_file_and_its_folder_are_the_apps_users_alone(
    testapp, tmp_path, monkeypatch, umask
):
    folder = tmp_path / "state"  # not there yet: made on first use
    url = f"sqlite:///{folder / store.FILE_NAME}"
    migrate = run_store(url, "migrate")  # with the test's umask, 022
    assert migrate.returncode == 0, migrate.stderr
    database = store.connect(url)
    monkeypatch.setattr(app, "DATABASE", database)
    try:
        fill(testapp.get("/").form).submit(status=303)
        # While the app has it open: its -wal and -shm files too.
        files = {path.name: mode(path) for path in folder.iterdir()}
    finally:
        database.close()
    assert mode(folder) == 0o700
    assert files == {name: 0o600 for name in [store.FILE_NAME, *WAL_FILES]}


def test_the_saved_page_shows_the_hobbies_in_the_forms_order(testapp, database, monkeypatch):
    # Stored in whatever order the database returns them; shown as the form lists them.
    backwards = dict(reversed(app.HOBBIES.items()))
    monkeypatch.setattr(app, "HOBBIES", backwards)
    res = fill(testapp.get("/").form).submit(status=303).follow()
    assert result_line(res).endswith("Hobbies: " + ", ".join(backwards.values()))


def test_a_database_url_of_another_kind_is_a_usage_error_not_a_traceback():
    done = run_store("mysql://form@localhost/form", "count")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "DATABASE_URL must start with sqlite:/// or postgresql://" in done.stderr


def test_a_token_sent_again_with_other_answers_keeps_the_first_and_says_so(testapp, database):
    # A browser that brought back a form already sent, its answers changed: the saved answers
    # stay; the new ones come back in the form, with a new token, so that sending them saves them.
    form = testapp.get("/").form
    token = form["token"].value
    first = fill(form).submit(status=303)
    changed = fill(form, age=["35"], hobbies=[]).submit(status=409)
    assert changed.html.find(id="sent-before") is not None
    assert changed.form["age"].value == "35"
    assert changed.form["token"].value not in ("", token)
    assert database.count() == 1
    assert result_line(first.follow()) == result_text(cleaned())
    again = changed.form.submit(status=303)
    assert again.location != first.location and database.count() == 2
    # The same answers sent again, hobbies in another order: the same saved page.
    same = fill(testapp.get("/").form)
    same["token"] = token
    assert same.submit(status=303).location == first.location


# SQLite's group commit (SQLite.save): the saves that queue while a commit runs are written
# together, one commit for all; each still gets its own outcome.
@pytest.fixture
def sqlite_db(tmp_path):
    database = store.connect(f"sqlite:///{tmp_path / 'form.sqlite3'}", threads=1)
    database.migrate()
    yield database
    database.close()


def queued_saves(database, tokens: list[str], values: list[dict]) -> list:
    """Queue saves on threads, in this order, while the test holds the writer; return their
    futures once all wait in the queue."""
    pool = ThreadPoolExecutor(len(tokens))
    futures = []
    for each in zip(tokens, values, strict=True):
        futures.append(pool.submit(database.save, *each))
        wait_until(lambda: len(database.queue) == len(futures), timeout=10)
    pool.shutdown(wait=False)
    return futures


def test_sqlite_saves_queued_during_a_commit_are_committed_together(sqlite_db, monkeypatch):
    batches = []
    write_queued = sqlite_db.write_queued
    monkeypatch.setattr(sqlite_db, "write_queued", lambda: batches.append(1) or write_queued())
    tokens = [secrets.token_urlsafe(16) for _ in range(4)]
    with sqlite_db.writer:  # a commit in progress
        futures = queued_saves(sqlite_db, tokens, [VALUES] * 4)
    assert [future.result(timeout=10) for future in futures] == [True] * 4
    assert batches == [1]  # one transaction for the four
    assert sqlite_db.queue == []
    for token in tokens:
        _, found = sqlite_db.find(token)
        assert {**found, "hobbies": set(found["hobbies"])} == {
            **VALUES,
            "hobbies": set(VALUES["hobbies"]),
        }


def test_sqlite_the_same_form_twice_in_one_batch_is_stored_once(sqlite_db):
    token = secrets.token_urlsafe(16)
    other = {**VALUES, "hobbies": []}
    with sqlite_db.writer:
        futures = queued_saves(sqlite_db, [token, token, token], [VALUES, VALUES, other])
    assert [future.result(timeout=10) for future in futures] == [True, True, False]
    assert sqlite_db.count() == 1


def test_sqlite_a_batch_that_fails_fails_each_save_in_it_and_stores_none(sqlite_db, monkeypatch):
    insert = sqlite_db.insert
    tokens = [secrets.token_urlsafe(16) for _ in range(3)]

    def disk_full_on_the_second(cursor, token, values):
        if token == tokens[1]:
            raise sqlite3.OperationalError("database or disk is full")
        return insert(cursor, token, values)

    monkeypatch.setattr(sqlite_db, "insert", disk_full_on_the_second)
    with sqlite_db.writer:
        futures = queued_saves(sqlite_db, tokens, [VALUES] * 3)
    for future in futures:
        with pytest.raises(store.Unavailable, match="disk is full"):
            future.result(timeout=10)
    assert sqlite_db.count() == 0 and sqlite_db.queue == []
    monkeypatch.undo()
    assert sqlite_db.save(tokens[1], VALUES) is True  # the next one saves


def test_sqlite_a_save_that_gets_no_turn_answers_unavailable_and_is_never_stored(sqlite_db):
    sqlite_db.timeout = 0.2
    token = secrets.token_urlsafe(16)
    with sqlite_db.writer:  # a writer that never finishes in time
        with pytest.raises(store.Unavailable, match="no turn to write"):
            sqlite_db.save(token, VALUES)
        assert sqlite_db.queue == []  # taken out: no later writer stores it
    assert sqlite_db.save(secrets.token_urlsafe(16), VALUES) is True
    assert sqlite_db.find(token) is None and sqlite_db.count() == 1


def test_sqlite_a_save_waits_no_longer_than_its_timeout_for_the_writer_and_the_lock(
    sqlite_db, tmp_path
):
    sqlite_db.timeout = 1.0
    tokens = [secrets.token_urlsafe(16) for _ in range(2)]
    with closing(sqlite3.connect(tmp_path / "form.sqlite3", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding SQLite's lock
        started = time.monotonic()
        with sqlite_db.writer:  # and a commit of this process's own, 0.9 s of the first's 1 s
            [first] = queued_saves(sqlite_db, tokens[:1], [VALUES])
            time.sleep(0.5)
            pool = ThreadPoolExecutor(1)
            second = pool.submit(sqlite_db.save, tokens[1], VALUES)  # its deadline 0.5 s later
            wait_until(lambda: len(sqlite_db.queue) == 2, timeout=10)
            time.sleep(0.4)
        # One batch: its wait for SQLite's lock ends at the first one's deadline, not later.
        for future in (first, second):
            with pytest.raises(store.Unavailable, match="locked"):
                future.result(timeout=10)
        waited = time.monotonic() - started
        other.execute("ROLLBACK")
        pool.shutdown()
    assert 1.0 <= waited < 1.4  # the second's deadline: 1.5 s; a fresh second after 0.9: 1.9
    assert sqlite_db.count() == 0


def test_sqlite_the_connection_keeps_its_busy_timeout_after_waiting_for_the_write_lock(
    sqlite_db, tmp_path
):
    """begin_writing asks for the lock itself, every LOCK_POLL, with SQLite's own wait off; the
    connection's other statements (reads during a checkpoint or a recovery) still wait."""
    sqlite_db.timeout = 0.1
    sqlite_db.save(secrets.token_urlsafe(16), VALUES)
    with closing(sqlite3.connect(tmp_path / "form.sqlite3", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(store.Unavailable, match="locked"):
            sqlite_db.save(secrets.token_urlsafe(16), VALUES)
        other.execute("ROLLBACK")
    sqlite_db.save(secrets.token_urlsafe(16), VALUES)
    busy_timeout = sqlite_db.local.connection.execute("PRAGMA busy_timeout").fetchone()[0]
    assert busy_timeout == store.LOCK_TRY * 1000 > 0


def test_sqlite_a_save_whose_batch_commits_after_its_deadline_is_answered_as_saved(
    sqlite_db, monkeypatch
):
    """A 503 says nothing was stored: a save taken into a batch gets that batch's outcome, even
    when the commit (a slow disk's sync) ends after its own deadline."""
    sqlite_db.timeout = 0.5
    insert = sqlite_db.insert

    def slow_disk(cursor, token, values):
        time.sleep(0.4)  # two of them: the commit ends 0.8 s in
        return insert(cursor, token, values)

    monkeypatch.setattr(sqlite_db, "insert", slow_disk)
    tokens = [secrets.token_urlsafe(16) for _ in range(2)]
    with sqlite_db.writer:
        futures = queued_saves(sqlite_db, tokens, [VALUES] * 2)
    assert [future.result(timeout=10) for future in futures] == [True, True]
    assert sqlite_db.count() == 2


def test_sqlite_a_writer_that_stops_mid_batch_fails_the_saves_it_took(sqlite_db, monkeypatch):
    """Not an answer of 'sent before with other answers' (409) for a save never written."""
    tokens = [secrets.token_urlsafe(16) for _ in range(2)]

    def stops(cursor, token, values):
        raise SystemExit  # anything that is not an Exception: the writer's thread ends

    monkeypatch.setattr(sqlite_db, "insert", stops)
    with sqlite_db.writer:
        futures = queued_saves(sqlite_db, tokens, [VALUES] * 2)
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=10))
        except (SystemExit, store.Unavailable) as error:
            outcomes.append(type(error))
    assert sorted(outcomes, key=str) == sorted([SystemExit, store.Unavailable], key=str)
    assert sqlite_db.count() == 0


def test_sqlite_a_batch_leaves_out_a_save_past_its_deadline_and_waits_for_the_others(
    sqlite_db, tmp_path
):
    """A save whose owner is answering 503 just then is not written, and does not cut short
    the wait of the others in its batch."""
    now = time.monotonic()
    late = store.Pending(secrets.token_urlsafe(16), VALUES, now - 0.01)
    live = store.Pending(secrets.token_urlsafe(16), VALUES, now + 2)
    sqlite_db.queue = [late, live]
    other = sqlite3.connect(
        tmp_path / "form.sqlite3", isolation_level=None, check_same_thread=False
    )
    with closing(other):
        other.execute("BEGIN IMMEDIATE")  # another process's commit, over in 0.3 s
        release = threading.Timer(0.3, other.execute, ["ROLLBACK"])
        release.start()
        with sqlite_db.writer:
            sqlite_db.write_queued()
        release.join()
    assert late.done.is_set() and "no turn" in late.error
    assert live.done.is_set() and (live.error, live.saved) == (None, True)
    assert sqlite_db.find(late.token) is None and sqlite_db.count() == 1
