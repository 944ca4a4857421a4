"""Schema changes, once per deploy (`python -m store migrate`), on SQLite and on a real PostgreSQL:
an empty database gets the schema, a second run does nothing, two at once apply it once, the app
waits for it without crashing, and the README's recipe for a new field upgrades a database made
by the schema before it, keeping every row.
"""

import ast
import csv
import io
import json
import os
import shutil
import subprocess
import sys

from helpers import (
    cleaned,
    fill,
    hobbies_shown,
    result_line,
    run_store,
    stored,
    submitted,
)

import app
import owner
import store
from deploy.audit import result_text
from deploy.servers import ROOT

VALUES = app.validate(submitted())[0]  # the example submission, cleaned, as the app saves it


def versions(url: str) -> list[int]:
    """Return the schema versions a database has recorded, each time it was recorded."""
    database = store.connect(url)
    try:
        with database.transaction(check=False) as cursor:
            cursor.execute("SELECT version FROM schema_version ORDER BY version")
            return [version for (version,) in cursor.fetchall()]
    finally:
        database.close()


def test_migrate_makes_the_schema_of_an_empty_database_and_records_its_version(
    empty_database_url,
):
    result = run_store(empty_database_url, "migrate")
    assert result.returncode == 0, result.stderr
    everything = list(range(1, len(store.MIGRATIONS) + 1))
    assert result.stdout.endswith(f": schema at version {everything[-1]}; ran {everything}\n")
    assert versions(empty_database_url) == everything
    database = store.connect(empty_database_url)
    try:
        database.save("t" * 22, VALUES)  # the schema the code needs is there
        assert database.count() == 1
    finally:
        database.close()


def test_migrate_run_again_changes_nothing(database_url):
    database = store.connect(database_url)
    try:
        database.save("t" * 22, VALUES)
        result = run_store(database_url, "migrate")
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("; ran none\n")
        assert versions(database_url) == list(range(1, len(store.MIGRATIONS) + 1))
        assert [row["token"] for row in stored(database)] == ["t" * 22]
    finally:
        database.close()


# Each process imports store, says it is ready, and migrates when told: all at once.
MIGRATE_WHEN_TOLD = (
    "import store, sys; print('ready', flush=True); sys.stdin.readline(); "
    "sys.exit(store.main(['migrate']))"
)


def test_migrations_run_at_once_by_several_processes_apply_once(empty_database_url):
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_WHEN_TOLD],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        for process in processes:  # released together
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [process.returncode for process in processes] == [0, 0, 0], [e for _, e in results]
    # Each version once, by whichever process took the lock first for it: one may run the
    # first, another the next, as they take turns between versions.
    said = [out.rsplit("; ", 1)[1].removeprefix("ran ").strip() for out, _ in results]
    ran = [version for text in said if text != "none" for version in ast.literal_eval(text)]
    everything = list(range(1, len(store.MIGRATIONS) + 1))
    assert sorted(ran) == everything, said
    assert versions(empty_database_url) == everything


def test_the_app_refuses_an_unmigrated_database_and_saves_once_migrated(
    testapp, empty_database_url, monkeypatch, log
):
    database = store.connect(empty_database_url)
    monkeypatch.setattr(app, "DATABASE", database)
    try:
        form = fill(testapp.get("/").form)
        res = form.submit(status=503)  # not a crash: the person's values are kept
        assert res.headers["Retry-After"] == str(app.RETRY_SECONDS)
        assert res.html.find(id="unsaved") is not None
        assert res.form["age"].value == VALUES["age"]
        testapp.get(f"/saved/{form['token'].value}", status=503)
        testapp.get("/", status=200)
        testapp.get("/healthz", status=200)
        refusals = [line for line in log() if "python -m store migrate" in line]
        assert len(refusals) == 2 and refusals[0].startswith("ERROR:app:not saved: ")

        assert run_store(empty_database_url, "migrate").returncode == 0
        saved = res.form.submit(status=303).follow(status=200)  # the same process: no restart
        assert result_line(saved) == result_text(cleaned())
        assert [row["token"] for row in stored(database)] == [form["token"].value]
    finally:
        database.close()


# The README's recipe for a field ("Changing the form"), a required name, applied to a copy of
# the checkout edit by edit: (file, the text it replaces, the text it puts there). Each text is
# found exactly once, so a change to the code the recipe edits fails here first. A checkout that
# has followed the recipe already (as the README asks) is tested the other way round: its copy
# without the recipe is the previous code, the checkout the new.
NAME_RULE = """\
    name = first(form, "name")  # the value, stripped; "" if it was not sent
    if not name or len(name) > 50:
        errors["name"] = "Enter your name, up to 50 characters."
"""
NAME_INPUT = """\
  <p>
    <label for="name">Name</label>
    <input type="text" id="name" name="name" value="{{values['name']}}" autocomplete="name"\
{{!error_for("name")}}>
    % if "name" in errors:
    <span class="error" id="name-error">{{errors["name"]}}</span>
    % end
  </p>
"""
NAME_EXAMPLE = 'EXAMPLE = {"name": ["Ada"], "age": ["34"], "hobbies": list(HOBBIES)}'
FOLLOWED = NAME_EXAMPLE in (ROOT / "app.py").read_text()  # this checkout has the name already
NAME_VERSION = len(store.MIGRATIONS) + (0 if FOLLOWED else 1)  # the name's migration
RECIPE = [
    ("app.py", 'EXAMPLE = {"age": ["34"], "hobbies": list(HOBBIES)}', NAME_EXAMPLE),
    (
        "app.py",
        '    return {"age": age, "hobbies": chosen}, errors\n',
        NAME_RULE + '    return {"name": name, "age": age, "hobbies": chosen}, errors\n',
    ),
    ("views/form.tpl", '  <p>\n    <label for="age">', NAME_INPUT + '  <p>\n    <label for="age">'),
    (
        "views/saved.tpl",
        '<p id="result">Age: ',
        '<p id="result">Name: {{values["name"] or "Empty"}}<br>\n  Age: ',
    ),
    (
        "store.py",
        "\n]\nTYPES = {",
        f'\n    ["ALTER TABLE submission ADD COLUMN name text"],  # {NAME_VERSION}: a name\n]\n'
        "TYPES = {",
    ),
]


def test_the_readme_shows_the_recipe_that_this_file_runs():
    readme = (ROOT / "README.md").read_text()
    shown = [NAME_RULE, NAME_INPUT, RECIPE[0][2], RECIPE[3][2], RECIPE[4][2]]
    for line in "\n".join(shown).splitlines():
        if line.strip() not in ("]", "TYPES = {", "Age:"):  # the text around the edits
            assert line.strip() in readme, line


def copy_of_the_checkout(folder, recipe: bool):
    """Copy the app's files to folder, with the README's recipe followed or not, and return
    it. Each of the recipe's texts must be found once, before or after, as the case may be."""
    folder.mkdir()
    for path in ROOT.glob("*.py"):
        shutil.copy(path, folder)
    for name in ["views", "static"]:
        shutil.copytree(ROOT / name, folder / name)
    for name, text, replacement in RECIPE if recipe != FOLLOWED else []:
        old, new = (text, replacement) if recipe else (replacement, text)
        source = (folder / name).read_text()
        assert source.count(old) == 1, f"{name}: the recipe's place is gone: {old!r}"
        (folder / name).write_text(source.replace(old, new))
    return folder


# The previous code, in a process of its own: the example and an empty submission sent through
# its form, as a person would; it prints its fields and the result its saved page showed last.
USE_THE_PREVIOUS = """\
import json, webtest
import app

testapp = webtest.TestApp(app.application, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
for changes in [{}, {"age": [""], "hobbies": []}]:
    form = testapp.get("/").form
    for name, values in {**app.EXAMPLE, **changes}.items():
        for field in form.fields[name]:
            if isinstance(field, webtest.forms.Checkbox):
                field.checked = field._value in values
            else:
                field.value = values[0]
    saved = form.submit(status=303).follow(status=200)
result = " ".join(saved.html.find(id="result").get_text().split())
print(json.dumps({"fields": app.FIELDS, "result": result}))
"""
# The new code likewise: a form without the name is refused; with it, saved and shown; a
# submission saved before the name existed is shown too. Then names that a spreadsheet would
# run as formulas, sent through the form: the owner's results page counts the names, and the
# export neutralises them.
USE_THE_COPY = """\
import json, sys
import webtest
import app

testapp = webtest.TestApp(app.application, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
result = lambda res: " ".join(res.html.find(id="result").get_text().split())
form = testapp.get("/").form
form["age"] = "34"
refused = form.submit(status=422)
refused.form["name"] = "Ada"
saved = refused.form.submit(status=303).follow(status=200)
old = testapp.get("/saved/" + sys.argv[1], status=200)
for name in json.loads(sys.argv[3]):
    form = testapp.get("/").form
    form["name"] = name
    form.submit(status=303)
testapp.authorization = ("Basic", ("owner", sys.argv[2]))
names = testapp.get("/results").html.find("caption", string="Name").parent.tbody
names = [[cell.get_text() for cell in row.find_all(["th", "td"])] for row in names.find_all("tr")]
print(json.dumps({"refused": refused.status_int, "new": result(saved), "old": result(old),
                  "names": names, "csv": testapp.get("/results.csv").body.decode()}))
"""


# Names a spreadsheet would run as formulas (OWASP's CSV injection), as the form keeps them
# (stripped: a leading tab or carriage return never reaches the database through the form).
FORMULAS = ['=HYPERLINK("http://example.com","x")', "+1", "-1", "@SUM(1)"]
PASSWORD = "correct horse battery staple"  # the owner's, in this test  # nosec B105


def test_the_readmes_recipe_for_a_field_upgrades_a_database_of_the_previous_schema(
    empty_database_url, tmp_path
):
    previous = copy_of_the_checkout(tmp_path / "previous", recipe=False)
    new = copy_of_the_checkout(tmp_path / "new", recipe=True)
    environ = {
        **os.environ,
        "DATABASE_URL": empty_database_url,
        "RESULTS_PASSWORD_HASH": owner.hash_password(PASSWORD),
    }

    def run(copy, *args: str) -> str:
        """Run python ARGS in a copy, on the test's database; return what it printed."""
        command = [sys.executable, *args]
        done = subprocess.run(
            command, cwd=copy, env=environ, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def rows() -> list[dict]:
        """Return the stored submissions, whatever the schema's version."""
        database = store.connect(empty_database_url)
        try:
            return stored(database, check=False)
        finally:
            database.close()

    # A database made by the previous schema, with what the previous code saved in it.
    earlier = list(range(1, NAME_VERSION))
    assert run(previous, "-m", "store", "migrate").endswith(
        f"version {earlier[-1]}; ran {earlier}\n"
    )
    used = json.loads(run(previous, "-c", USE_THE_PREVIOUS))
    assert "name" not in used["fields"]
    before = rows()

    migrated = run(new, "-m", "store", "migrate")
    assert migrated.endswith(f"schema at version {NAME_VERSION}; ran [{NAME_VERSION}]\n")
    assert rows() == [{**row, "name": None} for row in before]  # every row kept

    formulas = json.dumps(FORMULAS)
    shown = json.loads(run(new, "-c", USE_THE_COPY, before[0]["token"], PASSWORD, formulas))
    assert shown["refused"] == 422
    assert shown["new"] == f"Name: Ada Age: 34 {hobbies_shown([])}"
    assert shown["old"] == f"Name: Empty Age: {VALUES['age']} {hobbies_shown(VALUES['hobbies'])}"
    assert rows()[-len(FORMULAS) - 1]["name"] == "Ada"
    # The results page shows the new field's answers, and the export has its column, in which
    # each formula has a ' first: a spreadsheet shows the text, and runs nothing.
    assert sorted(shown["names"]) == sorted([[name, "1"] for name in ["Ada", *FORMULAS]])
    header, *lines = csv.reader(io.StringIO(shown["csv"].removeprefix("\ufeff"), newline=""))
    assert header == ["received", "name", *used["fields"], *app.HOBBIES]
    assert [line[1] for line in lines] == ["", "", "Ada", *("'" + name for name in FORMULAS)]

    # An instance still running the previous code (a deploy under way) saves on the new schema.
    again = json.loads(run(previous, "-c", USE_THE_PREVIOUS))
    assert again["result"] == used["result"] == f"Age: Empty {hobbies_shown([])}"
    assert [row["name"] for row in rows()[-2:]] == [None, None]
