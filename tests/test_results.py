"""The owner's results page and CSV export, on SQLite and PostgreSQL: the figures of known
submissions in each chart's table, bars as long as their counts, a hobby or a field added to the
form shown without other changes, an empty database, a database down, and the export's rows,
streamed, with nothing a spreadsheet would run as a formula."""

import base64
import csv
import http.client
import io
import socket
import time
from datetime import UTC, datetime

import pytest
import webob
from helpers import SERVER_COMMANDS, example, fill, stored, submitted

import app
import owner
import store
from bench import submissions
from deploy.servers import start_server

PASSWORD = "correct horse battery staple"  # the owner's, in these tests  # nosec B105
PASSWORD_HASH = owner.hash_password(PASSWORD)
PATHS = ["/results", "/results.csv"]

# Three known submissions: the example, another age with the first hobby alone, and nothing.
FIRST_HOBBY = next(iter(app.HOBBIES))
SUBMISSIONS = [example(), example(age=["35"], hobbies=[FIRST_HOBBY]), example(age=[""], hobbies=[])]


@pytest.fixture
def owned(testapp, monkeypatch):
    """The app, with the owner's password set, as the owner sees it (the right credentials)."""
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", PASSWORD_HASH)
    monkeypatch.delenv("RESULTS_USER", raising=False)
    testapp.authorization = ("Basic", ("owner", PASSWORD))
    testapp.extra_environ["REMOTE_ADDR"] = "127.0.0.1"  # over plain HTTP, only from loopback
    return testapp


@pytest.fixture
def sent(owned, database):
    """SUBMISSIONS, sent through the form and saved in the test's database."""
    for values in SUBMISSIONS:
        fill(owned.get("/").form, **values).submit(status=303)


def table(res, caption: str) -> list[list[str]]:
    """Return the rows of the table with this caption, each row's cells as text."""
    for found in res.html.find_all("table"):
        if found.caption.get_text(strip=True) == caption:
            rows = found.tbody.find_all("tr")
            return [
                [cell.get_text(strip=True) for cell in row.find_all(["th", "td"])] for row in rows
            ]
    raise AssertionError(f"no table {caption!r}")


def bars(table_element) -> list[float]:
    """Return the lengths of the bars of the chart drawn before a table: a bar's width, or its
    height in a chart of upright bars (the widths then are all the same)."""
    svg = table_element.parent.find_previous_sibling("svg")
    assert svg["aria-hidden"] == "true"  # the table says it to screen readers, once
    rects = svg.find_all("rect")
    widths = {rect["width"] for rect in rects}
    if len(rects) > 1 and len(widths) == 1:
        return [float(rect["height"]) for rect in rects]
    return [float(rect["width"].removesuffix("%")) for rect in rects]


def test_the_page_counts_the_submissions_and_says_when_the_last_came(owned, sent):
    res = owned.get("/results", status=200)
    assert res.html.title.string == res.html.h1.string == f"Results: {app.TITLE}"
    summary = res.html.h1.find_next("p")
    assert summary.get_text().startswith(f"{len(SUBMISSIONS)} submissions; the last on ")
    last = datetime.fromisoformat(summary.time["datetime"])
    assert abs((datetime.now(UTC) - last).total_seconds()) < 600  # a bound against a hang
    assert res.html.find("a", href="/results.csv") is not None


def test_each_hobby_has_its_count_and_its_share_of_the_submissions(owned, sent):
    rows = table(owned.get("/results"), "Hobbies chosen")
    expected = []
    for value, label in app.HOBBIES.items():
        count = sum(value in values["hobbies"] for values in SUBMISSIONS)
        expected.append([label, str(count), f"{round(100 * count / len(SUBMISSIONS))}%"])
    assert rows == expected


def test_each_age_is_counted_in_its_bin_and_the_empty_ones_said(owned, sent):
    res = owned.get("/results")
    rows = table(res, "Age")
    ages = [int(values["age"][0]) for values in SUBMISSIONS if values["age"][0]]
    counted = {}
    for label, count in rows:
        low, _, high = label.partition("–")
        counted[(int(low), int(high or low))] = int(count)
    bounds = list(counted)
    assert bounds == sorted(bounds) and len(bounds) <= 16
    assert all(high + 1 == low for (_, high), (low, _) in zip(bounds, bounds[1:], strict=False))
    for (low, high), count in counted.items():
        assert count == sum(low <= age <= high for age in ages), (low, high)
    section = res.html.find(id="field-age").parent
    assert section.find_all("p")[-1].get_text() == "Left empty: 1 submission."


def test_the_days_chart_counts_todays_submissions_and_the_29_days_before(owned, sent):
    rows = table(owned.get("/results"), "Submissions per day")
    assert len(rows) == 30
    assert rows[-1] == [f"{datetime.now(UTC):%-d %b}", str(len(SUBMISSIONS))]
    assert {count for _, count in rows[:-1]} == {"0"}


def test_each_chart_has_a_bar_a_row_as_long_as_its_count(owned, sent):
    res = owned.get("/results")
    charts = res.html.find_all("table")
    assert len(charts) == 2 + len(app.FIELDS)  # hobbies, each field, days
    for chart in charts:
        counts = [int(row.find("td").get_text()) for row in chart.tbody.find_all("tr")]
        lengths = bars(chart)
        assert len(lengths) == len(counts)
        longest = max(lengths)
        for length, count in zip(lengths, counts, strict=True):
            assert length == pytest.approx(longest * count / max(counts), abs=0.1)


def test_a_hobby_added_to_the_form_shows_up(owned, sent, monkeypatch):
    monkeypatch.setitem(app.HOBBIES, "test-hobby", "Test hobby")  # a value no form change uses
    rows = table(owned.get("/results"), "Hobbies chosen")
    assert rows[-1] == ["Test hobby", "0", "0%"]
    assert len(rows) == len(app.HOBBIES)


# A text field as the README's recipe adds one ("Changing the form"): its migration, in the
# test's database, and the app's fields as validate() would then return them. Its name is the
# test's own, so that a checkout that follows the recipe (a "name" column) runs these tests too.
NAME_COLUMN = "ALTER TABLE submission ADD COLUMN test_name text"


@pytest.fixture
def named(database, monkeypatch):
    """The test's database with a text column, test_name, and the app with that field."""
    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, [NAME_COLUMN]])
    assert database.migrate() == [len(store.MIGRATIONS)]
    monkeypatch.setattr(app, "FIELDS", ["test_name", *app.FIELDS])
    return database


def save(database, names: list[str]) -> None:
    """Save one submission a name, each with the example's other values."""
    values = app.validate(submitted())[0]
    for number, name in enumerate(names):
        database.save(f"{number:022}", {**values, "test_name": name})


def test_a_text_field_shows_its_commonest_answers_and_the_others(owned, named):
    save(named, ["Ada"] * 3 + ["Bob"] * 2 + [f"Name {n:02}" for n in range(10)] + [""])
    res = owned.get("/results")
    rows = table(res, "Test name")
    assert rows[:2] == [["Ada", "3"], ["Bob", "2"]]
    assert rows[2:10] == [[f"Name {n:02}", "1"] for n in range(8)]  # ten in all, then others
    assert rows[10:] == [["Others", "2"]]
    assert len(bars(res.html.find("caption", string="Test name").parent)) == len(rows)
    section = res.html.find(id="field-test_name").parent
    assert section.find_all("p")[-1].get_text() == "Left empty: 1 submission."


def test_an_empty_database_says_so(owned, database):
    res = owned.get("/results", status=200)
    assert res.html.h1.find_next("p").get_text().startswith("No submissions yet.")
    assert res.html.find("svg") is None and res.html.find("table") is None
    csv_file = owned.get("/results.csv", status=200)
    header = ",".join(f'"{name}"' for name in ["received", *app.FIELDS, *app.HOBBIES])
    assert csv_file.body.decode() == f"\ufeff{header}\r\n"


@pytest.mark.parametrize("path", PATHS)
def test_a_database_down_is_a_503_page_to_try_again(
    owned, empty_database_url, monkeypatch, log, path
):
    database = store.connect(empty_database_url)  # never migrated: it cannot be read
    monkeypatch.setattr(app, "DATABASE", database)
    try:
        res = owned.get(path, status=503)
        with pytest.raises(store.Unavailable) as fault:
            database.count()
    finally:
        database.close()
    assert res.headers["Retry-After"] == str(app.RETRY_SECONDS)
    assert res.content_type == "text/html"
    assert res.html.title.string == res.status
    res.mustcontain(app.UNAVAILABLE)
    logged = [line for line in log() if line.startswith("ERROR:")]
    assert logged == [f"ERROR:app:not read: {fault.value}"]  # what the operator must fix


@pytest.mark.parametrize("path", PATHS)
def test_the_owners_pages_are_never_stored_nor_indexed(owned, sent, path):
    for res in [owned.get(path, status=200), owned.head(path, status=200)]:
        assert res.headers["Cache-Control"] == "no-store"
        assert res.headers["X-Robots-Tag"] == "noindex"


@pytest.mark.parametrize("path", PATHS)
def test_the_owners_pages_are_the_owners_alone(owned, database, monkeypatch, path):
    owned.authorization = ("Basic", ("owner", "not the password"))
    owned.get(path, status=401)
    monkeypatch.delenv("RESULTS_PASSWORD_HASH")
    owned.get(path, status=404)


def read_csv(body: bytes) -> list[list[str]]:
    """Return a CSV file's rows, as a spreadsheet opening it reads the cells' text."""
    text = body.decode("utf-8")
    assert text.startswith("\ufeff")  # the BOM: Excel reads the file as UTF-8
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def test_the_csv_file_has_a_row_a_submission_as_stored(owned, sent, database):
    res = owned.get("/results.csv", status=200)
    assert res.content_type == "text/csv" and res.charset == "utf-8"
    assert res.headers["Content-Disposition"] == 'attachment; filename="results.csv"'
    header, *rows = read_csv(res.body)
    assert header == ["received", *app.FIELDS, *app.HOBBIES]
    expected = []
    for row in stored(database):
        received = row["received"]  # SQLite's text, PostgreSQL's datetime: both UTC
        if isinstance(received, str):
            received = datetime.fromisoformat(received)
        expected.append(
            [
                received.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                *("" if row[name] is None else str(row[name]) for name in app.FIELDS),
                *("1" if hobby in row["hobbies"] else "0" for hobby in app.HOBBIES),
            ]
        )
    assert rows == expected
    assert all(line.endswith(b'"\r\n') for line in res.body.splitlines(keepends=True))  # quoted


def test_head_of_the_csv_file_sends_its_headers_alone(owned, sent):
    res = owned.head("/results.csv", status=200)
    assert res.content_type == "text/csv" and res.body == b""


# Names a spreadsheet would run as formulas (OWASP's CSV injection), and two harmless ones.
FORMULAS = ['=HYPERLINK("http://example.com","x")', "+1", "-1", "@SUM(1)", "\tx", "\rx"]


def test_no_cell_of_the_csv_file_starts_a_formula(owned, named):
    names = [*FORMULAS, "Ada", "x=1"]
    save(named, names)
    header, *rows = read_csv(owned.get("/results.csv", status=200).body)
    assert header[1] == "test_name"
    # Each formula gets a ' first, which a spreadsheet reads as "this cell is text" and hides.
    assert [row[1] for row in rows] == [*("'" + name for name in FORMULAS), "Ada", "x=1"]
    for row in rows:
        assert not any(cell.startswith(app.FORMULA_START) for cell in row), row


def test_the_csv_file_is_sent_a_batch_of_rows_at_a_time(owned, sent, monkeypatch):
    monkeypatch.setattr(app, "CSV_BATCH", 2)
    export = app.DATABASE.export
    taken = []

    def counted_export(fields, hobbies):
        for row in export(fields, hobbies):
            taken.append(row)
            yield row

    monkeypatch.setattr(app.DATABASE, "export", counted_export)
    credentials = base64.b64encode(f"owner:{PASSWORD}".encode()).decode()
    environ = webob.Request.blank(
        "/results.csv", {"HTTP_AUTHORIZATION": f"Basic {credentials}", "REMOTE_ADDR": "127.0.0.1"}
    )
    environ = environ.environ
    answer = app.application(environ, lambda status, headers, exc_info=None: None)
    try:
        assert not isinstance(answer, list | tuple)  # an iterator, not the whole file at once
        chunks = iter(answer)
        assert next(chunks).count(b"\r\n") == 1 and taken == []  # the header alone first
        assert next(chunks).count(b"\r\n") == 2 and len(taken) == 2
        assert next(chunks).count(b"\r\n") == 1 and len(taken) == 3
        assert list(chunks) == []
    finally:
        answer.close()


# What a spreadsheet may still read as a formula: = in its other widths, or after white space.
DISGUISED = [
    "\uff1d1+1",
    "\ufe661+1",
    " =1+1",
    "\u00a0\u3000+1",
    "\n-1",
    " \uff20SUM(1)",
    "=\u03381",
]


def test_no_cell_starts_a_formula_in_another_width_or_after_white_space(owned, named):
    save(named, [*DISGUISED, "Ada \uff1d x", "\uff21da"])
    header, *rows = read_csv(owned.get("/results.csv", status=200).body)
    assert [row[1] for row in rows] == [
        *("'" + name for name in DISGUISED),
        "Ada \uff1d x",
        "\uff21da",
    ]


# One export at a time in a process; none waits for a client that stops reading.


def test_one_export_at_a_time_another_at_once_gets_503_and_the_apps_page(owned, sent):
    credentials = base64.b64encode(f"owner:{PASSWORD}".encode()).decode()
    environ = webob.Request.blank(
        "/results.csv", {"HTTP_AUTHORIZATION": f"Basic {credentials}", "REMOTE_ADDR": "127.0.0.1"}
    ).environ
    first = app.application(environ, lambda status, headers, exc_info=None: None)
    try:  # the first export has begun, and is not all sent
        res = owned.get("/results.csv", status=503)
        owned.get("/results", status=200)  # the page is not held by it
    finally:
        first.close()  # the client left
    assert res.headers["Retry-After"] == str(app.EXPORT_RETRY_SECONDS)
    assert res.headers["Cache-Control"] == "no-store"
    assert res.content_type == "text/html"
    res.mustcontain(app.EXPORT_BUSY)
    owned.get("/results.csv", status=200)  # after one cut short, the next is sent
    owned.get("/results.csv", status=200)  # and after one sent whole


def test_an_export_the_database_refused_holds_no_turn(owned, empty_database_url, monkeypatch):
    database = store.connect(empty_database_url)  # never migrated: it cannot be read
    monkeypatch.setattr(app, "DATABASE", database)
    try:
        for _ in range(2):
            owned.get("/results.csv", status=503).mustcontain(app.UNAVAILABLE)
    finally:
        database.close()


# Rows of some 37 bytes: an export of 26 MB, past Waitress's default high watermark (16 MB)
# and the kernel's socket buffers (Linux's grow to 4 MB), where the app's thread used to wait
# for as long as the client did. (With 500,000 rows it did not: the test passed unfixed.)
STALLED_EXPORT_ROWS = 700_000


@pytest.mark.stress
def test_a_client_that_stops_reading_the_export_holds_no_thread(tmp_path):
    # On a real Waitress, as the Procfile runs it with no nginx in front (make run, a platform):
    # the server, not the app's thread, keeps what the client has not read.
    url = f"sqlite:///{tmp_path / 'form.sqlite3'}"
    database = store.connect(url)
    database.migrate()
    database.close()
    submissions.add(url, STALLED_EXPORT_ROWS)
    environ = {"DATABASE_URL": url, "RESULTS_PASSWORD_HASH": PASSWORD_HASH}
    server = start_server(SERVER_COMMANDS["procfile"], tmp_path / "server.log", environ=environ)
    credentials = base64.b64encode(f"owner:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    try:
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            stalled.settimeout(10)
            stalled.connect((server.host, server.port))
            stalled.sendall(
                b"GET /results.csv HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: {headers['Authorization']}\r\n\r\n".encode()
            )
            assert stalled.recv(100).startswith(b"HTTP/1.1 200 ")  # then nothing more is read
            assert fetch(server, "GET", "/healthz").status == 200
            # The export's turn is free once its last row is written (the access line comes
            # sooner: when the route returns): another export may begin, while this client
            # still reads nothing.
            deadline = time.monotonic() + 120  # against a hang only
            while (turn := fetch(server, "HEAD", "/results.csv", headers).status) == 503:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert turn == 200
            assert fetch(server, "GET", "/healthz").status == 200
    finally:
        server.stop()


def fetch(server, method: str, path: str, headers=None) -> http.client.HTTPResponse:
    """Send one request to a real server and return its response, read whole."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def test_a_database_fault_during_the_export_cuts_it_short_and_is_logged(log):
    closed = []

    def rows():
        try:
            yield (datetime(2026, 3, 10, tzinfo=UTC), *([""] * len(app.FIELDS)), True, False)
            raise store.Unavailable("the database went away")
        finally:
            closed.append(True)

    lines = app.csv_lines(["received", *app.FIELDS, "a", "b"], rows())
    assert next(lines).startswith(b"\xef\xbb\xbf")  # the header: sent before any row is read
    with pytest.raises(store.Unavailable):  # the server then cuts the answer short
        next(lines)
    assert closed == [True]
    assert [line for line in log() if line.startswith("ERROR:")] == [
        "ERROR:app:export cut short: the database went away"
    ]
