"""Benchmark the app against the Waitress floor and the seed; print and record the table."""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
from floor import FORM  # noqa: E402  (one form body for every target and tool)

from deploy.servers import Server, procfile_web_command, start_server  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk.lua"
SERVER_CPU, LOAD_CPU = "0", "1"  # one core each, so the server never competes with wrk
METHODS = ["GET", "POST"]
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"

# Each target: the shell command that serves it on $HOST:$PORT. The app and the floor share the
# Procfile's command line, so they differ only in the WSGI callable.
PROCFILE = procfile_web_command()
TARGETS = {
    "app": PROCFILE,
    "floor": PROCFILE.replace("app:application", "bench.floor:application"),
    "seed": f"{shlex.quote(sys.executable)} bench/seed.py",
}
# The ladder's rungs (bench/ladder.py): Bottle doing part of the app's work, same command line.
RUNGS = ["fixed", "parse", "render", "parse_render"]
for name in RUNGS:
    TARGETS[name] = PROCFILE.replace("app:application", f"bench.ladder:{name}")
DEFAULT_TARGETS = ["app", "floor", "seed"]


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
    """Load a server with wrk for some seconds and return its results and the CPU it used."""
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    command += ["--timeout", "5s", "-s", str(WRK_SCRIPT), server.url + "/"]
    env = {**os.environ, **({"BENCH_POST": FORM.decode()} if method == "POST" else {})}
    cpu_before = cpu_ns(server.process.pid)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_us"] = (cpu_ns(server.process.pid) - cpu_before) / 1000 / max(result["requests"], 1)
    return result


def fetch(url: str, method: str) -> tuple[int, int]:
    """Make one request as wrk does and return the status and the page size."""
    body = FORM if method == "POST" else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    try:
        connection.request(method, "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, len(response.read())
    finally:
        connection.close()


def rss_kib(pid: int) -> int:
    """Return a process's resident set size in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])


def rss_growth(server: Server, total: int) -> dict:
    """Warm the server up, then serve `total` requests (GET and POST in turn) and compare RSS."""
    for method in METHODS:
        wrk(server, method, 16, 1)
    before, served, seconds, method = rss_kib(server.process.pid), 0, 1, "GET"
    while served < total:
        result = wrk(server, method, 16, seconds)
        served += result["requests"]
        # Size the next run from this one's rate; wrk counts in whole seconds.
        seconds = max(1, min(10, round((total - served) / max(result["rps"], 1))))
        method = "POST" if method == "GET" else "GET"
    return {"before": before, "after": rss_kib(server.process.pid), "requests": served}


def median_of(runs: list[dict]) -> dict:
    """Return the median rate and latencies of some runs, and their summed error counts."""
    return {
        "rps": statistics.median(run["rps"] for run in runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "cpu_us": statistics.median(run["cpu_us"] for run in runs),
        "non2xx": sum(run["non2xx"] for run in runs),
        "socket_errors": sum(run["socket_errors"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
    }


def growth_order(item) -> tuple:
    """Sort growth cells by target, then method, then connections."""
    (target, method, connections), _ = item
    return list(TARGETS).index(target), method, connections


def machine() -> str:
    """Describe the machine and the software the numbers come from."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; "
        f"nproc {os.cpu_count()}, {cpu[1] if cpu else platform.machine()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start; "
        f"Linux {platform.release()}; Python {platform.python_version()}, "
        f"Bottle {version('bottle')}, Waitress {version('waitress')}, wrk {wrk_version}"
    )


def table(rows: list[list], header: list[str]) -> list[str]:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def share_verdicts(method: str, app: dict, base: dict, name: str, share: float) -> list[list]:
    """Return the verdict rows for the app's rate as a share of another target's, two ways."""
    ratio = app["rps"] / base["rps"]
    # Less noisy on a shared machine: the server is CPU-bound, so rates go as 1 / CPU.
    cpu = base["cpu_us"] / app["cpu_us"]
    return [
        at_least(f"{method} req/s app/{name}", ratio, share),
        at_least(f"{method} CPU/req {name}/app", cpu, share),
    ]


def at_least(label: str, measured: float, target: float) -> list:
    """Return a verdict row: a measured share against the least it must be."""
    return [label, f"{measured:.3f}", f">= {target}", "met" if measured >= target else "MISSED"]


def report(args, measured_on, sizes, main, growth, rss) -> str:
    """Return the results as Markdown: the main table, ratios and targets, growth and RSS."""
    lines = [
        f"Measured {measured_on}.",
        "",
        f"`{' '.join(sys.argv[1:]) or 'defaults'}`: servers pinned to CPU {SERVER_CPU}, wrk to "
        f"CPU {LOAD_CPU}; {args.rounds} interleaved rounds of {args.seconds}s at 16 connections, "
        "medians. Non-2xx is wrk's count of 4xx/5xx answers; socket errors are connect, read, "
        "write errors and timeouts (5 s). Server CPU is the time all the server's threads ran "
        "(/proc schedstat) per request.",
        "",
    ]
    rows = []
    for target, method in main:
        m = main[target, method]
        status, size = sizes[target, method]
        rows.append([target, method, f"{m['rps']:.0f}", f"{m['p50_ms']:.2f}"])
        rows[-1] += [f"{m['p99_ms']:.2f}", f"{m['cpu_us']:.0f}", m["non2xx"], m["socket_errors"]]
        rows[-1].append(f"{status} {size}")
        if ("floor", method) in main:
            floor = main["floor", method]
            rows[-1] += [f"{m['rps'] / floor['rps']:.2f}", f"{floor['cpu_us'] / m['cpu_us']:.2f}"]
    header = ["target", "method", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "non-2xx"]
    header.append("socket errors")
    main_header = [*header, "status, bytes"]
    if any(target == "floor" for target, _ in main):
        main_header += ["req/s ÷ floor's", "floor's CPU ÷ CPU"]
    lines += table(rows, main_header) + [""]

    verdicts = []
    for method, floor_share in (("GET", 0.85), ("POST", 0.75)):
        if ("app", method) not in main or ("floor", method) not in main:
            continue
        app, floor = main["app", method], main["floor", method]
        verdicts += share_verdicts(method, app, floor, "floor", floor_share)
        p99 = app["p99_ms"] / floor["p99_ms"]
        verdicts.append([f"{method} p99 app/floor", f"{p99:.3f}", "<= 1.5"])
        verdicts[-1].append("met" if p99 <= 1.5 else "MISSED")
    if ("app", "POST") in main and ("parse_render", "POST") in main:
        # The production checks against Bottle parsing and rendering the same POST without them.
        rung = main["parse_render", "POST"]
        verdicts += share_verdicts("POST", main["app", "POST"], rung, "parse_render", 1.0)
    errors = sum(main[key]["non2xx"] for key in main if key[0] != "seed")
    verdicts.append(["non-2xx, app and floor", errors, "0", "met" if errors == 0 else "MISSED"])
    for target, r in rss.items():
        growth_mib = (r["after"] - r["before"]) / 1024
        per_100k = growth_mib * 100_000 / r["requests"]
        verdicts.append([f"{target} RSS growth per 100k requests", f"{per_100k:.2f} MiB"])
        verdicts[-1] += ["< 2 MiB", "met" if per_100k < 2 else "MISSED"]
    lines += table(verdicts, ["ratio", "measured", "target", ""]) + [""]

    if growth:
        lines += [f"Growth: one {args.growth_seconds}s run per cell.", ""]
        rows = []
        for (target, method, connections), g in sorted(growth.items(), key=growth_order):
            rows.append([target, method, connections, f"{g['rps']:.0f}", f"{g['p50_ms']:.2f}"])
            rows[-1] += [f"{g['p99_ms']:.2f}", f"{g['cpu_us']:.0f}", g["non2xx"]]
            rows[-1].append(g["socket_errors"])
        lines += table(rows, ["target", "method", "connections", *header[2:]]) + [""]

    if rss:
        rows = [[t, r["requests"], r["before"] / 1024, r["after"] / 1024] for t, r in rss.items()]
        rows = [[t, n, f"{b:.1f}", f"{a:.1f}", f"{a - b:+.2f}"] for t, n, b, a in rows]
        lines += ["RSS after a warm-up, then after serving the requests (GET and POST in turn):"]
        header = ["target", "requests", "RSS before MiB", "RSS after MiB", "growth MiB"]
        lines += [""] + table(rows, header)
    return "\n".join(lines) + "\n"


def record(output: Path, text: str):
    """Put the results between the markers in the output file, keeping what is around them."""
    block = f"{MARK_START}\n{text}{MARK_END}"
    old = output.read_text() if output.exists() else ""
    if MARK_START in old and MARK_END in old:
        new = old[: old.index(MARK_START)] + block + old[old.index(MARK_END) + len(MARK_END) :]
    else:
        new = old + ("\n" if old else "") + block + "\n"
    output.write_text(new)


def main():
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each main run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians taken")
    parser.add_argument("--growth", type=int, nargs="*", default=[1, 16, 64, 256])
    parser.add_argument("--growth-seconds", type=int, default=3)
    parser.add_argument("--rss-requests", type=int, default=100_000, help="0: no RSS runs")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=DEFAULT_TARGETS)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    args = parser.parse_args()
    check_tools()
    measured_on = machine()  # the time and load average at the start

    with tempfile.TemporaryDirectory() as logs:
        servers = {}
        try:
            for name in args.targets:
                pinned = f"taskset -c {SERVER_CPU} {TARGETS[name]}"
                servers[name] = start_server(pinned, Path(logs) / f"{name}.log")
            sizes = {
                (name, method): fetch(server.url, method)
                for name, server in servers.items()
                for method in args.methods
            }
            rss = {}
            measured = [name for name in ("app", "floor") if name in args.targets]
            for name in measured if args.rss_requests else ():
                print(f"RSS: {args.rss_requests} requests to the {name}", file=sys.stderr)
                rss[name] = rss_growth(servers[name], args.rss_requests)
            runs = {(name, method): [] for name in args.targets for method in args.methods}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr)
                for (name, method), results in runs.items():
                    results.append(wrk(servers[name], method, 16, args.seconds))
            main = {key: median_of(results) for key, results in runs.items()}
            growth = {}
            for connections in args.growth:
                print(f"growth: {connections} connections", file=sys.stderr)
                for name, method in runs:
                    run = wrk(servers[name], method, connections, args.growth_seconds)
                    growth[name, method, connections] = median_of([run])
        finally:
            for server in servers.values():
                server.stop()
    text = report(args, measured_on, sizes, main, growth, rss)
    print(text)
    record(args.output, text)


if __name__ == "__main__":
    main()
