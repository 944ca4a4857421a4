"""Storage: each valid submission kept exactly once, durably, in SQLite or PostgreSQL.

DATABASE_URL chooses the database: unset, an SQLite file in the app's state folder (systemd's
$STATE_DIRECTORY, else data/ in the checkout); `sqlite:////absolute/path`; or `postgresql://...`.
A save is committed before the app answers: SQLite in WAL mode with synchronous=FULL, PostgreSQL
with its default synchronous commit. The form's one-time token is unique, so a resent POST stores
nothing twice. Any fault of the database raises Unavailable within TIMEOUT seconds: the app answers
503 with the values kept, and the next request tries again.

The schema changes once per deploy, never by the instances at start: `python -m store migrate`
(the Procfile's release: line, the form-app-task@migrate unit, `make run`). The same command line
backs up, restores and purges: `python -m store --help`.
"""

import argparse
import os
import re
import sqlite3
import subprocess  # pg_dump and pg_restore, for backups  # nosec B404
import sys
import threading
import time
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILE_NAME = "form.sqlite3"
# How long a save may wait for the database (a lock, a connection) before the app answers 503:
# under nginx's proxy_read_timeout (3 s, deploy/form-app.conf), so the person gets the app's page.
TIMEOUT = 2.0
BACKUPS_KEPT = 7  # `backup` deletes the oldest of its copies beyond these

# The schema, one migration a version, each a list of statements run in one transaction; a
# deploy runs the ones the database has not had. {id} and {time} are the two types that differ.
# Migrations only add: an instance still running the previous code keeps working on the new schema.
MIGRATIONS = [
    [  # 1: each submission, when it was received, its values; its hobbies, one row each
        """CREATE TABLE submission (
            id {id},
            token text NOT NULL UNIQUE,  -- the form's one-time token: a resent POST adds nothing
            received {time} NOT NULL,
            age integer  -- NULL: left empty
        )""",
        "CREATE INDEX submission_received ON submission (received)",
        """CREATE TABLE submission_hobby (
            submission_id bigint NOT NULL REFERENCES submission (id),
            hobby text NOT NULL,
            PRIMARY KEY (submission_id, hobby)
        )""",
    ],
]
TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "time": "text"},
    "postgresql": {"id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "time": "timestamptz"},
}
VERSION = "SELECT max(version) FROM schema_version"

# A save: the submission, then its hobbies. The columns are the form's fields, from the values
# validate() returns (code, never what was sent): a new field is a migration that adds its column.
INSERT = "INSERT INTO submission (token, received{columns}) VALUES (?, ?{marks}) "
INSERT_END = "ON CONFLICT (token) DO NOTHING RETURNING id"
INSERT_HOBBY = "INSERT INTO submission_hobby (submission_id, hobby) VALUES (?, ?)"
FIND = "SELECT * FROM submission WHERE token = ?"
FIND_HOBBIES = "SELECT hobby FROM submission_hobby WHERE submission_id = ?"
PURGE = [
    "DELETE FROM submission_hobby WHERE submission_id IN "
    "(SELECT id FROM submission WHERE received < ?)",
    "DELETE FROM submission WHERE received < ?",
]
COUNT = "SELECT count(*) FROM submission"


class Unavailable(Exception):
    """The database cannot save or read just now (stopped, locked, slow, full, read-only, or
    not migrated): the app answers 503 and keeps the person's values."""


def now() -> datetime:
    """Return the time now, in UTC, to the microsecond."""
    return datetime.now(UTC)


def database_url() -> str:
    """Return DATABASE_URL, or the default: an SQLite file in the app's state folder."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    folder = Path(os.environ.get("STATE_DIRECTORY", HERE / "data"))  # systemd's StateDirectory=
    return f"sqlite:///{folder / FILE_NAME}"


def connect(url: str | None = None, threads: int = 4) -> "SQLite | PostgreSQL":
    """Return the database DATABASE_URL (or url) names; nothing is opened until first used."""
    url = url or database_url()
    if url.startswith("sqlite:///"):
        return SQLite(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgreSQL(url, threads)
    raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")


def saved_values(row: dict, hobbies: list[str]) -> dict:
    """Return a stored submission as validate() returned its values: strings, "" for NULL."""
    values = {name: "" if value is None else str(value) for name, value in row.items()}
    for name in ("id", "token", "received"):
        del values[name]
    return {**values, "hobbies": hobbies}


class Database:
    """What both databases do, in the SQL above; each subclass says how to reach its own."""

    kind = ""
    marker = "?"  # the parameter marker in the SQL above; PostgreSQL's driver takes %s

    def sql(self, statement: str) -> str:
        return statement.replace("?", self.marker)

    def save(self, token: str, values: dict) -> None:
        """Store a submission's cleaned values, once: a token already stored adds nothing."""
        fields = {name: value or None for name, value in values.items() if name != "hobbies"}
        insert = INSERT.format(
            columns="".join(f", {name}" for name in fields), marks=", ?" * len(fields)
        )
        with self.transaction() as cursor:
            cursor.execute(
                self.sql(insert + INSERT_END), [token, self.time(now()), *fields.values()]
            )
            row = cursor.fetchone()
            if row is not None:  # a new submission, not one sent again
                hobbies = [(row[0], hobby) for hobby in values["hobbies"]]
                cursor.executemany(self.sql(INSERT_HOBBY), hobbies)

    def find(self, token: str) -> tuple[datetime, dict] | None:
        """Return when a submission was received and its values, or None if none has the token."""
        with self.transaction() as cursor:
            cursor.execute(self.sql(FIND), [token])
            row = cursor.fetchone()
            if row is None:
                return None
            row = dict(zip([column[0] for column in cursor.description], row, strict=True))
            cursor.execute(self.sql(FIND_HOBBIES), [row["id"]])
            hobbies = [hobby for (hobby,) in cursor.fetchall()]
        return self.from_time(row["received"]), saved_values(row, hobbies)

    def count(self) -> int:
        with self.transaction() as cursor:
            cursor.execute(COUNT)
            return cursor.fetchone()[0]

    def purge(self, older_than: timedelta) -> int:
        """Delete the submissions received longer ago than older_than; return how many."""
        cutoff = self.time(now() - older_than)
        with self.transaction(lock=True) as cursor:
            cursor.execute(self.sql(PURGE[0]), [cutoff])
            cursor.execute(self.sql(PURGE[1]), [cutoff])
            return cursor.rowcount

    def migrate(self) -> list[int]:
        """Bring the schema up to date, one transaction a version; return the versions run."""
        ran = []
        with self.transaction(lock=True, check=False) as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        for version, statements in enumerate(MIGRATIONS, start=1):
            with self.transaction(lock=True, check=False) as cursor:
                cursor.execute(VERSION)
                if (cursor.fetchone()[0] or 0) >= version:
                    continue
                for statement in statements:
                    cursor.execute(statement.format(**TYPES[self.kind]))
                cursor.execute(
                    self.sql("INSERT INTO schema_version (version) VALUES (?)"), [version]
                )
            ran.append(version)
        return ran

    def check_schema(self, cursor) -> None:
        """Refuse to use a database whose schema is older than this code's."""
        try:
            cursor.execute(VERSION)
            version = cursor.fetchone()[0] or 0
        except self.errors:
            version = 0
        if version < len(MIGRATIONS):
            raise Unavailable(
                f"the database's schema is at version {version}, this code needs "
                f"{len(MIGRATIONS)}: run `python -m store migrate`"
            )


class SQLite(Database):
    """An SQLite file: one connection a thread, kept; closed after any fault, so the next
    request opens it afresh (a file restored, a disk remounted). The process's threads take
    turns to write on a lock of their own: SQLite's own wait for its write lock sleeps between
    tries (up to 100 ms) and lets a newcomer in first, which under load halved the stored POST
    rate and made a few saves wait their whole TIMEOUT (`make bench`)."""

    kind = "sqlite"
    errors = sqlite3.Error

    def __init__(self, path: Path):
        self.path = path
        self.local = threading.local()
        self.writing = threading.Lock()  # this process's turn to write

    def __str__(self):
        return str(self.path)

    def time(self, moment: datetime) -> str:
        return moment.isoformat(sep=" ")  # sorts as time does: always UTC, to the microsecond

    def from_time(self, text: str) -> datetime:
        return datetime.fromisoformat(text)

    def open(self, check: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old_umask = os.umask(0o077)  # the file and its -wal and -shm: the app's user's alone
        try:
            connection = sqlite3.connect(self.path, timeout=TIMEOUT, isolation_level=None)
        finally:
            os.umask(old_umask)
        try:
            connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
            connection.execute("PRAGMA synchronous = FULL")  # each commit on disk, WAL file synced
            if check:
                self.check_schema(connection.cursor())
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def transaction(self, lock: bool = True, check: bool = True):
        """Run a transaction on this thread's connection; IMMEDIATE takes the write lock at once,
        so it cannot fail half-way on a lock. A writer waits at most TIMEOUT in all: for its
        turn in this process, then for another process's write lock."""
        connection = getattr(self.local, "connection", None)
        deadline = time.monotonic() + TIMEOUT
        try:
            if connection is None:
                connection = self.local.connection = self.open(check)
            if lock and not self.writing.acquire(timeout=TIMEOUT):
                raise Unavailable(f"SQLite {self.path}: no turn to write within {TIMEOUT} s")
            try:
                if lock:  # what is left of TIMEOUT, for SQLite's wait on other processes
                    left = max(0, round((deadline - time.monotonic()) * 1000))
                    connection.execute(f"PRAGMA busy_timeout = {left}")
                connection.execute("BEGIN IMMEDIATE" if lock else "BEGIN")
                try:
                    yield connection.cursor()
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
            finally:
                if lock:
                    self.writing.release()
        except sqlite3.Error as error:
            self.close()
            raise Unavailable(f"SQLite {self.path}: {error}") from error
        except Unavailable:
            self.close()
            raise

    def close(self) -> None:
        """Close this thread's connection; the next transaction opens another."""
        connection = self.local.__dict__.pop("connection", None)
        if connection is not None:
            connection.close()

    def backup(self, target: Path) -> None:
        """Copy the database, consistent, while the app writes to it (SQLite's backup API)."""
        with (
            closing(sqlite3.connect(self.path)) as source,
            closing(sqlite3.connect(target)) as copy,
        ):
            source.backup(copy)

    def restore(self, backup: Path) -> None:
        """Replace the database's contents with a backup's (stop the app first)."""
        with closing(sqlite3.connect(backup)) as source, closing(sqlite3.connect(self.path)) as db:
            source.backup(db)


class PostgreSQL(Database):
    """A PostgreSQL server: one pool of connections a process, as many as Waitress's threads."""

    kind = "postgresql"
    marker = "%s"

    def __init__(self, url: str, threads: int):
        import psycopg
        import psycopg_pool

        self.url = url
        self.errors = (psycopg.Error, psycopg_pool.PoolTimeout)
        # Timeouts bound a save: reaching the server, a lock or a slow statement, a free connection.
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=threads,
            open=False,
            timeout=TIMEOUT,
            kwargs={"connect_timeout": 2, "options": f"-c statement_timeout={int(TIMEOUT * 1000)}"},
            check=psycopg_pool.ConnectionPool.check_connection,  # one that broke is replaced
            configure=self.configure,
        )
        self.opened = threading.Lock()

    def __str__(self):
        return re.sub(r"//[^@/]*@", "//", self.url)  # without a password

    def time(self, moment: datetime) -> datetime:
        return moment

    def from_time(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC)

    def configure(self, connection) -> None:
        connection.autocommit = True  # transactions are explicit, below

    @contextmanager
    def transaction(self, lock: bool = True, check: bool = True):
        """Run a transaction on a pooled connection; the migration lock when lock and not check."""
        with self.opened:
            if self.pool.closed:
                self.pool.open(
                    wait=False
                )  # connects in the background: a server down is no failure
        try:
            with self.pool.connection() as connection, connection.transaction():
                cursor = connection.cursor()
                if not check:  # a migration: one at a time, whoever runs it
                    cursor.execute("SELECT pg_advisory_xact_lock(4242)")
                elif not getattr(connection, "schema_checked", False):
                    self.check_schema(cursor)
                    connection.schema_checked = True
                yield cursor
        except self.errors as error:
            raise Unavailable(f"PostgreSQL {self}: {error}") from error

    def close(self) -> None:
        self.pool.close()

    def backup(self, target: Path) -> None:
        """Dump the database, consistent, while the app writes to it (pg_dump)."""
        dump = ["pg_dump", "--format=custom", "--no-owner", f"--file={target}", self.url]
        subprocess.run(dump, check=True)  # fixed programs, the operator's URL  # nosec B603

    def restore(self, backup: Path) -> None:
        """Replace the database's contents with a dump's (stop the app first)."""
        restore = ["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={self.url}"]
        subprocess.run([*restore, str(backup)], check=True)  # nosec


def backups_folder(database) -> Path:
    """Where `backup` writes: BACKUP_DIRECTORY, else backups/ beside an SQLite file, else under
    the app's state folder."""
    if folder := os.environ.get("BACKUP_DIRECTORY"):
        return Path(folder)
    if isinstance(database, SQLite):
        return database.path.parent / "backups"
    return Path(os.environ.get("STATE_DIRECTORY", HERE / "data")) / "backups"


def backup(database) -> Path:
    """Write a consistent copy of the database, named by the time; keep the last BACKUPS_KEPT."""
    folder = backups_folder(database)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    suffix = ".sqlite3" if isinstance(database, SQLite) else ".dump"
    target = folder / f"form-{now():%Y%m%dT%H%M%SZ}{suffix}"
    partial = target.with_suffix(".partial")
    old_umask = os.umask(0o077)
    try:
        database.backup(partial)
    finally:
        os.umask(old_umask)
    partial.rename(target)  # only whole copies carry the name
    for old in sorted(folder.glob(f"form-*{suffix}"))[:-BACKUPS_KEPT]:
        old.unlink()
    return target


def days(text: str) -> timedelta:
    """Parse a number of days, such as `365`, for purge."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of days above 0: {text!r}")
    return timedelta(days=int(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the schema up to date (once per deploy)")
    commands.add_parser("backup", help="write a consistent copy while the app serves")
    restore = commands.add_parser("restore", help="replace the contents with a backup's")
    restore.add_argument("file", type=Path)
    purge = commands.add_parser("purge", help="delete submissions older than DAYS")
    purge.add_argument("days", type=days, nargs="?", default=os.environ.get("PURGE_AFTER_DAYS"))
    commands.add_parser("count", help="print how many submissions are stored")
    args = parser.parse_args(argv)
    database = connect(threads=1)
    try:
        if args.command == "migrate":
            ran = database.migrate()
            print(f"{database}: schema at version {len(MIGRATIONS)}; ran {ran or 'none'}")
        elif args.command == "backup":
            print(backup(database))
        elif args.command == "restore":
            if not args.file.is_file():
                parser.error(f"no such backup: {args.file}")
            database.restore(args.file)
            print(f"{database}: restored from {args.file}; {database.count()} submissions")
        elif args.command == "purge":
            if args.days is None:
                parser.error("say how old: purge DAYS, or set PURGE_AFTER_DAYS")
            older_than = days(args.days) if isinstance(args.days, str) else args.days
            print(f"{database}: deleted {database.purge(older_than)} submissions")
        else:
            print(database.count())
    except Unavailable as error:
        sys.exit(f"store {args.command}: {error}")
    finally:
        database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
