"""Helpers for the tests: starting real servers, reading pages."""

import http.client
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import webtest.forms
from bottle import FormsDict

import app
from deploy import servers
from deploy.servers import ROOT, Proxy, Server, procfile_web_command

SERVER_COMMANDS = {
    "procfile": procfile_web_command(),
    "python app.py": f"{shlex.quote(sys.executable)} app.py",
}


def same_origin(testapp) -> str:
    """Return the Origin a browser would send from the app's own page."""
    return "http://" + testapp.get("/").request.environ["HTTP_HOST"]


URLENCODED = "application/x-www-form-urlencoded"


def multipart(*parts: bytes, boundary: str = "zz") -> bytes:
    """Return a multipart body of the given parts (each its headers, a blank line, its value)."""
    mark = boundary.encode()
    return b"".join(b"--%s\r\n%s\r\n" % (mark, part) for part in parts) + b"--%s--\r\n" % mark


def field(name: str, value: bytes, headers: bytes = b"") -> bytes:
    """Return one multipart part for a form field (a `"` in its name %-encoded, as browsers do)."""
    quoted = name.encode("utf-8", "surrogatepass").replace(b'"', b"%22")
    return b'Content-Disposition: form-data; name="%s"\r\n%s\r\n%s' % (quoted, headers, value)


def access_lines(output: str) -> list[list[str]]:
    """Return the access-log lines in a server's output, as their fields: client, scheme,
    method, path, status, duration."""
    prefix = "INFO:access:"
    return [
        line.removeprefix(prefix).split() for line in output.splitlines() if line.startswith(prefix)
    ]


def result_line(res) -> str:
    """Return the result paragraph's text (the saved page's), whitespace folded."""
    return " ".join(res.html.find(id="result").get_text().split())


# Where the answer to a valid submission sends the browser: /saved/ and the form's token, 22
# URL-safe characters (128 random bits). Written out, not read from app.TOKEN, on purpose.
SAVED = re.compile(r"/saved/[A-Za-z0-9_-]{22}")


def assert_saved(status: int, location: str | None) -> str:
    """Check an answer to a valid submission, from any client: a 303 See Other to
    /saved/<token>. Return its Location."""
    assert status == 303, status
    assert location is not None and SAVED.fullmatch(location), location
    return location


def saved_page(res):
    """Check WebTest's answer to a valid submission (a 303 See Other to /saved/<token>, with no
    body) and follow it: return the page that shows what was saved."""
    location = urlsplit(res.headers.get("Location", ""))
    if location.netloc:  # made absolute by WebTest's client for a server's URL (WSGIProxy2)
        assert location.netloc == res.request.host, location
    assert_saved(res.status_int, location._replace(scheme="", netloc="").geturl())
    assert res.body == b""
    return res.follow()


def example(**changes) -> dict[str, list[str]]:
    """Return the app's example submission, field -> values, with the given fields changed."""
    return {**app.EXAMPLE, **{name: list(values) for name, values in changes.items()}}


def submitted(**changes) -> FormsDict:
    """Return the example submission, changed as given, as Bottle hands it to validate()."""
    form = FormsDict()
    for name, values in example(**changes).items():
        for value in values:
            form.append(name, value)
    return form


def encoded(**changes) -> bytes:
    """Return the example submission, with the given fields changed, as a urlencoded body."""
    return urlencode(example(**changes), doseq=True).encode()


def fill(form: webtest.forms.Form, **changes) -> webtest.forms.Form:
    """Fill a page's form as a person would with the example submission, changed as given."""
    for name, values in example(**changes).items():
        for field in form.fields[name]:
            if isinstance(field, webtest.forms.Checkbox):
                field.checked = field._value in values  # _value: the box's value attribute
            else:
                field.value = values[0]
    return form


# The invalid submission the validation-error state shows: an age that is not a number.
INVALID = {"age": ["thirty"], "hobbies": [next(iter(app.HOBBIES))]}

# The four states of the page (tests/browser/pages.py reaches them in a browser), each as a
# request: method, path, form, and the status it is answered with. The result is the saved
# page, which the valid submission's 303 leads to: visit() follows it.
PAGES = {
    "empty-form": ("GET", "/", {}, 200),
    "result": ("POST", "/", example(), 303),
    "validation-error": ("POST", "/", example(**INVALID), 422),
    "not-found": ("GET", "/no-such-page", {}, 404),
}


def visit(testapp, state: str):
    """Return the page in one of PAGES' states, as `testapp` (a webtest.TestApp, of the app or
    of a server's URL) gets it: for the result, the saved page the 303 leads to."""
    method, path, form, status = PAGES[state]
    if method == "POST":
        res = testapp.post(path, form, status=status)
        return saved_page(res) if status == 303 else res
    return testapp.get(path, status=status)


def hobbies_shown(hobbies: list[str]) -> str:
    """Return the result's hobbies part for these chosen values, as the page must show it."""
    labels = [label for value, label in app.HOBBIES.items() if value in hobbies]
    return "Hobbies: " + (", ".join(labels) or "No Hobbies?")


def cleaned(**changes) -> dict:
    """Return the example submission, changed as given, as validate() cleans it: what the app
    saves. The changes must leave it valid."""
    values, errors = app.validate(submitted(**changes))
    assert errors == {}, errors
    return values


# Tools from Debian that some tests need; .ci/run installs them.
INSTALL_HINTS = {
    "chromium": "install Debian's browser with `apt-get install chromium`",
    "java": "install Java for the Nu HTML validator with `apt-get install default-jre-headless`",
    "wrk": "install the HTTP load generator with `apt-get install wrk`",
    "nginx": "install the reverse proxy with `apt-get install nginx-light`",
    "openssl": "install the TLS toolkit with `apt-get install openssl`",
    "systemd-analyze": "install systemd's unit checker with `apt-get install systemd`",
    "ip": "install the network tools with `apt-get install iproute2`",
    "mount": "install the file system tools with `apt-get install mount`",
}


def in_ci() -> bool:
    """Tell whether this run is CI's, where every test must run."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def skip_unless_ci(reason: str) -> None:
    """Skip the test, but fail it in CI, where nothing may skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: these checks must run, not skip)", pytrace=False)
    pytest.skip(reason)


def require(program: str) -> str:
    """Return a program's path; without it skip, saying what to install (fail in CI). Every
    test and fixture that runs a program from INSTALL_HINTS asks for it here first."""
    # Debian keeps nginx in /usr/sbin, which is not on a normal user's PATH.
    path = shutil.which(program, path=os.pathsep.join([os.environ["PATH"], "/usr/sbin", "/sbin"]))
    if path is None:
        skip_unless_ci(f"{program} not found: {INSTALL_HINTS[program]}")
    return path


# The package a skip's reason says to install (each of INSTALL_HINTS names one).
WANTED_PACKAGE = re.compile(r"not found: .*`apt-get install ([^`\s]+)`")


def skip_summary(reasons: list[str]) -> str | None:
    """Return one line for a run's skipped tests, from their reasons: how many, and the one
    command that installs what they need (the package most of them need first)."""
    wanted = Counter(found[1] for found in map(WANTED_PACKAGE.search, reasons) if found)
    packages = sorted(wanted, key=lambda name: (-wanted[name], name))
    others = len(reasons) - wanted.total()
    parts = []
    if wanted:
        install = "apt-get install -y " + " ".join(packages)
        parts.append(f"{tests(wanted.total())} skipped: to run them, {install}")
    if others:
        parts.append(f"{tests(others)} skipped for other reasons")
    return "; ".join(parts) + " (`pytest -rs` lists why)" if parts else None


def tests(count: int) -> str:
    """Return "1 test" or "N tests"."""
    return f"{count} test" if count == 1 else f"{count} tests"


def raise_open_file_limit(needed: int = 4096) -> None:
    """Let this process, and the servers it starts, which inherit the limit, open `needed` files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


SITE = ROOT / "deploy" / "form-app.conf"  # the shipped nginx site


@dataclass
class Answer:
    """One HTTP response as the client received it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def answers(data: bytes) -> list[Answer]:
    """Split what a server sent on one connection into its responses, interim ones included."""
    found = []
    while data:
        head, blank, data = data.partition(b"\r\n\r\n")
        assert blank, f"an unfinished response: {head[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        answer = Answer(int(status_line.split(" ")[1]), headers, b"")
        assert answer.values("Transfer-Encoding") == []
        length = int((answer.values("Content-Length") or ["0"])[0])
        answer.body, data = data[:length], data[length:]
        found.append(answer)
    return found


def request(proxy, method: str, path: str, body: bytes | None = None, headers=None, timeout=5):
    """Send one request to nginx over HTTPS; return its Answer."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", proxy.port, timeout=timeout, context=proxy.tls()
    )
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def app_log(proxy, path: str, timeout: float = 2) -> list[list[str]]:
    """Return the app's access-log lines for a path, as fields; wait a little for one to come."""
    deadline = time.monotonic() + timeout
    while True:
        found = [fields for fields in access_lines(proxy.server.output()) if fields[3] == path]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def exchange(target: "Server | Proxy", data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send raw bytes to a server (or over TLS to the proxy) from a loopback address; return all
    it answers until it closes the connection. A TimeoutError: it kept the connection open."""
    if isinstance(target, Proxy):
        sock = target.connect(source)
    else:
        sock = socket.create_connection((target.host, target.port), 5, (source, 0))
    with sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def alive(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while we read
        return False


def start_proxy(
    folder: Path, environ: dict | None = None, command: str = servers.PROXY_COMMAND
) -> Proxy:
    """Run deploy/run_proxy.py as `make run-proxy` does, its files in `folder`; wait for it.
    Without nginx or openssl, skip (fail in CI)."""
    require("nginx")
    require("openssl")
    return servers.start_proxy(folder, environ, command)


def stop_unread(process: subprocess.Popen, read_end: int) -> int:
    """Stop a process whose output is a pipe nobody has read: read it at last, so that the
    process can write what it queued and exit; return its exit status."""
    reader = threading.Thread(
        target=lambda: [None for _ in iter(lambda: os.read(read_end, 65536), b"")]
    )
    reader.start()
    process.terminate()
    status = process.wait(30)
    reader.join(10)
    os.close(read_end)
    return status


def run_store(url: str, *args: str, **environ: str) -> subprocess.CompletedProcess:
    """Run `python -m store ARGS` as an operator does, on the database at url; its output as
    text. environ is laid over this process's environment."""
    env = {**os.environ, "DATABASE_URL": url, **environ}
    command = [sys.executable, "-m", "store", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def stored(database, check: bool = True) -> list[dict]:
    """Return the stored submissions, in the order saved: each one's columns, and its hobbies
    (sorted) under "hobbies". check=False reads a schema older than this code's too."""
    with database.transaction(check=check) as cursor:
        cursor.execute("SELECT * FROM submission ORDER BY id")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.execute("SELECT submission_id, hobby FROM submission_hobby")
        hobbies = cursor.fetchall()
    for row in rows:
        row["hobbies"] = sorted(hobby for owner, hobby in hobbies if owner == row["id"])
    return rows
