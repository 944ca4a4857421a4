"""`make bench-proxy`: the shipped shape per machine, against the stack a user would pick instead.

Three servers, each behind the very same nginx site (deploy/form-app.conf as `make run-proxy`
writes it, its upstream pointed at that server), each storing its POSTs in an SQLite file of its
own, each warmed up before it is measured:

- **shipped**: `make run-proxy`'s runner (deploy/run_proxy.py) with N Waitress instances, each
  started by the Procfile's command as the systemd unit starts it;
- **flask**: the same form in Flask + Jinja2 (bench/flask_form.py) on gunicorn, N gthread workers
  of 4 threads each (GUNICORN below), a common production configuration;
- **app on gunicorn**: this app's `app:application` on that same gunicorn command, the control:
  the same code as shipped, on the other server.

wrk loads each through nginx over HTTPS with 16 keep-alive connections, GET / and POST / of the
form (each POST stored as a new row), in interleaved rounds. The report gives the medians of
req/s, the p99 latency, and the CPU time per request of nginx and of the app's processes, then
the ratios against the targets, in Markdown; `--output` writes it into docs/benchmark.md.
Shipped rows with 1 instance and with 2 a core follow (`--also` names other numbers of
instances): what sets the default. Nothing
is pinned: wrk, nginx and the app share every core, as on a machine that serves.
"""

import argparse
import json
import os
import shlex
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
    count_rows,
    cpu_ns,
    form_body,
    load_average,
    machine,
    record,
    table,
)
from deploy import run_proxy, servers  # noqa: E402

METHODS = ["GET", "POST"]
CONNECTIONS = 16
WARM_UP_SECONDS = 2
BIN = Path(sys.executable).parent
GUNICORN = f"{shlex.quote(str(BIN / 'gunicorn'))} --worker-class gthread --threads 4"
SHIPPED, FLASK, CONTROL = "shipped", "flask", "app on gunicorn"
# The targets, on this machine in the same run: the shipped shape's req/s at least this
# many times the other row's.
TARGETS = {
    (FLASK, "GET"): 1.3,
    (FLASK, "POST"): 1.2,
    (CONTROL, "GET"): 0.9,  # within 10% of the same app on gunicorn
    (CONTROL, "POST"): 0.9,
}
MARK_START, MARK_END = "<!-- bench:proxy:start -->", "<!-- bench:proxy:end -->"


class Target:
    """A server behind nginx: where wrk sends, the processes whose CPU counts, its database."""

    def __init__(self, name: str, url: str, roots: list[int], database: Path, stop, runner=None):
        self.name, self.url, self.database, self.stop = name, url, database, stop
        self.roots = roots  # these processes and all they started count
        self.runner = runner  # but for run_proxy.py, which only watches its children
        self.posts = 0  # POSTs answered, against the rows stored

    def cpu_ns(self) -> dict[str, int]:
        """Return the CPU time used so far by nginx and by the app's processes."""
        used = {"nginx": 0, "app": 0}
        for root in self.roots:
            for pid in [root, *servers.descendants(root)]:
                if pid == self.runner:
                    continue
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                    used["nginx" if name == "nginx" else "app"] += cpu_ns(pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # it ended while we looked
        return used


def shipped(folder: Path, instances: int, name: str = SHIPPED) -> Target:
    """Start `make run-proxy`'s runner with its instances on an SQLite file of its own."""
    database = folder / "form.sqlite3"
    url = migrated(f"sqlite:///{database}")
    environ = {"WEB_CONCURRENCY": str(instances), "DATABASE_URL": url}
    proxy = servers.start_proxy(folder, environ=environ)
    runner = proxy.server.process.pid
    return Target(name, proxy.url, [runner], database, proxy.server.stop, runner)


def on_gunicorn(folder: Path, name: str, workers: int) -> Target:
    """Start a callable on GUNICORN, then nginx with the same site in front of it."""
    database = folder / "form.sqlite3"
    if name == FLASK:
        command = ["flask", "--app", "bench.flask_form", "init-db"]
        environ = {"FLASK_DATABASE": str(database)}
        subprocess.run(
            [BIN / command[0], *command[1:]],
            env={**os.environ, **environ},
            check=True,
            capture_output=True,
        )
        callable_ = "bench.flask_form:app"
    else:
        environ = {"DATABASE_URL": migrated(f"sqlite:///{database}")}
        callable_ = "app:application"
    port = servers.free_port()
    command = f"{GUNICORN} --workers {workers} --bind 127.0.0.1:{port} {callable_}"
    log = folder / "gunicorn.log"
    app = servers.start_server(command, log, environ={**environ, "PORT": str(port)})
    run_dir = folder / "run"
    run_dir.mkdir()
    nginx_port = servers.free_port()
    config = run_proxy.write_config(run_dir, nginx_port, [f"127.0.0.1:{port}"])
    nginx = servers.Server(run_proxy.start_nginx(config), "127.0.0.1", nginx_port)
    if not servers.wait_until_listening(nginx.process, nginx_port, timeout=15):
        app.stop()
        sys.exit(f"nginx did not listen on {nginx_port}")

    def stop():
        nginx.stop()
        app.stop()

    url = f"https://127.0.0.1:{nginx_port}"
    return Target(name, url, [app.process.pid, nginx.process.pid], database, stop)


def migrated(url: str) -> str:
    """Bring a database's schema up to date, as a deploy does before the instances start."""
    database = store.connect(url, threads=1)
    try:
        database.migrate()
    finally:
        database.close()
    return url


def wrk(target: Target, method: str, seconds: int) -> dict:
    """Load a target through nginx with wrk; return its results and the CPU per request (µs)."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s"]
    command += ["-s", str(WRK_SCRIPT), target.url + "/"]
    env = {**os.environ, **({"BENCH_POST": form_body()} if method == "POST" else {})}
    before = target.cpu_ns()
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    after = target.cpu_ns()
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    for part in after:
        result[f"{part}_us"] = (after[part] - before[part]) / 1000 / max(result["requests"], 1)
    target.posts += result["requests"] if method == "POST" else 0
    return result


def measure(instances: int, also: list[int], rounds: int, seconds: int) -> tuple[dict, dict]:
    """Return the medians by (row, method) and each row's (rows stored, POSTs answered)."""
    with tempfile.TemporaryDirectory(prefix="form-bench-proxy-") as folder:
        targets: list[Target] = []
        try:
            starts = [
                lambda f: shipped(f, instances),
                lambda f: on_gunicorn(f, FLASK, instances),
                lambda f: on_gunicorn(f, CONTROL, instances),
                *[
                    lambda f, count=count: shipped(
                        f, count, f"{SHIPPED}, {count} instance{'s' * (count > 1)}"
                    )
                    for count in also
                ],
            ]
            for start in starts:
                own = Path(folder) / f"{len(targets)}"  # no spaces: nginx.conf's paths
                own.mkdir()
                targets.append(start(own))
            cells = [(target, method) for target in targets for method in METHODS]
            for target, method in cells:  # warm-up: connections, caches, the first renders
                wrk(target, method, WARM_UP_SECONDS)
            runs = {cell: [] for cell in cells}
            for _ in range(rounds):
                for target, method in cells:
                    runs[target, method].append(wrk(target, method, seconds))
        finally:
            for target in targets:
                target.stop()
        stored = {target.name: (count_rows(target.database), target.posts) for target in targets}
    medians = {
        (target.name, method): {
            key: statistics.median(run[key] for run in results)
            for key in ("rps", "p99_ms", "app_us", "nginx_us")
        }
        | {"errors": sum(run["status_errors"] + run["socket_errors"] for run in results)}
        for (target, method), results in runs.items()
    }
    return medians, stored


def report(args, measured_on: str, results: dict, stored: dict) -> str:
    """Return the report: how it was run, the rows, the ratios against the targets."""
    command = " ".join(["python bench/proxy.py", *sys.argv[1:]])
    lines = [f"Measured {measured_on}; load average {load_average()} at the end. `{command}`."]
    lines.append("")
    lines.append(
        f"Through the same nginx site (HTTPS, keep-alive), {CONNECTIONS} connections, "
        f"{args.rounds} interleaved rounds of {args.seconds} s after a {WARM_UP_SECONDS} s "
        f"warm-up each, medians; each POST stored as a new row in SQLite. {SHIPPED}: "
        f"{args.instances} Waitress instances of 4 threads; {FLASK} and {CONTROL}: "
        f"`gunicorn --workers {args.instances} --worker-class gthread --threads 4`."
    )
    lines.append("")
    header = ["server", "method", "req/s", "p99 ms", "app CPU µs/req", "nginx CPU µs/req"]
    header += ["4xx, 5xx + socket errors"]
    body = [
        [name, method, f"{r['rps']:.0f}", f"{r['p99_ms']:.1f}", f"{r['app_us']:.0f}"]
        + [f"{r['nginx_us']:.0f}", r["errors"]]
        for (name, method), r in results.items()
    ]
    lines += table(body, header)
    lines.append("")
    body = []
    for (other, method), least in TARGETS.items():
        ratio = results[SHIPPED, method]["rps"] / results[other, method]["rps"]
        cpu = total_cpu(results[other, method]) / total_cpu(results[SHIPPED, method])
        body.append([f"{SHIPPED} ÷ {other}", method, f"{ratio:.2f}", f"{cpu:.2f}"])
        body[-1] += [f">= {least}", "met" if ratio >= least else "MISSED"]
    header = ["ratio", "method", "req/s", "app + nginx CPU/req, other's ÷ shipped's"]
    header += ["target", "verdict"]
    lines += table(body, header)
    lines.append("")
    kept = [
        f"{name} {rows} rows for {posts} POSTs answered" for name, (rows, posts) in stored.items()
    ]
    lines.append(f"Stored: {'; '.join(kept)}.")
    return "\n".join(lines) + "\n"


def total_cpu(result: dict) -> float:
    return result["app_us"] + result["nginx_us"]


def main():
    """Measure, print the report (and write it into --output), fail on a lost row or an error."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=os.cpu_count(), help="N")
    parser.add_argument("--also", type=int, nargs="*", help="more shipped rows (default: 1, 2N)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, medians taken")
    parser.add_argument("--output", type=Path, help="the Markdown file to write the report into")
    args = parser.parse_args()
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode:
        sys.exit("wrk is not installed: run `apt-get install -y wrk`")
    run_proxy.program("nginx")  # or stop, saying how to install it
    if args.also is None:
        args.also = sorted({1, 2 * args.instances} - {args.instances})
    measured_on = machine()
    results, stored = measure(args.instances, args.also, args.rounds, args.seconds)
    text = report(args, measured_on, results, stored)
    print(text, end="")
    if args.output:
        record(args.output, text.removesuffix("\n"), MARK_START, MARK_END)
    if any(kept < posts for kept, posts in stored.values()):
        sys.exit("fewer rows stored than POSTs answered: see above")
    if any(result["errors"] for result in results.values()):
        sys.exit("4xx, 5xx or socket errors: see above")


if __name__ == "__main__":
    main()
