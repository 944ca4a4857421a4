"""`make bench`: what a request costs the app on one core, against the floor, the seed and Flask.

Each target is a WSGI callable served by the Procfile's own command line (only `app:application`
replaced), pinned to CPU 0. wrk, pinned to CPU 1, loads it over keep-alive connections with
GET / and with POST / of app.EXAMPLE, in interleaved rounds; the report gives the medians, the
server's CPU time per request and the error counts, in Markdown. docs/benchmark.md says how to
read it. Run it from the repository as `python -m bench.bench`.
"""

import argparse
import datetime
import functools
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from deploy.servers import Server, procfile_web_command, start_server

# Each target's module:callable, served in place of the Procfile's app:application.
TARGETS = {
    "app": "app:application",
    "floor": "bench.floor:application",  # the app's own pages as fixed bytes: nothing is faster
    "seed": "bench.seed:application",  # the wsgiref tutorial the app grew from
    "flask": "bench.flask_form:app",  # the same form in Flask + Jinja2: the peer a user would pick
}
METHODS = ["GET", "POST"]
SERVER_CPU, LOAD_CPU = "0", "1"  # one core each, so the server never competes with wrk
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
# Issue 16: on one core the app must serve at least this many times the Flask form's req/s.
AT_LEAST_FLASK = {"GET": 1.8, "POST": 1.3}


def served_by_procfile(target: str) -> str:
    """Return the Procfile's web command line serving a target's callable instead of the app."""
    command = procfile_web_command()
    if command.count("app:application") != 1:
        raise ValueError(f"the Procfile's command does not serve app:application once: {command}")
    return command.replace("app:application", TARGETS[target])


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


MEDIANS = ("rps", "p50_ms", "p99_ms", "cpu_us")


def median_of(runs: list[dict]) -> dict:
    """Return the median rate, latencies and CPU of some runs, and their summed error counts."""
    medians = {key: statistics.median(run[key] for run in runs) for key in MEDIANS}
    return medians | {key: sum(run[key] for run in runs) for key in ("non2xx", "socket_errors")}


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def machine() -> str:
    """Describe when and where the numbers come from, with the load average at the time."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; "
        f"nproc {os.cpu_count()}, {cpu[1] if cpu else platform.machine()}; "
        f"load average {load_average()} at the start; "
        f"Linux {platform.release()}; Python {platform.python_version()}, "
        f"Bottle {version('bottle')}, Flask {version('flask')}, Jinja2 {version('jinja2')}, "
        f"Waitress {version('waitress')}, wrk {wrk_version}"
    )


def table(rows: list[list], header: list[str]) -> list[str]:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def report(args, measured_on: str, firsts: dict, results: dict) -> str:
    """Return the results as Markdown: how they were taken, the table, the ratios."""
    command = f"python -m bench.bench --rounds {args.rounds} --seconds {args.seconds}"
    command += f" --connections {args.connections}"
    if args.targets != list(TARGETS):
        command += " --targets " + " ".join(args.targets)
    lines = [
        f"Measured {measured_on}; load average {load_average()} at the end.",
        "",
        f"`{command}`: each target served by the Procfile's command line pinned to CPU "
        f"{SERVER_CPU}, wrk pinned to CPU {LOAD_CPU} (`wrk -t1 -c{args.connections} "
        f"-d{args.seconds}s`, keep-alive); the medians of {args.rounds} interleaved "
        f"round{'s' if args.rounds != 1 else ''}.",
        "",
    ]
    rows = []
    for (target, method), result in results.items():
        status, size = firsts[target, method]
        rows.append([target, method, f"{result['rps']:.0f}", f"{result['p50_ms']:.2f}"])
        rows[-1] += [f"{result['p99_ms']:.2f}", f"{result['cpu_us']:.0f}", result["non2xx"]]
        rows[-1] += [result["socket_errors"], f"{status}, {size} B"]
    header = ["target", "method", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "non-2xx"]
    lines += table(rows, [*header, "socket errors", "first answer"]) + [""]

    header = ["ratio", "req/s, app's ÷ other's", "CPU/req, other's ÷ app's", "target", "verdict"]
    return "\n".join(lines + table(ratios(results), header)) + "\n"


def ratios(results: dict) -> list[list]:
    """Return the app's req/s and CPU per request against each other target's, the verdicts on
    Flask's, and the verdict on errors."""
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
    errors = sum(result["non2xx"] + result["socket_errors"] for result in results.values())
    rows.append(
        ["non-2xx and socket errors, all", errors, "", "= 0", "MISSED" if errors else "met"]
    )
    return rows


def record(output: Path, text: str):
    """Put the results between the markers in the output file, keeping what is around them."""
    block = f"{MARK_START}\n{text}{MARK_END}"
    old = output.read_text() if output.exists() else ""
    if MARK_START in old and MARK_END in old:
        new = old[: old.index(MARK_START)] + block + old[old.index(MARK_END) + len(MARK_END) :]
    else:
        new = old + ("\n" if old else "") + block + "\n"
    output.write_text(new)


def measure(args) -> tuple[dict, dict]:
    """Serve every target, check each answers 200, then load them; return both results."""
    with tempfile.TemporaryDirectory() as logs:
        servers = {}
        try:
            for target in args.targets:
                command = f"taskset -c {SERVER_CPU} {served_by_procfile(target)}"
                servers[target] = start_server(command, Path(logs) / f"{target}.log")
            # One request each before any timing: the floor captures the app's pages here.
            firsts = {
                (target, method): fetch(server.url, method)
                for target, server in servers.items()
                for method in METHODS
            }
            failed = {key: first for key, first in firsts.items() if first[0] != 200}
            if failed:  # the rates of error pages would say nothing
                outputs = "\n".join(servers[target].output() for target, _ in failed)
                sys.exit(f"not 200: {failed}\n{outputs}")
            runs = {key: [] for key in firsts}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr)
                for (target, method), results in runs.items():
                    results.append(wrk(servers[target], method, args.connections, args.seconds))
        finally:
            for server in servers.values():
                server.stop()
    return firsts, {key: median_of(results) for key, results in runs.items()}


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
    firsts, results = measure(args)
    text = report(args, measured_on, firsts, results)
    print(text)
    if args.output:
        record(args.output, text)
    if any(result["non2xx"] for result in results.values()):
        sys.exit("some answers were not 2xx: see the table")


if __name__ == "__main__":
    main()
