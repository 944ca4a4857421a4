"""Time application(environ, start_response) in-process: the app's own CPU cost per request."""

import contextlib
import functools
import os
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from floor import environ  # noqa: E402

import app  # noqa: E402


def request(method: str):
    """Make one request to the app and read the whole page."""
    b"".join(app.application(environ(method), lambda status, headers, exc_info=None: None))


def main():
    """Print the app's CPU time per request, best of five, for GET and POST."""
    number = 5000
    for method in ("GET", "POST"):
        call = functools.partial(request, method)
        # The access log goes to /dev/null: the cost stays, the noise goes.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            call()
            # Thread CPU time, not wall time: the machine is shared, and other load inflates walls.
            best = min(timeit.repeat(call, timer=time.thread_time, number=number, repeat=5))
        print(f"{method} {best / number * 1e6:.1f} µs of CPU per request")


if __name__ == "__main__":
    main()
