"""What several instances buy: the app through the shipped nginx with 1 and with N instances,
storing in one SQLite file and in one PostgreSQL database.

`make bench-proxy` starts deploy/run_proxy.py as `make run-proxy` does, once for each number of
instances (WEB_CONCURRENCY=1 and N, default: the number of CPUs) and database: an SQLite file of
its own, or a database of its own on one PostgreSQL server that the bench starts as the tests
start theirs (tests/databases.py). It loads each with wrk through nginx over HTTPS with
keep-alive, GET / and POST / of the benchmark's form (each POST stored as a new row), in
interleaved rounds after a warm-up, and prints the medians as a Markdown table: req/s, p99
latency, and the CPU time the app's instances, nginx and PostgreSQL spent per request. A round
also measures the durable SQLite commits the SQLite files' folder takes one at a time: what
bounds several instances writing one SQLite file. Nothing else is pinned: the instances are
meant to spread over every core, and wrk, nginx and PostgreSQL share the cores with them, as
clients, a proxy and a database server do.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/, first: there `bench` would be bench/bench.py, not the package.
sys.path[:1] = [str(ROOT)]

import store  # noqa: E402
from bench.bench import (  # noqa: E402
    WRK_SCRIPT,
    cpu_ns,
    durable_commits,
    form_body,
    machine,
    table,
)
from deploy.servers import descendants, start_proxy  # noqa: E402

METHODS = ["GET", "POST"]
DATABASES = ["sqlite", "postgresql"]
CONNECTIONS = 16
WARM_UP_SECONDS = 1
# N instances must serve at least this many times one instance's req/s: GET, the least the
# issue of several instances asks of 2 on 2 cores; a stored POST on one PostgreSQL, issue 24's.
# On one SQLite file there is no floor: one writer at a time, handed from instance to instance
# by SQLite's polling, each commit waiting for its fsync.
FLOORS = {("GET", "sqlite"): 1.35, ("GET", "postgresql"): 1.35, ("POST", "postgresql"): 1.2}


def start_postgres():
    """Start a PostgreSQL server of the bench's own, as the tests start theirs: initdb in a
    temporary folder, the `postgres` user when run as root, loopback TCP."""
    sys.path.insert(1, str(ROOT / "tests"))
    import databases  # tests/databases.py

    if databases.postgres_programs() is None:
        sys.exit("PostgreSQL is not installed: run `apt-get install -y postgresql`")
    return databases.Postgres()


def processes_cpu_ns(pids: list[int]) -> int:
    """Return the CPU time some processes have used so far; those that ended count nothing."""
    used = 0
    for pid in pids:
        try:
            used += cpu_ns(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
    return used


def server_cpu_ns(runner_pid: int, postgres_pid: int) -> dict[str, int]:
    """Return the CPU time used so far by run_proxy's children (the app's instances and nginx)
    and by PostgreSQL's processes."""
    nginx, app = [], []
    for pid in descendants(runner_pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        (nginx if name == "nginx" else app).append(pid)
    return {
        "app": processes_cpu_ns(app),
        "nginx": processes_cpu_ns(nginx),
        "postgresql": processes_cpu_ns([postgres_pid, *descendants(postgres_pid)]),
    }


def wrk(proxy, method: str, seconds: int, postgres_pid: int) -> dict:
    """Load the proxy with wrk; return its results and the servers' CPU per request (µs)."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s"]
    command += ["-s", str(WRK_SCRIPT), proxy.url + "/"]
    env = {**os.environ, **({"BENCH_POST": form_body()} if method == "POST" else {})}
    before = server_cpu_ns(proxy.server.process.pid, postgres_pid)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    after = server_cpu_ns(proxy.server.process.pid, postgres_pid)
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    for part in after:
        result[f"{part}_us"] = (after[part] - before[part]) / 1000 / max(result["requests"], 1)
    return result


def migrated(url: str) -> str:
    """Bring a database's schema up to date, as a deploy does before the instances start."""
    database = store.connect(url, threads=1)
    try:
        database.migrate()
    finally:
        database.close()
    return url


def count_rows(url: str) -> int:
    """Return how many submissions a database holds."""
    database = store.connect(url, threads=1)
    try:
        return database.count()
    finally:
        database.close()


def measure(counts: list[int], rounds: int, seconds: int) -> tuple[dict, float, dict]:
    """Return the median results by (database, instances, method), the durable commits' median,
    and the rows stored and POSTs answered by (database, instances); cells run side by side."""
    postgres = start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="form-bench-proxy-") as folder:
            folder = Path(folder)
            urls = {}
            for count in counts:
                urls["sqlite", count] = migrated(f"sqlite:///{folder / f'{count}.sqlite3'}")
                urls["postgresql", count] = migrated(postgres.create())
            posts = dict.fromkeys(urls, 0)
            proxies = {}

            def run(cell, seconds: int) -> dict:
                if cell == "commit":
                    return durable_commits(folder, seconds)
                *setting, method = cell
                result = wrk(proxies[tuple(setting)], method, seconds, postgres.process.pid)
                posts[tuple(setting)] += result["requests"] if method == "POST" else 0
                return result

            try:
                for setting, url in urls.items():
                    run_dir = folder / "-".join(map(str, setting))
                    run_dir.mkdir()
                    proxies[setting] = start_proxy(
                        run_dir, environ={"WEB_CONCURRENCY": str(setting[1]), "DATABASE_URL": url}
                    )
                cells = [(*setting, method) for setting in urls for method in METHODS]
                runs = {cell: [] for cell in [*cells, "commit"]}
                for cell in runs:  # warm-up: connections, caches, the app's first renders
                    run(cell, WARM_UP_SECONDS)
                for _ in range(rounds):
                    for cell, results in runs.items():
                        results.append(run(cell, seconds))
            finally:
                for proxy in proxies.values():
                    proxy.server.stop()
            stored = {setting: (count_rows(url), posts[setting]) for setting, url in urls.items()}
    finally:
        postgres.close()
    commits = statistics.median(run["rps"] for run in runs.pop("commit"))
    medians = {
        cell: {
            "rps": statistics.median(run["rps"] for run in results),
            "p99_ms": statistics.median(run["p99_ms"] for run in results),
            "app_us": statistics.median(run["app_us"] for run in results),
            "nginx_us": statistics.median(run["nginx_us"] for run in results),
            "postgresql_us": statistics.median(run["postgresql_us"] for run in results),
            "errors": sum(run["status_errors"] + run["socket_errors"] for run in results),
        }
        for cell, results in runs.items()
    }
    return medians, commits, stored


def verdicts(results: dict, count: int, commits: float) -> list[str]:
    """Return what N instances bought over one, against the floors, and what bounds SQLite."""
    lines = []
    for database in DATABASES:
        for method in METHODS:
            ratio = results[database, count, method]["rps"] / results[database, 1, method]["rps"]
            line = f"- {method} on {database}: {count} instances ÷ 1 = {ratio:.2f}"
            if (method, database) in FLOORS:
                least = FLOORS[method, database]
                line += f" (at least {least}: {'met' if ratio >= least else 'MISSED'})"
            else:
                rate = results[database, count, method]["rps"]
                line += (
                    " (no floor: SQLite lets one writer in at a time; one instance's threads "
                    "queue for it in turn, but instances take turns by SQLite's own polling, "
                    "which sleeps 1 to 100 ms between tries; and each commit waits for its "
                    f"fsync: {commits:.0f} durable commits a second one at a time in its folder, "
                    f"of which these stored POSTs are {rate / commits:.2f})"
                )
            lines.append(line)
    return lines


def main():
    """Measure, then print the table and whether N instances met the floors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=os.cpu_count(), help="N")
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians taken")
    args = parser.parse_args()
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode:
        sys.exit("wrk is not installed: run `apt-get install -y wrk`")
    counts = sorted({1, args.instances})
    measured_on = machine()
    results, commits, stored = measure(counts, args.rounds, args.seconds)
    rows = []
    for (database, count, method), result in results.items():
        one = results[database, 1, method]
        rows.append([database, count, method, f"{result['rps']:.0f}"])
        rows[-1] += [f"{result['rps'] / one['rps']:.2f}", f"{result['p99_ms']:.2f}"]
        rows[-1] += [f"{result[part]:.0f}" for part in ("app_us", "nginx_us", "postgresql_us")]
        rows[-1] += [result["errors"]]
    header = ["database", "instances", "method", "req/s", "÷ 1 instance", "p99 ms"]
    header += ["app CPU µs/req", "nginx CPU µs/req", "PostgreSQL CPU µs/req"]
    header += ["4xx, 5xx + socket errors"]
    print(f"Measured {measured_on}; load average {os.getloadavg()[0]:.2f} at the end.\n")
    print(f"`{' '.join(sys.argv[1:]) or 'defaults'}`: through nginx (HTTPS, keep-alive),")
    print(f"{args.rounds} interleaved rounds of {args.seconds}s at {CONNECTIONS} connections")
    print(f"after a {WARM_UP_SECONDS} s warm-up, medians; each POST stored as a new row.\n")
    print("\n".join(table(rows, header)))
    print()
    print(
        "Stored: "
        + "; ".join(
            f"{database} {count} instance(s) {kept} rows for {posts} POSTs answered"
            for (database, count), (kept, posts) in stored.items()
        )
        + "."
    )
    if args.instances > 1:
        print()
        print("\n".join(verdicts(results, args.instances, commits)))
    if any(kept < posts for kept, posts in stored.values()):
        sys.exit("fewer rows stored than POSTs answered: see above")


if __name__ == "__main__":
    main()
