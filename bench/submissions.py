"""Many realistic submissions stored at once, for the benchmarks and the stress tests: the owner's
results page and CSV export measured at 1,000,000 rows.

The mix, drawn from a seeded random generator (the same rows each run): received at a uniformly
random moment of the last `days` days (365 by default), ids in the order received as the app
saves them; an age left empty one time in ten, else drawn from a normal distribution of mean 38
and standard deviation 14, rounded and held within 0..app.MAX_AGE; each hobby of app.HOBBIES
chosen independently, the first by 60 %, the second by 30 %, the n-th by 60/n %. Other fields
(a column a migration added) are left empty.

Written as the app's store writes, but in bulk: SQLite's executemany, PostgreSQL's COPY, in
transactions of BATCH rows. Not in store.py: no operator should fill a database with made-up
answers.
"""

import base64
import random
from datetime import timedelta

import app
import store

BATCH = 100_000  # rows a transaction: the write lock is held for about a second at most
# Ids: the next ones free, taken under the write lock (SQLite), or from the identity's sequence
# with the table locked so that no save takes one meanwhile (PostgreSQL).
NEXT_ID = {
    "sqlite": "SELECT coalesce(max(id), 0) + 1 FROM submission",
    "postgresql": "SELECT nextval(pg_get_serial_sequence('submission', 'id'))",
}
LOCK = "LOCK TABLE submission IN EXCLUSIVE MODE"
MOVE_SEQUENCE = "SELECT setval(pg_get_serial_sequence('submission', 'id'), %s)"
INSERT = "INSERT INTO submission (id, token, received, age) VALUES (?, ?, ?, ?)"
INSERT_HOBBY = "INSERT INTO submission_hobby (submission_id, hobby) VALUES (?, ?)"
COPY = "COPY submission (id, token, received, age) FROM STDIN"
COPY_HOBBY = "COPY submission_hobby (submission_id, hobby) FROM STDIN"


def add(url: str, count: int, days: int = 365, seed: int = 25) -> None:
    """Store `count` made-up submissions in the database at url (migrated), as the module's
    docstring says, received over the last `days` days."""
    # Made-up answers, the same each run: no secret comes from this generator.
    rng = random.Random(seed)  # nosec B311
    end = store.now()
    moments = sorted(rng.random() for _ in range(count))
    database = store.connect(url, threads=1, timeout=store.COMMAND_TIMEOUT)
    try:
        for start in range(0, count, BATCH):
            rows = [
                (
                    base64.urlsafe_b64encode(rng.randbytes(16)).decode().rstrip("="),
                    end - timedelta(days=days) * (1 - moment),
                    age(rng),
                    [hobby for n, hobby in enumerate(app.HOBBIES, 1) if rng.random() < 0.6 / n],
                )
                for moment in moments[start : start + BATCH]
            ]
            with database.transaction() as cursor:
                write(database, cursor, rows)
    finally:
        database.close()


def age(rng: random.Random) -> int | None:
    """Return an age as the mix has it: empty one time in ten."""
    if rng.random() < 0.1:
        return None
    return min(max(round(rng.gauss(38, 14)), 0), app.MAX_AGE)


def write(database, cursor, rows: list[tuple]) -> None:
    """Store rows of (token, received, age, hobbies) in one transaction."""
    if database.kind == "postgresql":
        cursor.execute(LOCK)
    cursor.execute(NEXT_ID[database.kind])
    first = cursor.fetchone()[0]
    ids = range(first, first + len(rows))
    submissions = [
        (id, token, database.time(received), age)
        for id, (token, received, age, _) in zip(ids, rows, strict=True)
    ]
    hobbies = [(id, hobby) for id, row in zip(ids, rows, strict=True) for hobby in row[3]]
    if database.kind == "sqlite":
        cursor.executemany(INSERT, submissions)
        cursor.executemany(INSERT_HOBBY, hobbies)
        return
    cursor.execute(MOVE_SEQUENCE, [ids[-1]])
    for statement, values in [(COPY, submissions), (COPY_HOBBY, hobbies)]:
        with cursor.copy(statement) as copy:
            for value in values:
                copy.write_row(value)
