"""Time application(environ, start_response) in-process: the app's own CPU cost per request."""

import contextlib
import functools
import io
import os
import sys
import time
import timeit
from pathlib import Path
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from floor import FORM  # noqa: E402

import app  # noqa: E402


def environ(method: str) -> dict:
    """Return a WSGI environ for the benchmark's GET / or POST / (as wrk.lua sends them)."""
    env = {"REQUEST_METHOD": method, "wsgi.input": io.BytesIO(FORM)}
    if method == "POST":
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        env["CONTENT_LENGTH"] = str(len(FORM))
        env["HTTP_SEC_FETCH_SITE"] = "same-origin"
        env["HTTP_ORIGIN"] = "http://127.0.0.1"
    setup_testing_defaults(env)
    return env


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
