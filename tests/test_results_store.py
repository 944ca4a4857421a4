"""The owner's figures and export (store.Database.results and .export), on SQLite and on a real
PostgreSQL: counted by the database, right for a known set of submissions, streamed in batches,
and Unavailable when the database fails, before the first row or on the way.

The page and the CSV built on them are tested with their routes; here, the store's side.
"""

import itertools
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, date, datetime, timedelta

import pytest
from databases import sqlite_url
from helpers import submitted
from test_faults import freeze, thaw

import app
import store
from bench import submissions
from deploy.servers import ROOT

# The seed's field, a number, pinned on purpose: results() and export() read the fields they are
# asked for, whatever else the form has. A text field is added by the tests that need one, under
# a name of their own (NOTE), which no change to the form uses.
FIELDS = ["age"]
NOTE = "test_note"
HOBBIES = list(app.HOBBIES)
VALUES = app.validate(submitted())[0]  # the example submission, cleaned, as the app saves it
# The day the known submissions are saved on: fixed, so that the days' figures are pinned.
TODAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


@pytest.fixture
def sqlite_database(tmp_path):
    """An empty, migrated SQLite database of the test's own, for what only SQLite has."""
    database = store.connect(sqlite_url(tmp_path))
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def postgresql_database(postgres):
    """An empty, migrated database of the test's own on the run's PostgreSQL server, which the
    test may stop or freeze: it is running again after the test."""
    database = store.connect(postgres.create())
    database.migrate()
    yield database
    thaw(postgres)
    if postgres.process.poll() is not None:
        postgres.start()
    database.close()


def save(database, monkeypatch, received: datetime, **values) -> str:
    """Save a submission (the example's values, changed as given) as if received then."""
    token = secrets.token_urlsafe(16)
    with monkeypatch.context() as patch:
        patch.setattr(store, "now", lambda: received)
        database.save(token, {**VALUES, **values})
    return token


def at(day: date, *clock: int) -> datetime:
    """Return a moment of a day, UTC: at(TODAY, 23, 59, 59, 999999)."""
    return datetime(day.year, day.month, day.day, *clock, tzinfo=UTC)


def add_column(database, statement: str = f"ALTER TABLE submission ADD COLUMN {NOTE} text") -> None:
    """Add a field's column as the README's recipe does, in this test's database only."""
    with database.transaction() as cursor:
        cursor.execute(statement)


# results(): the figures of the owner's page.


def test_results_of_an_empty_database_are_zeros(database, monkeypatch):
    monkeypatch.setattr(store, "now", lambda: NOW)
    assert database.results(FIELDS, HOBBIES) == {
        "count": 0,
        "last": None,
        "hobbies": [(hobby, 0) for hobby in HOBBIES],
        "fields": {name: {"kind": "number", "empty": 0, "bins": []} for name in FIELDS},
        "days": [(TODAY - timedelta(days=29 - n), 0) for n in range(30)],
    }


def test_results_count_what_was_stored(database, monkeypatch):
    yesterday, first_day = TODAY - timedelta(days=1), TODAY - timedelta(days=29)
    saved = [
        (at(TODAY, 0, 0, 0), {"age": "7", "hobbies": ["software"]}),  # today's first moment
        (at(yesterday, 23, 59, 59, 999999), {"age": "", "hobbies": []}),  # yesterday's last
        (at(yesterday, 8), {"age": "34", "hobbies": ["knitting"]}),  # a hobby since removed
        (at(first_day, 0, 0, 0), {"age": "34", "hobbies": ["software", "tunning"]}),
        (at(first_day, 0, 0, 0) - timedelta(microseconds=1), {"age": "150"}),  # a day too old
        (at(TODAY, 11, 59, 59, 1), {"age": "", "hobbies": ["tunning", "software"]}),  # the last
    ]
    for received, values in saved:
        save(database, monkeypatch, received, **values)
    monkeypatch.setattr(store, "now", lambda: NOW)
    figures = database.results(FIELDS, ["tunning", "chess", "software"], days=30)

    assert figures["count"] == 6
    assert figures["last"] == at(TODAY, 11, 59, 59, 1)
    assert figures["last"].utcoffset() == timedelta(0)
    # In the order asked; chess, never chosen, is 0; knitting, no longer asked for, is not there.
    assert figures["hobbies"] == [("tunning", 3), ("chess", 0), ("software", 4)]
    assert figures["fields"] == {
        "age": {
            "kind": "number",
            "empty": 2,
            # 7..150 in at most 16 bars: 10 wide, from 0, the empty ones between included.
            "bins": [(0, 9, 1), *[(low, low + 9, 0) for low in range(10, 30, 10)], (30, 39, 2)]
            + [(low, low + 9, 0) for low in range(40, 150, 10)]
            + [(150, 159, 1)],
        }
    }
    days = dict(figures["days"])
    assert list(days) == [first_day + timedelta(days=n) for n in range(30)]  # oldest first
    assert days[TODAY] == 2
    assert days[yesterday] == 2
    assert days[first_day] == 1  # its first moment, and not the moment before
    assert sum(days.values()) == 5
    assert days[TODAY - timedelta(days=2)] == 0


def test_results_over_fewer_days_end_today(database, monkeypatch):
    for days_ago in (0, 1, 2, 3):
        save(database, monkeypatch, NOW - timedelta(days=days_ago))
    monkeypatch.setattr(store, "now", lambda: NOW)
    figures = database.results(FIELDS, HOBBIES, days=3)
    assert figures["days"] == [(TODAY - timedelta(days=n), 1) for n in (2, 1, 0)]
    assert figures["count"] == 4


def test_a_text_field_shows_its_most_common_answers_and_how_many_others(database, monkeypatch):
    add_column(database)
    names = ["Ada"] * 3 + ["Cy"] * 2 + ["Bob"] * 2 + list("DEFGHIJK") + [""] * 2
    random.Random(1).shuffle(names)  # saved in any order  # nosec B311
    for name in names:
        save(database, monkeypatch, NOW, **{NOTE: name})
    figures = database.results([NOTE, *FIELDS], HOBBIES)["fields"]
    assert list(figures) == [NOTE, *FIELDS]  # in the order asked
    assert figures[NOTE] == {
        "kind": "text",
        "empty": 2,
        # Most common first; as common, by value: Bob before Cy. Ten, and K's one other answer.
        "top": [("Ada", 3), ("Bob", 2), ("Cy", 2), *[(name, 1) for name in "DEFGHIJ"]],
        "others": 1,
    }
    age = int(VALUES["age"])
    assert figures["age"]["bins"] == [(age, age, len(names))]


def test_a_field_with_no_column_is_refused_before_any_sql(database):
    database.save(secrets.token_urlsafe(16), VALUES)
    for fields in ([NOTE], ["age; DROP TABLE submission"], ["token"], ["id"], ["received"]):
        with pytest.raises(store.Unavailable, match="no column for the field"):
            database.results(fields, HOBBIES)
        with pytest.raises(store.Unavailable, match="no column for the field"):
            database.export(fields, HOBBIES)
    assert database.count() == 1


def test_an_integer_column_of_another_size_is_a_number(database, monkeypatch):
    add_column(database, "ALTER TABLE submission ADD COLUMN children bigint")
    save(database, monkeypatch, NOW, children="2")
    figure = database.results(["children"], HOBBIES)["fields"]["children"]
    assert figure == {"kind": "number", "empty": 0, "bins": [(2, 2, 1)]}


# The histogram's bins, from the counts of each value.


@pytest.mark.parametrize(
    ("counts", "bins"),
    [
        ({}, []),
        ({5: 3}, [(5, 5, 3)]),
        ({0: 1, 15: 2}, [(0, 0, 1), *[(n, n, 0) for n in range(1, 15)], (15, 15, 2)]),
        ({0: 1, 16: 2}, [(0, 1, 1), *[(n, n + 1, 0) for n in range(2, 16, 2)], (16, 17, 2)]),
        ({3: 1, 40: 1}, [(0, 4, 1), *[(n, n + 4, 0) for n in range(5, 40, 5)], (40, 44, 1)]),
        (
            {-3: 1, 2: 4, 3: 1},
            [(-3, -3, 1), (-2, -2, 0), (-1, -1, 0), (0, 0, 0), (1, 1, 0)] + [(2, 2, 4), (3, 3, 1)],
        ),
        ({-15: 1, 1: 1}, [(-16, -15, 1), *[(n, n + 1, 0) for n in range(-14, 0, 2)], (0, 1, 1)]),
    ],
)
def test_histogram_bins(counts, bins):
    assert store.histogram(counts) == bins


def test_histogram_bins_are_at_most_16_contiguous_of_a_round_width():
    allowed = list(itertools.islice(store.widths(), 12))
    assert allowed[:7] == [1, 2, 5, 10, 20, 50, 100]
    rng = random.Random(25)  # nosec B311
    for _ in range(500):
        low = rng.randint(-1000, 1000)
        counts = {rng.randint(low, low + rng.randint(0, 50_000)): rng.randint(1, 9) for _ in "abc"}
        bins = store.histogram(counts)
        width = bins[0][1] - bins[0][0] + 1
        assert width in allowed and bins[0][0] % width == 0
        assert all(high - low + 1 == width for low, high, _ in bins)
        assert all(bins[n][1] + 1 == bins[n + 1][0] for n in range(len(bins) - 1))
        assert bins[0][0] <= min(counts) and max(counts) <= bins[-1][1]
        assert sum(count for *_, count in bins) == sum(counts.values())
        assert len(bins) <= 16
        if width > 1:  # the narrowest width that fits: one narrower would need more bars
            narrower = allowed[allowed.index(width) - 1]
            assert max(counts) // narrower - min(counts) // narrower + 1 > 16


# export(): every submission, streamed.


def test_export_gives_every_submission_by_id_with_its_values(database, monkeypatch):
    add_column(database)
    saved = [  # saved in this order, received out of order: a clock set back
        (at(TODAY, 9, 0, 0, 123456), {NOTE: "Ada", "age": "34", "hobbies": ["tunning"]}),
        (at(TODAY, 8), {NOTE: "", "age": "", "hobbies": []}),
        (at(TODAY, 10), {NOTE: "=1+1", "age": "0", "hobbies": ["knitting", "software"]}),
    ]
    for received, values in saved:
        save(database, monkeypatch, received, **values)
    rows = list(database.export([NOTE, *FIELDS], ["tunning", "software"]))
    assert rows == [
        (at(TODAY, 9, 0, 0, 123456), "Ada", 34, True, False),
        (at(TODAY, 8), None, None, False, False),
        (at(TODAY, 10), "=1+1", 0, False, True),  # as stored: the CSV neutralises formulas
    ]
    assert all(row[0].utcoffset() == timedelta(0) for row in rows)
    assert [[type(value) for value in row[2:]] for row in rows] == [
        [int, bool, bool],
        [type(None), bool, bool],
        [int, bool, bool],
    ]


def test_export_of_an_empty_database_has_no_rows(database):
    assert list(database.export(FIELDS, HOBBIES)) == []


def test_export_fetches_in_batches_as_it_is_read(database, monkeypatch):
    for age in range(5):
        save(database, monkeypatch, NOW, age=str(age))
    monkeypatch.setattr(store, "EXPORT_BATCH", 2)
    fetched = []
    fetch = type(database).fetch
    monkeypatch.setattr(
        type(database), "fetch", lambda self, cursor: fetched.append(1) or fetch(self, cursor)
    )
    rows = database.export(FIELDS, HOBBIES)
    assert len(fetched) == 1  # the query has run, its first batch fetched, nothing read yet
    assert [next(rows)[1] for _ in range(2)] == [0, 1]
    assert len(fetched) == 1
    assert next(rows)[1] == 2
    assert len(fetched) == 2
    assert [row[1] for row in rows] == [3, 4]
    assert len(fetched) == 4  # the last batch, then an empty one: the end


def checkpoint(database) -> int:
    """Move every page of SQLite's WAL file into the database file, and empty it; return 1 if a
    reader's snapshot kept it from doing so (SQLite's busy), else 0."""
    with closing(sqlite3.connect(database.path, timeout=0, isolation_level=None)) as connection:
        return connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]


def holds_a_read_transaction(database) -> bool:
    """Tell whether a read transaction is open on the database: one that an export left open
    would hold back SQLite's checkpoints, and keep a PostgreSQL session idle in transaction."""
    if database.kind == "sqlite":
        return checkpoint(database) == 1
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'idle in transaction'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("how", ["closed", "read to the end"])
def test_an_export_closed_or_read_to_the_end_releases_its_connection(database, monkeypatch, how):
    for _ in range(3):
        save(database, monkeypatch, NOW)
    monkeypatch.setattr(store, "EXPORT_BATCH", 1)
    rows = database.export(FIELDS, HOBBIES)
    next(rows)
    assert holds_a_read_transaction(database)
    if how == "closed":
        rows.close()
    else:
        assert len(list(rows)) == 2
    assert not holds_a_read_transaction(database)


def test_postgresql_an_export_holds_its_pooled_connection_until_closed(postgresql_database):
    # One connection in the pool (one thread): the export must give it back.
    database = store.connect(postgresql_database.url, threads=1)
    try:
        database.save(secrets.token_urlsafe(16), VALUES)
        rows = database.export(FIELDS, HOBBIES)
        with pytest.raises(store.Unavailable):  # waits store.TIMEOUT for the one connection
            database.count()
        rows.close()
        assert database.count() == 1
    finally:
        database.close()


def test_sqlite_an_export_leaves_the_threads_connection_free(sqlite_database, monkeypatch):
    database = sqlite_database
    save(database, monkeypatch, NOW)
    rows = database.export(FIELDS, HOBBIES)
    save(database, monkeypatch, NOW)  # the same thread saves while it exports
    assert len(list(rows)) == 1  # the export's snapshot: what was there when it began
    assert database.count() == 2


# Unavailable: at the start, and on the way.


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_postgresql_stopped_or_frozen_before_an_export_or_results(
    postgresql_database, postgres, fault
):
    database = postgresql_database
    database.save(secrets.token_urlsafe(16), VALUES)
    if fault == "stopped":
        postgres.stop()
    else:
        freeze(postgres)
    with pytest.raises(store.Unavailable):
        database.export(FIELDS, HOBBIES)
    with pytest.raises(store.Unavailable):
        database.results(FIELDS, HOBBIES)
    thaw(postgres)
    if fault == "stopped":
        postgres.start()
    assert len(list(database.export(FIELDS, HOBBIES))) == 1  # back: no restart needed


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_postgresql_stopped_or_frozen_during_an_export(
    postgresql_database, postgres, monkeypatch, fault
):
    database = postgresql_database
    for _ in range(3):
        save(database, monkeypatch, NOW)
    monkeypatch.setattr(store, "EXPORT_BATCH", 1)
    rows = database.export(FIELDS, HOBBIES)
    next(rows)
    if fault == "stopped":
        postgres.stop()
    else:
        freeze(postgres)  # the watchdog cuts the batch's wait off
    with pytest.raises(store.Unavailable):
        next(rows)
    rows.close()
    thaw(postgres)
    if fault == "stopped":
        postgres.start()
    assert len(list(database.export(FIELDS, HOBBIES))) == 3


def test_postgresql_a_reader_slower_than_the_watchdog_is_not_cut_off(
    postgresql_database, monkeypatch
):
    # The watchdog bounds each batch's fetch, not the reader's pauses (a slow download).
    database = postgresql_database
    for _ in range(3):
        save(database, monkeypatch, NOW)
    monkeypatch.setattr(store, "EXPORT_BATCH", 1)
    rows = database.export(FIELDS, HOBBIES)
    next(rows)
    time.sleep(database.watchdog.seconds + 2 * database.watchdog.TICK)
    assert len(list(rows)) == 2


def test_postgresql_frozen_while_the_reader_waits_closes_without_raising(
    postgresql_database, postgres, monkeypatch
):
    # The reader (a slow download) stopped reading; the server froze meanwhile: closing the
    # export ends within the watchdog's time, and raises nothing into the WSGI server.
    database = postgresql_database
    for _ in range(3):
        save(database, monkeypatch, NOW)
    monkeypatch.setattr(store, "EXPORT_BATCH", 1)
    rows = database.export(FIELDS, HOBBIES)
    next(rows)
    freeze(postgres)
    rows.close()
    thaw(postgres)
    assert database.count() == 3


def sqlite_files(database) -> list:
    return [database.path.with_name(database.path.name + end) for end in ("", "-wal", "-shm")]


def test_sqlite_file_deleted_before_an_export_or_results(sqlite_database, monkeypatch):
    database = sqlite_database
    save(database, monkeypatch, NOW)
    for path in sqlite_files(database):
        path.unlink(missing_ok=True)
    with pytest.raises(store.Unavailable, match="schema"):
        database.export(FIELDS, HOBBIES)
    with pytest.raises(store.Unavailable, match="schema"):
        database.results(FIELDS, HOBBIES)


def test_sqlite_file_cut_short_during_an_export(sqlite_database, monkeypatch):
    # A disk that fails under a long read, or a file overwritten by a mistaken copy.
    database = sqlite_database
    submissions.add(f"sqlite:///{database.path}", 2000)
    assert checkpoint(database) == 0  # every page in the file itself, none in the WAL
    monkeypatch.setattr(store, "EXPORT_BATCH", 10)
    rows = database.export(FIELDS, HOBBIES)
    next(rows)
    os.truncate(database.path, 4096)  # its first page only
    with pytest.raises(store.Unavailable, match="malformed"):
        for _ in rows:
            pass
    rows.close()


# At a million rows: the export's memory stays flat.

# Exports every row of the database at argv[1]; prints how many, and the peak RSS in kB: the
# process's own (VmHWM), not getrusage's, which counts the forking process's before the exec.
EXPORT_AND_MEASURE = """\
import re, sys
import app, store
database = store.connect(sys.argv[1])
rows = database.export(["age"], list(app.HOBBIES))
count = sum(1 for _ in rows)
database.close()
status = open("/proc/self/status").read()
print(count, re.search(r"VmHWM:\\s+(\\d+) kB", status)[1])
"""


def exported(url: str) -> tuple[int, int]:
    """Export every row in a process of its own; return how many and its peak memory, in kB."""
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_AND_MEASURE, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    count, peak = map(int, done.stdout.split())
    return count, peak


@pytest.mark.stress
def test_an_export_of_a_million_rows_takes_no_more_memory_than_of_100000(database_url):
    submissions.add(database_url, 100_000)
    count, few = exported(database_url)
    assert count == 100_000
    submissions.add(database_url, 900_000, seed=26)
    count, many = exported(database_url)
    assert count == 1_000_000
    assert many - few < 5 * 1024, f"{few} kB for 100,000 rows, {many} kB for 1,000,000"
