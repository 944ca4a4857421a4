"""What the shipped proxy costs: the same requests to the app straight and through nginx.

`make bench-proxy` starts deploy/run_proxy.py as `make run-proxy` does, pinned to one CPU (the
app, nginx and its workers), and loads it with wrk on the other: GET / and POST / of the
benchmark's form, straight to Waitress over HTTP and through nginx over HTTPS with keep-alive,
in interleaved rounds, and prints the medians as a Markdown table.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/, first: there `bench` would be bench/bench.py, not the package.
sys.path[:1] = [str(ROOT), str(ROOT / "tests")]
from helpers import PROXY_COMMAND, start_proxy  # noqa: E402

from bench.bench import METHODS, SERVER_CPU, check_tools, machine, table, wrk  # noqa: E402


def measure(rounds: int, seconds: int) -> dict:
    """Return wrk's median results by (path, method), path being "straight" or "proxy"."""
    with tempfile.TemporaryDirectory() as folder:
        proxy = start_proxy(Path(folder), f"taskset -c {SERVER_CPU} {PROXY_COMMAND}")
        try:
            # wrk() reads only url and the pid it counts CPU of; nginx's CPU is not counted.
            paths = {
                "straight": SimpleNamespace(url=f"http://127.0.0.1:{proxy.app_port}"),
                "proxy": SimpleNamespace(url=f"https://127.0.0.1:{proxy.port}"),
            }
            for target in paths.values():
                target.process = proxy.server.process
            runs = {(path, method): [] for path in paths for method in METHODS}
            for path, method in runs:  # warm-up: connections, caches, the app's first renders
                wrk(paths[path], method, 16, 1)
            for _ in range(rounds):
                for path, method in runs:
                    runs[path, method].append(wrk(paths[path], method, 16, seconds))
        finally:
            proxy.server.stop()
    return {
        key: {
            "rps": statistics.median(run["rps"] for run in results),
            "p99_ms": statistics.median(run["p99_ms"] for run in results),
            "non2xx": sum(run["non2xx"] + run["socket_errors"] for run in results),
        }
        for key, results in runs.items()
    }


def main():
    """Measure, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians taken")
    args = parser.parse_args()
    check_tools()
    results = measure(args.rounds, args.seconds)
    rows = []
    for (path, method), result in results.items():
        straight = results["straight", method]
        rows.append([path, method, f"{result['rps']:.0f}", f"{result['p99_ms']:.2f}"])
        rows[-1] += [result["non2xx"], f"{result['rps'] / straight['rps']:.2f}"]
    header = ["path", "method", "req/s", "p99 ms", "non-2xx + socket errors", "req/s ÷ straight"]
    print(f"Measured {machine()}.\n")
    print(f"`{' '.join(sys.argv[1:]) or 'defaults'}`: {args.rounds} rounds of {args.seconds}s")
    print("at 16 connections, medians.\n")
    print("\n".join(table(rows, header)))


if __name__ == "__main__":
    main()
