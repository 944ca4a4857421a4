"""The benchmark script, run with tiny durations so that it cannot rot (no timings checked)."""

import subprocess
import sys

import pytest
from helpers import require

from bench import floor, ladder
from bench.bench import MARK_END, MARK_START, METHODS, RUNGS, TARGETS, record
from deploy.servers import ROOT

SHORT = ["--seconds=1", "--rounds=1"]


@pytest.mark.parametrize(
    ("arguments", "measured"),
    [
        # `make test`: one second per cell, the pair every ratio needs, and POST, which sends the
        # form and its Origin through wrk.lua; the app answers 200 only if all of it is right.
        pytest.param(
            [*SHORT, "--growth", "--rss-requests=0", "--targets", "app", "floor"]
            + ["--methods", "POST"],
            [("app", "POST"), ("floor", "POST")],
            id="app and floor",
        ),
        # `make stress`: every target (the ladder's parsing rung checks the form), both methods,
        # the growth and RSS runs.
        pytest.param(
            [*SHORT, "--growth", "1", "--growth-seconds=1", "--rss-requests=200"]
            + ["--targets", *TARGETS],
            [(target, method) for target in TARGETS for method in METHODS],
            id="every target",
            marks=pytest.mark.stress,
        ),
    ],
)
def test_a_short_run_measures_its_targets_without_errors(tmp_path, arguments, measured):
    require("wrk")
    output = tmp_path / "results.md"
    output.write_text("# Notes kept around the table\n")
    command = [sys.executable, "bench/bench.py", *arguments, f"--output={output}"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = output.read_text()
    assert text.startswith("# Notes kept around the table\n")
    first_table = text.split("\n\n| target")[1].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in first_table]
    main = {(row[0], row[1]): row for row in rows}
    assert set(main) == set(measured)
    for row in main.values():
        assert float(row[2]) > 0  # req/s
        assert row[6] == "0", text  # non-2xx
        assert row[8].split()[0] == "200"
        assert float(row[9]) > 0  # req/s as a share of the floor's


def test_the_features_script_prints_a_cost_for_each_step():
    # In its own process: it takes the app's features out of the app it imports.
    command = [sys.executable, "bench/features.py", "20"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines][::6] == ["the app", "the parse_render rung"]
    assert len(lines) == 7 and all(float(line.split()[-2]) > 0 for line in lines)


@pytest.mark.stress
def test_a_short_proxy_run_measures_one_and_two_instances_without_errors():
    require("wrk")
    command = [sys.executable, "bench/proxy.py", "--instances", "2", *SHORT]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [line.strip("|").split("|") for line in run.stdout.splitlines() if line.startswith("| ")]
    cells = {(row[0].strip(), row[1].strip()): row for row in rows[1:]}
    assert set(cells) == {(count, method) for count in ("1", "2") for method in METHODS}
    for row in cells.values():
        assert float(row[2]) > 0 and row[-1].strip() == "0", run.stdout  # req/s, no errors
        assert float(row[5]) > 0 and float(row[6]) > 0, run.stdout  # app's and nginx's CPU


def test_recording_replaces_only_the_previous_results(tmp_path):
    output = tmp_path / "results.md"
    output.write_text(f"before\n{MARK_START}\nold table\n{MARK_END}\nafter\n")
    record(output, "new table\n")
    assert output.read_text() == f"before\n{MARK_START}\nnew table\n{MARK_END}\nafter\n"


@pytest.mark.parametrize("name", RUNGS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_rung_answers_with_the_apps_page_and_headers(name, method):
    started = []
    rung = getattr(ladder, name)
    page = b"".join(rung(floor.environ(method), lambda *args: started.extend(args[:2])))
    status, headers, app_page = floor.page(method)
    assert (started[0], sorted(started[1]), page) == (status, sorted(headers), app_page)
