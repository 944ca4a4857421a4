"""Storage: each valid submission kept exactly once, durably, in SQLite or PostgreSQL.

DATABASE_URL chooses the database: unset, an SQLite file in the app's state folder (systemd's
$STATE_DIRECTORY, else data/ in the checkout); `sqlite:////absolute/path`; or `postgresql://...`.
A save is committed before the app answers: SQLite in WAL mode with synchronous=FULL, PostgreSQL
with its default synchronous commit. The form's one-time token is unique, so a resent POST stores
nothing twice. Any fault of the database raises Unavailable within TIMEOUT seconds (half a second
more for a PostgreSQL server that answers nothing at all): the app answers 503 with the values
kept, and the next request tries again, on a connection opened afresh if the fault broke it.

The schema changes once per deploy, never by the instances at start: `python -m store migrate`
(the Procfile's release: line, the form-app-task@migrate unit, `make run`). The same command line
backs up, restores and purges: `python -m store --help`.

The owner's results page reads figures the database computes (results()), and the CSV export
every submission, fetched in batches as it is sent (export()).
"""

import argparse
import itertools
import math
import os
import re
import socket
import sqlite3
import subprocess  # pg_dump and pg_restore, for backups  # nosec B404
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILE_NAME = "form.sqlite3"
# How long a save may wait for the database (a lock, a connection) before the app answers 503:
# under nginx's proxy_read_timeout (3 s, deploy/form-app.conf), so the person gets the app's page.
TIMEOUT = 2.0
# The command line's wait for a lock or a statement (migrate, purge): an operator's work may take
# longer, and no proxy waits for it.
COMMAND_TIMEOUT = 600.0
# A PostgreSQL server that answers nothing at all (frozen, or its host gone while its kernel still
# acknowledges) is cut off this long after the timeout: no libpq timeout covers it (Watchdog).
CUT_OFF_AFTER = 0.5
LOCK_TRY = 0.05  # SQLite: how long a statement waits for a lock (its busy timeout)
LOCK_POLL = 0.0005  # SQLite: how often a writer asks again for the write lock (begin_writing)
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
    [  # 2: the owner's results at a million rows: the ages' histogram, each hobby's count
        "CREATE INDEX submission_age ON submission (age)",
        "CREATE INDEX submission_hobby_hobby ON submission_hobby (hobby)",
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

# The owner's results, each figure an aggregate the database computes (Database.results). {name}
# is a column of the form's fields, checked against the table's columns before it is put here.
COLUMNS = {  # each column's name and SQL type: an integer column is a number, any other text
    "sqlite": "SELECT name, type FROM pragma_table_info('submission')",
    "postgresql": "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
    "WHERE attrelid = 'submission'::regclass AND attnum > 0 AND NOT attisdropped",
}
LAST = "SELECT max(received) FROM submission"
HOBBY_COUNT = "SELECT count(*) FROM submission_hobby WHERE hobby = ?"
VALUE_COUNTS = "SELECT {name}, count(*) FROM submission GROUP BY {name}"  # NULL: left empty
TOP_VALUES = (
    "SELECT {name}, count(*) FROM submission WHERE {name} IS NOT NULL "
    "GROUP BY {name} ORDER BY count(*) DESC, {name} LIMIT ?"
)
ANSWERED = "SELECT count({name}) FROM submission"
PER_DAY = "SELECT {day} AS day, count(*) FROM submission WHERE received >= ? GROUP BY day"
DAY = {"sqlite": "substr(received, 1, 10)", "postgresql": "(received AT TIME ZONE 'UTC')::date"}
# The export (Database.export): every submission by id, a column a field, then one a hobby,
# true if it was chosen. One pass over both tables in id order (a merge join on PostgreSQL).
EXPORT = (
    "SELECT received{columns}{hobbies} FROM submission "
    "LEFT JOIN submission_hobby ON submission_id = id GROUP BY id ORDER BY id"
)
EXPORT_HOBBY = ", count(CASE hobby WHEN ? THEN 1 END) > 0"
DECLARE = "DECLARE export NO SCROLL CURSOR FOR "  # PostgreSQL: the export fetched in batches
FETCH = "FETCH FORWARD {count} FROM export"
NOT_FIELDS = {"id", "token", "received"}  # never a field's: a token is the key to a saved page
MOST_BARS = 16  # a histogram's bars at most
TOP = 10  # a text field's most common answers shown
EXPORT_BATCH = 10_000  # rows fetched at a time: memory stays flat, the round trips few


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


def connect(
    url: str | None = None, threads: int = 4, timeout: float = TIMEOUT
) -> "SQLite | PostgreSQL":
    """Return the database DATABASE_URL (or url) names; nothing is opened until first used.
    Each transaction waits `timeout` seconds at most (a lock, a connection, a statement)."""
    url = url or database_url()
    if url.startswith("sqlite:///"):
        return SQLite(Path(url.removeprefix("sqlite:///")), timeout)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgreSQL(url, threads, timeout)
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

    def save(self, token: str, values: dict) -> bool:
        """Store a submission's cleaned values, once: a token already stored adds nothing. Return
        False if the token was stored with other values (a form sent, changed, then sent again
        with its old token): nothing is stored then, and the app says so."""
        with self.transaction() as cursor:
            return self.insert(cursor, token, values)

    def insert(self, cursor, token: str, values: dict) -> bool:
        """Store a submission in a write transaction: what save() does."""
        fields = {name: value or None for name, value in values.items() if name != "hobbies"}
        insert = INSERT.format(
            columns="".join(f", {name}" for name in fields), marks=", ?" * len(fields)
        )
        cursor.execute(self.sql(insert + INSERT_END), [token, self.time(now()), *fields.values()])
        row = cursor.fetchone()
        if row is not None:  # a new submission, not one sent again
            cursor.executemany(self.sql(INSERT_HOBBY), [(row[0], h) for h in values["hobbies"]])
            return True
        _, stored = self.read(cursor, token)
        return {**stored, "hobbies": set(stored["hobbies"])} == {
            **values,
            "hobbies": set(values["hobbies"]),
        }

    def find(self, token: str) -> tuple[datetime, dict] | None:
        """Return when a submission was received and its values, or None if none has the token."""
        with self.transaction(lock=False) as cursor:
            return self.read(cursor, token)

    def read(self, cursor, token: str) -> tuple[datetime, dict] | None:
        cursor.execute(self.sql(FIND), [token])
        row = cursor.fetchone()
        if row is None:
            return None
        row = dict(zip([column[0] for column in cursor.description], row, strict=True))
        cursor.execute(self.sql(FIND_HOBBIES), [row["id"]])
        hobbies = [hobby for (hobby,) in cursor.fetchall()]
        return self.from_time(row["received"]), saved_values(row, hobbies)

    def count(self) -> int:
        with self.transaction(lock=False) as cursor:
            cursor.execute(COUNT)
            return cursor.fetchone()[0]

    def results(self, fields: list[str], hobbies: list[str], days: int = 30) -> dict:
        """Return the figures of the owner's results page, each computed by the database in one
        read transaction: how many submissions and when the last came; each hobby's count, in
        the order given (0 for one never chosen); for each field, in the order given, how many
        left it empty and either (integer column) a histogram, bins (low, high, count) with
        low..high inclusive, or (text) the TOP most common answers, (value, count), and how many
        others; and submissions per UTC day, the last `days` days up to today, oldest first."""
        today = now().date()
        first_day = today - timedelta(days=days - 1)
        since = self.time(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC))
        with self.transaction(lock=False) as cursor:
            kinds = self.kinds(cursor, fields)
            cursor.execute(COUNT)
            count = cursor.fetchone()[0]
            cursor.execute(LAST)
            last = cursor.fetchone()[0]
            chosen = []
            for hobby in hobbies:
                cursor.execute(self.sql(HOBBY_COUNT), [hobby])
                chosen.append((hobby, cursor.fetchone()[0]))
            figures = {name: self.figures(cursor, name, kinds[name], count) for name in fields}
            cursor.execute(self.sql(PER_DAY.format(day=DAY[self.kind])), [since])
            per_day = {str(day): number for day, number in cursor.fetchall()}
        dates = [first_day + timedelta(days=n) for n in range(days)]
        return {
            "count": count,
            "last": None if last is None else self.from_time(last),
            "hobbies": chosen,
            "fields": figures,
            "days": [(day, per_day.get(day.isoformat(), 0)) for day in dates],
        }

    def kinds(self, cursor, fields: list[str]) -> dict[str, str]:
        """Return each field's kind, "number" (an integer column) or "text", from the table's
        columns; a field with no column of its own is a fault of the schema (Unavailable)."""
        cursor.execute(COLUMNS[self.kind])
        types = {name: type.lower() for name, type in cursor.fetchall()}
        for name in fields:  # checked before any name is put into SQL
            if name not in types or name in NOT_FIELDS:
                raise Unavailable(f"the submission table has no column for the field {name!r}")
        # "int" in the type: SQLite's own rule for an integer column; PostgreSQL's integer types.
        return {name: "number" if "int" in types[name] else "text" for name in fields}

    def figures(self, cursor, name: str, kind: str, count: int) -> dict:
        """Return one field's figures for results(): a histogram, or the most common answers."""
        if kind == "number":
            cursor.execute(VALUE_COUNTS.format(name=name))
            counts = dict(cursor.fetchall())
            empty = counts.pop(None, 0)
            return {"kind": kind, "empty": empty, "bins": histogram(counts)}
        cursor.execute(self.sql(TOP_VALUES.format(name=name)), [TOP])
        top = cursor.fetchall()
        cursor.execute(ANSWERED.format(name=name))
        answered = cursor.fetchone()[0]
        others = answered - sum(number for _, number in top)
        return {"kind": kind, "empty": count - answered, "top": top, "others": others}

    def export(self, fields: list[str], hobbies: list[str]) -> Iterator[tuple]:
        """Return every submission, oldest first: (received, each field's value, each hobby as
        a bool). The query has run when this returns (Unavailable, if it could not); the rows
        come from a generator, fetched EXPORT_BATCH at a time, which raises Unavailable if the
        database fails on the way. Close it (or read it to the end) to release the connection."""
        with self.transaction(lock=False) as cursor:
            self.kinds(cursor, fields)
        statement = EXPORT.format(
            columns="".join(f", {name}" for name in fields), hobbies=EXPORT_HOBBY * len(hobbies)
        )
        rows = self.stream(self.sql(statement), hobbies, 1 + len(fields))
        next(rows)  # the query, and its first batch
        return rows

    def stream(self, statement: str, params: list, bools: int) -> Iterator:
        """Yield None once the query's first batch is fetched, then each row: its time
        converted, and the columns from `bools` on as bools (SQLite gives 0 or 1)."""
        with self.reading(statement, params) as cursor:
            batch = self.fetch(cursor)
            yield None
            while batch:
                for row in batch:
                    yield (self.from_time(row[0]), *row[1:bools], *map(bool, row[bools:]))
                batch = self.fetch(cursor)

    def fetch(self, cursor) -> list:
        """Return the export's next batch of rows, [] at the end."""
        return cursor.fetchmany(EXPORT_BATCH)

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


def histogram(counts: dict[int, int]) -> list[tuple[int, int, int]]:
    """Return the bins of a histogram of integers, given how many times each value came: (low,
    high, count), low..high inclusive, MOST_BARS at most, contiguous from the lowest value's
    bin to the highest's, empty ones included; each as wide as the narrowest of 1, 2, 5, 10, 20,
    50... that makes MOST_BARS enough, and starting at a multiple of that width."""
    if not counts:
        return []
    lowest, highest = min(counts), max(counts)
    width = next(width for width in widths() if highest // width - lowest // width < MOST_BARS)
    start = lowest // width
    bins = [
        [number * width, number * width + width - 1, 0]
        for number in range(start, highest // width + 1)
    ]
    for value, count in counts.items():
        bins[value // width - start][2] += count
    return [tuple(each) for each in bins]


def widths() -> Iterator[int]:
    """Yield 1, 2, 5, 10, 20, 50, 100... the widths a histogram's bins may have."""
    for power in itertools.count():
        for step in (1, 2, 5):
            yield step * 10**power


def use_wal(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode (kept in the file: a no-op once done). Two processes doing it to
    a new file at once (two migrations): SQLite refuses one at once, without waiting for the
    lock as it does elsewhere, so it tries again for up to TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLite(Database):
    """An SQLite file: one connection a thread, kept; closed after any fault, so the next
    request opens it afresh (a file restored, a disk remounted)."""

    kind = "sqlite"
    errors = (sqlite3.Error, OSError)  # OSError: its folder cannot be made

    def __init__(self, path: Path, timeout: float = TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.local = threading.local()
        # One writer a process, the others waiting here: SQLite lets one at a time anyway, and
        # a thread waiting for a threading.Lock is woken the moment it is free, where SQLite's
        # lock is only asked for again and again (begin_writing).
        self.writer = threading.Lock()
        self.queue: list[Pending] = []  # the saves waiting for the writer (save)
        self.queue_lock = threading.Lock()
        self.connections = set()  # every thread's, for close()
        self.connections_lock = threading.Lock()

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
            # Used by one thread only, but closed by close() from another.
            connection = sqlite3.connect(
                self.path, timeout=LOCK_TRY, isolation_level=None, check_same_thread=False
            )
        finally:
            os.umask(old_umask)
        try:
            use_wal(connection)  # readers never wait for the writer
            connection.execute("PRAGMA synchronous = FULL")  # each commit on disk, WAL file synced
            if check:
                self.check_schema(connection.cursor())
        except BaseException:
            connection.close()
            raise
        return connection

    def save(self, token: str, values: dict) -> bool:
        """Store a submission as Database.save does, in one transaction with the other saves
        that this process's threads queued meanwhile: one commit, and one wait for the disk,
        for all of them (group commit). While a commit runs, the saves that come queue; the
        first of them to get the writer writes them all, and tells each how it went. Each save
        waits self.timeout at most for the writer and SQLite's lock, as a transaction does: a
        batch's wait for the lock ends at the earliest of its saves' deadlines; then its commit
        (the disk's sync) is waited for, as any commit is."""
        mine = Pending(token, values, time.monotonic() + self.timeout)
        with self.queue_lock:
            self.queue.append(mine)
        if self.writer.acquire(timeout=max(mine.deadline - time.monotonic(), 0)):
            try:
                if not mine.done.is_set():  # else a writer before this one took it
                    self.write_queued()
            finally:
                self.writer.release()
        else:
            with self.queue_lock:
                if mine in self.queue:  # no writer took it: none ever will
                    self.queue.remove(mine)
                    raise Unavailable(self.no_turn())
        # Taken by a writer: its wait for SQLite's lock ended by this save's deadline at the
        # latest, and it may be committing it now. Its outcome is this save's, as a thread's
        # own commit would be: a 503 must mean that nothing was stored.
        mine.done.wait()
        if mine.error is not None:
            raise Unavailable(mine.error)
        return mine.saved

    def write_queued(self) -> None:
        """Write every queued save in one transaction, holding the writer; tell each how it went."""
        with self.queue_lock:
            batch, self.queue = self.queue, []
        now = time.monotonic()
        for late in [each for each in batch if each.deadline <= now]:  # its 503 is due
            late.error = self.no_turn()
            late.done.set()
            batch.remove(late)
        if not batch:
            return
        try:
            deadline = min(each.deadline for each in batch)
            with self.transaction(lock=False, write=True, deadline=deadline) as cursor:
                for each in batch:
                    each.saved = self.insert(cursor, each.token, each.values)
            for each in batch:
                each.error = None
        except Exception as error:  # its text only: its traceback would keep the cursor open
            for each in batch:
                each.error = str(error)
        finally:
            for each in batch:
                each.done.set()

    def no_turn(self) -> str:
        """What a save or a transaction that got no turn to write in time says."""
        return f"SQLite {self.path}: no turn to write in {self.timeout} s"

    @contextmanager
    def transaction(
        self, lock: bool = True, check: bool = True, write: bool = False, deadline: float = 0
    ):
        """Run a transaction on this thread's connection; when lock (taking this process's
        writer), or write (its writer already held), IMMEDIATE takes SQLite's write lock at
        once, so that it cannot fail half-way on a lock. It waits self.timeout at most, or
        until the deadline if one is given."""
        deadline = deadline or time.monotonic() + self.timeout
        if lock and not self.writer.acquire(timeout=self.timeout):
            raise Unavailable(self.no_turn())
        try:
            connection = getattr(self.local, "connection", None)
            if connection is not None and self.local.file != file_id(self.path):
                self.drop()  # the file was deleted or replaced: its old inode is nobody's
                connection = None
            if connection is None:
                connection = self.local.connection = self.open(check)
                self.local.file = file_id(self.path)
                with self.connections_lock:
                    self.connections.add(connection)
            if lock or write:
                begin_writing(connection, deadline)
            else:
                connection.execute("BEGIN")
            try:
                yield connection.cursor()
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except self.errors as error:
            self.drop()
            raise Unavailable(f"SQLite {self.path}: {error}") from error
        except Unavailable:
            self.drop()
            raise
        finally:
            if lock:
                self.writer.release()

    @contextmanager
    def reading(self, statement: str, params: list):
        """Run an export's query in a read transaction on a connection of its own, closed at
        the end: the thread's own stays free for whatever it does meanwhile. The transaction
        holds its snapshot as long as the export reads, and no checkpoint can go past it
        meanwhile, so the -wal file grows with the saves made during the export: acceptable for
        an export of a few seconds a million rows; the first checkpoint after it catches up."""
        try:
            with closing(self.open(check=True)) as connection:
                connection.execute("BEGIN")
                yield connection.execute(statement, params)
        except self.errors as error:
            raise Unavailable(f"SQLite {self.path}: {error}") from error

    def drop(self) -> None:
        """Close this thread's connection; its next transaction opens another."""
        connection = self.local.__dict__.pop("connection", None)
        if connection is not None:
            with self.connections_lock:
                self.connections.discard(connection)
            connection.close()

    def close(self) -> None:
        """Close every thread's connection (the threads done with it: a command, a test)."""
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            connection.close()
        self.local = threading.local()

    def backup(self, target: Path) -> None:
        """Copy the database, consistent, while the app writes to it (SQLite's backup API)."""
        if not self.path.is_file():  # connect() would make an empty one
            raise Unavailable(f"SQLite {self.path}: no such file")
        with (
            closing(sqlite3.connect(self.path)) as source,
            closing(sqlite3.connect(target)) as copy,
        ):
            source.backup(copy)

    def restore(self, backup: Path) -> None:
        """Replace the database's contents with a backup's (stop the app first); a file made
        anew, on a new machine, is made as open() makes it: the app's user's alone."""
        with closing(sqlite3.connect(backup)) as source:
            try:  # checked first: any other SQLite file would replace every row, then fail
                self.check_schema(source.cursor())
            except Unavailable as error:
                raise Unavailable(f"{backup} is not a backup of this app's database") from error
            with closing(self.open(check=False)) as db:
                source.backup(db)


class Pending:
    """A save queued for SQLite's writer (SQLite.save): its values, then how it went."""

    def __init__(self, token: str, values: dict, deadline: float):
        self.token, self.values, self.deadline = token, values, deadline
        self.done = threading.Event()  # set once its transaction is over, committed or not
        self.saved = False  # what Database.save returns, once committed
        self.error: str | None = "its writer stopped"  # None once committed


def file_id(path: Path) -> tuple[int, int] | None:
    """Return which file a path names now (device and inode), or None if there is none: a
    connection kept open to a file since deleted or replaced would save where nobody reads."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def begin_writing(connection: sqlite3.Connection, deadline: float) -> None:
    """Take SQLite's write lock (BEGIN IMMEDIATE), asking again every LOCK_POLL until the deadline.
    SQLite's own wait asks again further and further apart (1, 2, 5, 10 ms and on, up to 100):
    another process's writer, which commits in well under a millisecond and at once takes the
    lock again for its next batch, won nearly every turn; at full load, a writer that had waited
    long lost its turn to those that had just come, until it gave up ("database is locked")."""
    connection.execute("PRAGMA busy_timeout = 0")  # this statement alone asks but once
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {round(LOCK_TRY * 1000)}")


class PostgreSQL(Database):
    """A PostgreSQL server: one pool of connections a process, as many as Waitress's threads."""

    kind = "postgresql"
    marker = "%s"

    def __init__(self, url: str, threads: int, timeout: float = TIMEOUT):
        import psycopg
        import psycopg_pool

        self.url = url
        self.errors = (psycopg.Error, psycopg_pool.PoolTimeout)
        # Timeouts bound a save: a free connection, reaching the server (TIMEOUT, even for the
        # command line: a server down is said at once), a lock or a slow statement (timeout).
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=threads,
            open=False,
            timeout=TIMEOUT,
            # A failed connection is tried again for this long, then anew when a save needs one:
            # by default the pool backs off for minutes, and a server back up would go unused.
            reconnect_timeout=TIMEOUT,
            kwargs={
                "connect_timeout": round(TIMEOUT),
                # UTC: times come back in the UTC the app uses, with no conversion row by row
                "options": f"-c statement_timeout={round(timeout * 1000)} -c TimeZone=UTC",
            },
            check=self.check_connection,  # one that broke while idle is replaced before use
            configure=self.configure,
        )
        self.opened = threading.Lock()
        self.watchdog = Watchdog(timeout + CUT_OFF_AFTER)
        self.local = threading.local()  # this thread's transaction's deadline

    def __str__(self):
        return without_password(self.url)

    def time(self, moment: datetime) -> datetime:
        return moment

    def from_time(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC)

    def configure(self, connection) -> None:
        connection.autocommit = True  # transactions are explicit, below

    def check_connection(self, connection) -> None:
        """Check a connection from the pool (a round trip), within the transaction's deadline.
        One broken: the others, idle beside it, most likely are too (the server restarted), and
        are all replaced at once; the pool would try each in turn, waiting longer after each."""
        try:
            with self.watchdog.watch(connection, self.local.deadline):
                connection.execute("")
        except Exception:
            self.pool.drain()
            raise

    @contextmanager
    def transaction(self, lock: bool = True, check: bool = True):
        """Run a transaction on a pooled connection; the migration lock when lock and not check.
        All of it, the wait for a connection included, is cut off after the watchdog's time."""
        with self.opened:
            if self.pool.closed:  # connects in the background: a server down is no failure
                self.pool.open(wait=False)
        self.local.deadline = deadline = time.monotonic() + self.watchdog.seconds
        try:
            with (
                self.pool.connection() as connection,
                self.watchdog.watch(connection, deadline),
                connection.transaction(),
            ):
                cursor = connection.cursor()
                if not check:  # a migration: one at a time, whoever runs it
                    cursor.execute("SELECT pg_advisory_xact_lock(4242)")
                elif not getattr(connection, "schema_checked", False):
                    self.check_schema(cursor)
                    connection.schema_checked = True
                yield cursor
        except self.errors as error:
            raise Unavailable(f"PostgreSQL {self}: {error}") from error

    @contextmanager
    def reading(self, statement: str, params: list):
        """Declare an export's query as a cursor in a read transaction on a pooled connection:
        each batch is then a FETCH, under the statement timeout, and the watchdog bounds each
        (and the transaction's end) but not the time the reader takes between them. The
        transaction's end closes the cursor on the server."""
        with self.transaction(lock=False) as cursor:
            cursor.execute(DECLARE + statement, params)
            try:
                yield cursor
            finally:
                self.watchdog.extend(cursor.connection, time.monotonic() + self.watchdog.seconds)

    def fetch(self, cursor) -> list:
        """Return the export's next batch, within the watchdog's time."""
        self.watchdog.extend(cursor.connection, time.monotonic() + self.watchdog.seconds)
        cursor.execute(FETCH.format(count=EXPORT_BATCH))
        batch = cursor.fetchall()
        self.watchdog.extend(cursor.connection, math.inf)  # the reader's time, not the server's
        return batch

    def close(self) -> None:
        self.pool.close()

    def backup(self, target: Path) -> None:
        """Dump the database, consistent, while the app writes to it (pg_dump)."""
        self.run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}"])

    def restore(self, backup: Path) -> None:
        """Replace the database's contents with a dump's (stop the app first), all or nothing."""
        restore = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction"]
        self.run([*restore, str(backup)])

    def run(self, command: list[str]) -> None:
        """Run pg_dump or pg_restore, as PATH finds them: they must be of the server's major
        version or newer (Debian: postgresql-client, or /usr/lib/postgresql/N/bin first on PATH).
        The URL goes with --dbname, its password in PGPASSWORD: a command line is anyone's to
        read on the host (ps), its environment its user's alone."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.url)
        environ = dict(os.environ)
        if (password := params.pop("password", None)) is not None:
            environ["PGPASSWORD"] = str(password)
        command = [*command, f"--dbname={make_conninfo(**params)}"]
        try:
            # Fixed programs, with the operator's own URL and file.
            subprocess.run(command, check=True, env=environ)  # nosec
        except FileNotFoundError as error:
            raise Unavailable(f"{command[0]} not found: install PostgreSQL's client") from error
        except subprocess.CalledProcessError as error:  # it has said why, on stderr
            raise Unavailable(f"{command[0]} failed ({error.returncode})") from error


def without_password(url: str) -> str:
    """Return a PostgreSQL URL fit to print or log: without its user and password (up to the
    host's @, the last one: a password may hold another) or a password= parameter."""
    url = re.sub(r"//[^/?#]*@", "//", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1(hidden)", url)


class Watchdog:
    """Cuts off the connection of a save that has outlived its deadline.

    A server that takes what it is sent and never answers (a frozen process, a host that hangs
    while its kernel still acknowledges, a network that drops replies) would hold a thread for
    ever: statement_timeout is the server's own, and libpq's tcp_user_timeout and keepalives see
    nothing wrong. Shutting the socket down ends the wait at once with an error; the pool then
    replaces the connection. One thread for the process, looking a few times a second.
    """

    TICK = 0.1  # seconds between two looks

    def __init__(self, seconds: float):
        self.seconds = seconds  # how long a transaction may last
        self.deadlines: dict = {}  # connection -> time.monotonic() it must be done by
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @contextmanager
    def watch(self, connection, deadline: float):
        """Cut the connection off if this block runs past the deadline; say so if it did."""
        import psycopg

        with self.lock:
            self.deadlines[connection] = deadline
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="watchdog", daemon=True)
                self.thread.start()
        try:
            yield
        except psycopg.OperationalError as error:
            if connection not in self.deadlines:
                raise psycopg.OperationalError(
                    f"no answer from the server in {self.seconds} s: the connection was cut off"
                ) from error
            raise
        finally:
            with self.lock:  # once out, the connection is never cut: the pool may hand it on
                self.deadlines.pop(connection, None)

    def extend(self, connection, deadline: float) -> None:
        """Move a watched connection's deadline (an export's, batch by batch); one cut off
        already stays cut off."""
        with self.lock:
            if connection in self.deadlines:
                self.deadlines[connection] = deadline

    def run(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self.lock:
                now = time.monotonic()
                for connection in [c for c, end in self.deadlines.items() if end <= now]:
                    del self.deadlines[connection]
                    cut_off(connection)


def cut_off(connection) -> None:
    """Shut a connection's socket down: whoever waits on it gets an error at once. Its file
    descriptor stays open (its owner closes it), so the number cannot go to another file."""
    try:
        with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # closed already, by the error it just had: nothing to cut  # nosec B110
        pass


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
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        os.umask(old_umask)
    partial.rename(target)  # only whole copies carry the name
    for old in sorted(folder.glob(f"form-*{suffix}"))[:-BACKUPS_KEPT]:
        old.unlink()
    return target


# The oldest age purge takes: longer ago than any submission (the date type stops at year 1).
MAX_DAYS = 100 * 366


def days(text: str) -> timedelta:
    """Parse a number of days, such as `365`, for purge."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of days above 0: {text!r}")
    if int(text) > MAX_DAYS:  # more would overflow the date type with a traceback
        raise argparse.ArgumentTypeError(f"more than {MAX_DAYS} days: {text!r}")
    return timedelta(days=int(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the schema up to date (once per deploy)")
    commands.add_parser("backup", help="write a consistent copy while the app serves")
    restore = commands.add_parser("restore", help="replace the contents with a backup's")
    restore.add_argument("file", type=Path)
    purge = commands.add_parser("purge", help="delete submissions older than DAYS")
    purge.add_argument(
        "days",
        type=days,  # argparse gives it the default too: PURGE_AFTER_DAYS is checked as DAYS is
        nargs="?",
        default=os.environ.get("PURGE_AFTER_DAYS"),
        help="a whole number of days (default: $PURGE_AFTER_DAYS)",
    )
    commands.add_parser("count", help="print how many submissions are stored")
    args = parser.parse_args(argv)
    try:
        database = connect(threads=1, timeout=COMMAND_TIMEOUT)
    except ValueError as error:  # a DATABASE_URL of another kind
        parser.error(str(error))
    try:
        if args.command == "migrate":
            ran = database.migrate()
            print(f"{database}: schema at version {len(MIGRATIONS)}; ran {ran or 'none'}")
        elif args.command == "backup":
            print(backup(database))
        elif args.command == "restore":
            if not args.file.is_file():  # said before the database is touched (exit status 2)
                restore.error(f"no such backup: {args.file}")
            database.restore(args.file)
            print(f"{database}: restored from {args.file}; {database.count()} submissions")
        elif args.command == "purge":
            if args.days is None:
                purge.error("say how old: purge DAYS, or set PURGE_AFTER_DAYS")
            print(f"{database}: deleted {database.purge(args.days)} submissions")
        else:
            print(database.count())
    except (Unavailable, sqlite3.Error) as error:  # sqlite3's: a backup file that is not one
        sys.exit(f"store {args.command}: {error}")
    finally:
        database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
