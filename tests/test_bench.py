"""The benchmarks, run for two seconds a cell by `make stress` so that they cannot rot.

No timing is checked (timings belong in the bench, on a quiet machine): only that the report has
its rows and that every target answered every request with a 2xx. The bench runs in its own
process, as `make bench` runs it: nothing here imports bench/, so the two folders cannot import
each other in a circle.
"""

import subprocess
import sys

import pytest
from helpers import require

from deploy.servers import ROOT

TARGETS = ["app", "floor", "seed", "flask"]  # what make bench must measure (issue 16)
METHODS = ["GET", "POST"]
BLOCK = "<!-- bench:start -->\n{}<!-- bench:end -->"  # where --output writes the report


def run(*command: str) -> str:
    """Run a benchmark script from the repository; return what it printed, or fail."""
    require("wrk")
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def table(text: str, first_column: str) -> dict[str, dict[str, str]]:
    """Return the rows of the Markdown table whose header starts with `first_column`, by their
    first cells (two, if the second is a method), each row a dict by the header's names."""
    lines = text.split(f"\n| {first_column} |")[1].split("\n\n")[0].splitlines()
    header = [first_column] + [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        row = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        key = list(row.values())[:2] if row.get("method") in METHODS else [row[first_column]]
        rows[" ".join(key)] = row
    return rows


@pytest.mark.stress
def test_every_target_answers_the_bench_with_200s(tmp_path):
    output = tmp_path / "benchmark.md"
    output.write_text("before\n" + BLOCK.format("an old report\n") + "\nafter\n")
    arguments = ["--rounds=2", "--seconds=2", "--connections=64"]
    text = run("-m", "bench.bench", *arguments, f"--output={output}")
    assert output.read_text() == "before\n" + BLOCK.format(text.removesuffix("\n")) + "\nafter\n"
    rows = table(text, "target")
    assert set(rows) == {f"{target} {method}" for target in TARGETS for method in METHODS}
    for row in rows.values():
        assert row["first answer"].startswith("200, "), text
        assert (row["non-2xx"], row["socket errors"]) == ("0", "0"), text
        assert float(row["req/s"]) > 0
    ratios = table(text, "ratio")
    for method, least in (("GET", "1.8"), ("POST", "1.3")):  # issue 16's shares of Flask's req/s
        verdict = ratios[f"app/flask {method}"]
        assert float(verdict["req/s, app's ÷ other's"]) > 0
        assert (verdict["target"], verdict["verdict"] in ("met", "MISSED")) == (f">= {least}", True)
    assert ratios["non-2xx and socket errors, all"]["verdict"] == "met"


@pytest.mark.stress
def test_a_short_proxy_run_measures_one_and_two_instances_without_errors():
    stdout = run("bench/proxy.py", "--instances", "2", "--seconds=1", "--rounds=1")
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    cells = {(row[0].strip(), row[1].strip()): row for row in rows[1:]}
    assert set(cells) == {(count, method) for count in ("1", "2") for method in METHODS}
    for row in cells.values():
        assert float(row[2]) > 0 and row[-1].strip() == "0", stdout  # req/s, no errors
        assert float(row[5]) > 0 and float(row[6]) > 0, stdout  # app's and nginx's CPU
