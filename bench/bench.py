"""`make bench`: what a request costs the app on one core, against the floor, the seed and Flask,
and what storing a submission costs it.

Each target is a WSGI callable served by the Procfile's own command line (only `app:application`
replaced), pinned to CPU 0. wrk, pinned to CPU 1, loads it over keep-alive connections with
GET / and with POST / of app.EXAMPLE, in interleaved rounds, after a warm-up; the report gives
the medians, the server's CPU time per request and the error counts, in Markdown. The POSTs
carry no token, so the app (and the Flask peer) make one for each and store each as a new row,
in SQLite files of their own in a temporary folder; a round also measures how many durable
SQLite commits that folder's file system takes one at a time, the most a design that commits
each save can reach. docs/benchmark.md says how to read it. Run it from the repository as
`python -m bench.bench`.
"""

import argparse
import collections
import datetime
import functools
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from deploy.servers import ROOT, Server, procfile_web_command, start_server

# Each target's module:callable, served in place of the Procfile's app:application.
TARGETS = {
    "app": "app:application",  # its POST stores the submission (SQLite, committed to disk)
    "floor": "bench.floor:application",  # the app's own pages as fixed bytes: nothing is faster
    "seed": "bench.seed:application",  # the wsgiref tutorial the app grew from
    "flask": "bench.flask_form:app",  # the same form in Flask, storing as Flask's tutorial does
    "unstored": "bench.unstored:application",  # the app with a store that keeps nothing
}
METHODS = ["GET", "POST"]
# The unstored app's GET is the app's: only its POST says something.
METHODS_OF = {"unstored": ["POST"]}
# Not a server: one durable SQLite commit at a time, in the folder of the targets' databases.
COMMIT = ("durable commit", "INSERT")
SERVER_CPU, LOAD_CPU = "0", "1"  # one core each, so the server never competes with wrk
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
# On one core the app must serve at least this many times the Flask form's req/s: GET, issue 16;
# POST, issue 24, each storing the submission durably (the app's store, Flask's sqlite3).
AT_LEAST_FLASK = {"GET": 1.8, "POST": 1.3}
WARM_UP_SECONDS = 1  # each cell's first run, not counted: connections, caches, first renders


def served_by_procfile(target: str) -> str:
    """Return the Procfile's web command line serving a target's callable instead of the app."""
    command = procfile_web_command()
    if command.count("app:application") != 1:
        raise ValueError(f"the Procfile's command does not serve app:application once: {command}")
    return command.replace("app:application", TARGETS[target])


def serve(target: str, log: Path, environ: dict) -> Server:
    """Start a target as the Procfile serves the app, on the server's CPU; return once it
    listens."""
    command = f"taskset -c {SERVER_CPU} {served_by_procfile(target)}"
    return start_server(command, log, environ=environ)


@functools.cache
def form_body() -> str:
    """Return app.EXAMPLE urlencoded, as a browser sends the form."""
    import app  # here, not at the top: importing the bench loads no app

    return urlencode(app.EXAMPLE, doseq=True)


def check_tools():
    """Stop with a clear message if wrk or taskset is missing or there is only one CPU."""
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `apt-get install -y {package}`")
    if os.cpu_count() < 2:
        sys.exit("the benchmark pins the server and wrk to one CPU each: it needs two")


def methods(target: str) -> list[str]:
    """Return the methods a target is measured with."""
    return METHODS_OF.get(target, METHODS)


def cpu_ns(pid: int) -> int:
    """Return the CPU time all of a process's threads have used so far, in nanoseconds."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks)


def wrk(server: Server, method: str, connections: int, seconds: int) -> dict:
    """Load a server with wrk for some seconds; return wrk's results and the server's CPU."""
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    command += ["--timeout", "5s", "-s", str(WRK_SCRIPT), server.url + "/"]
    env = {**os.environ, **({"BENCH_POST": form_body()} if method == "POST" else {})}
    cpu_before = cpu_ns(server.process.pid)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_us"] = (cpu_ns(server.process.pid) - cpu_before) / 1000 / max(result["requests"], 1)
    return result


def fetch(url: str, method: str) -> tuple[int, int]:
    """Make one request as wrk.lua does and return the status and the page's size."""
    netloc = urlsplit(url).netloc
    body = form_body() if method == "POST" else None
    headers = {}
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers |= {"Sec-Fetch-Site": "same-origin", "Origin": f"http://{netloc}"}
    connection = http.client.HTTPConnection(netloc, timeout=10)
    try:
        connection.request(method, "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, len(response.read())
    finally:
        connection.close()


def durable_commits(folder: Path, seconds: float) -> dict:
    """Commit one tiny row at a time for some seconds, as durably as the app's store (WAL,
    synchronous=FULL), in a file in `folder`, on the servers' CPU; return the rate, the latency
    of a commit and its CPU time, as wrk() returns a server's."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CPU)})  # this thread only: it waits, wrk's CPU is idle
    try:
        with closing(sqlite3.connect(folder / "commits.sqlite3", isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("CREATE TABLE IF NOT EXISTS tick (n integer)")
            took = []
            cpu, start = time.thread_time_ns(), time.perf_counter()
            now = start
            while now - start < seconds:
                db.execute("INSERT INTO tick (n) VALUES (?)", [len(took)])  # its own commit
                took.append(time.perf_counter() - now)
                now += took[-1]
            cpu = time.thread_time_ns() - cpu
    finally:
        os.sched_setaffinity(0, affinity)
    return {
        "requests": len(took),
        "rps": len(took) / (now - start),
        "p50_ms": statistics.median(took) * 1000,
        "p99_ms": statistics.quantiles(took, n=100)[98] * 1000,
        "cpu_us": cpu / 1000 / len(took),
        "status_errors": 0,
        "socket_errors": 0,
    }


MEDIANS = ("rps", "p50_ms", "p99_ms", "cpu_us")


def median_of(runs: list[dict]) -> dict:
    """Return the median rate, latencies and CPU of some runs, and their summed error counts."""
    medians = {key: statistics.median(run[key] for run in runs) for key in MEDIANS}
    return medians | {
        key: sum(run[key] for run in runs) for key in ("status_errors", "socket_errors")
    }


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def where() -> str:
    """Describe when and on what the numbers are taken, with the load average at the time."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return (
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; "
        f"nproc {os.cpu_count()}, {cpu[1] if cpu else platform.machine()}; "
        f"load average {load_average()} at the start; "
        f"Linux {platform.release()}; Python {platform.python_version()}"
    )


def machine() -> str:
    """Describe where the numbers come from, and the versions of what is measured."""
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (
        f"{where()}, Bottle {version('bottle')}, Flask {version('flask')}, "
        f"Jinja2 {version('jinja2')}, Waitress {version('waitress')}, wrk {wrk_version}"
    )


def table(rows: list[list], header: list[str]) -> list[str]:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def report(args, measured_on: str, firsts: dict, results: dict, stored: dict) -> str:
    """Return the results as Markdown: how they were taken, the table, the ratios."""
    command = f"python -m bench.bench --rounds {args.rounds} --seconds {args.seconds}"
    command += f" --connections {args.connections}"
    if args.targets != list(TARGETS):
        command += " --targets " + " ".join(args.targets)
    # How they were taken is docs/benchmark.md's Method: here, when, on what, and the command.
    lines = [f"Measured {measured_on}; load average {load_average()} at the end. `{command}`.", ""]
    rows = []
    for (target, method), result in results.items():
        status, size = firsts.get((target, method), ("", ""))
        rows.append([target, method, f"{result['rps']:.0f}", f"{result['p99_ms']:.2f}"])
        rows[-1] += [f"{result['cpu_us']:.0f}", result["status_errors"]]
        rows[-1] += [result["socket_errors"], f"{status}, {size} B" if status else ""]
    header = ["target", "method", "req/s", "p99 ms", "server CPU µs/req", "4xx, 5xx"]
    lines += table(rows, [*header, "socket errors", "first answer"]) + [""]
    lines += [
        "Stored: "
        + "; ".join(
            f"{target} {kept} rows for {posts} POSTs answered"
            for target, (kept, posts) in stored.items()
        )
        + ".",
        "",
    ]
    header = ["ratio", "req/s, app's ÷ other's", "CPU/req, other's ÷ app's", "target", "verdict"]
    return "\n".join(lines + table(ratios(results), header)) + "\n"


def ratios(results: dict) -> list[list]:
    """Return the app's req/s and CPU per request against each other target's, and its stored
    POSTs against the durable commits; the verdicts on Flask's, and the verdict on errors."""
    rows = []
    for other, method in itertools.product(TARGETS, METHODS):
        if other == "app" or ("app", method) not in results or (other, method) not in results:
            continue
        app, peer = results["app", method], results[other, method]
        share = app["rps"] / peer["rps"]
        rows.append(
            [f"app/{other} {method}", f"{share:.2f}", f"{peer['cpu_us'] / app['cpu_us']:.2f}"]
        )
        if other == "flask":
            least = AT_LEAST_FLASK[method]
            rows[-1] += [f">= {least}", "met" if share >= least else "MISSED"]
        else:
            rows[-1] += ["", ""]
    if ("app", "POST") in results:  # how near the app's saves come to the file system's limit
        share = results["app", "POST"]["rps"] / results[COMMIT]["rps"]
        rows.append([f"app POST/{COMMIT[0]}", f"{share:.2f}", "", "", ""])
    errors = sum(result["status_errors"] + result["socket_errors"] for result in results.values())
    rows.append(
        ["4xx, 5xx and socket errors, all", errors, "", "= 0", "MISSED" if errors else "met"]
    )
    return rows


def record(output: Path, text: str, start: str = MARK_START, end: str = MARK_END):
    """Put the results between the markers in the output file, keeping what is around them;
    at its end, between new markers, the first time."""
    block = f"{start}\n{text}{end}"
    old = output.read_text() if output.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old + ("\n" if old else "") + block + "\n"
    output.write_text(new)


def make_databases(environ: dict):
    """Make the app's and the Flask peer's tables, each with its own command."""
    for command in (["store", "migrate"], ["flask", "--app", "bench.flask_form", "init-db"]):
        subprocess.run(
            [sys.executable, "-m", *command],
            cwd=ROOT,
            env={**os.environ, **environ},
            check=True,
            capture_output=True,
        )


def count_rows(database: Path) -> int:
    """Return how many submissions an SQLite file holds."""
    with closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT count(*) FROM submission").fetchone()[0]


def first_answer_wrong(target: str, method: str, status: int) -> bool:
    """Tell whether a target's first answer is not what the form sends: the page for GET; for
    POST the 303 to the saved page, or the page shown back by the seed, which keeps nothing."""
    return status != (303 if method == "POST" and target != "seed" else 200)


def measure(args) -> tuple[dict, dict, dict]:
    """Serve every target, check each answers as the form does, warm them up, then load them;
    return the first answers, the medians by cell, and the rows stored and POSTs answered."""
    with tempfile.TemporaryDirectory(prefix="form-bench-") as folder:
        folder = Path(folder)
        databases = {"app": folder / "app.sqlite3", "flask": folder / "flask.sqlite3"}
        # Every target gets both: the floor asks the app for its answer to a POST, which stores.
        environ = {
            "DATABASE_URL": f"sqlite:///{databases['app']}",
            "FLASK_DATABASE": str(databases["flask"]),
        }
        make_databases(environ)
        servers = {}
        try:
            for target in args.targets:
                servers[target] = serve(target, folder / f"{target}.log", environ)
            # One request each before any timing: the floor captures the app's pages here.
            firsts = {
                (target, method): fetch(server.url, method)
                for target, server in servers.items()
                for method in methods(target)
            }
            failed = {
                key: first for key, first in firsts.items() if first_answer_wrong(*key, first[0])
            }
            if failed:  # the rates of error pages would say nothing
                outputs = "\n".join(servers[target].output() for target, _ in failed)
                sys.exit(f"not as the form answers: {failed}\n{outputs}")
            posts = collections.Counter(target for target, method in firsts if method == "POST")

            def run(cell: tuple[str, str], seconds: int) -> dict:
                target, method = cell
                if cell == COMMIT:
                    return durable_commits(folder, seconds)
                result = wrk(servers[target], method, args.connections, seconds)
                posts[target] += result["requests"] if method == "POST" else 0
                return result

            runs = {key: [] for key in [*firsts, COMMIT]}
            print("warming up", file=sys.stderr)
            for cell in runs:
                run(cell, WARM_UP_SECONDS)
            for round_number in range(args.rounds):
                print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr)
                for cell, results in runs.items():
                    results.append(run(cell, args.seconds))
        finally:
            for server in servers.values():
                server.stop()
        stored = {
            target: (count_rows(database), posts[target])
            for target, database in databases.items()
            if target in servers
        }
    return firsts, {key: median_of(results) for key, results in runs.items()}, stored


def main():
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians taken")
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--output", type=Path, help="also write the report between its markers")
    args = parser.parse_args()
    check_tools()
    measured_on = machine()  # the time and the load average at the start
    firsts, results, stored = measure(args)
    text = report(args, measured_on, firsts, results, stored)
    print(text)
    if args.output:
        record(args.output, text)
    if any(result["status_errors"] for result in results.values()):
        sys.exit("some answers were errors (4xx, 5xx): see the table")
    if any(kept < posts for kept, posts in stored.values()):
        sys.exit("fewer rows stored than POSTs answered: see the table")


if __name__ == "__main__":
    main()
