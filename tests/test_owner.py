"""The owner's pages are the owner's alone (owner.py): every refusal, on /results and
/results.csv as the app routes them, the hash and `python -m owner` that makes it.

In-process (WebTest) for what the app decides; on a real Waitress where the client's address and
scheme come from a trusted proxy's headers, which only the server reads.
"""

import base64
import http.client
import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import SERVER_COMMANDS, Answer, access_lines

import app
import guards
import owner
from deploy.servers import ROOT, start_server

PATHS = ["/results", "/results.csv"]
# Not ASCII, with a colon and a space: as a browser sends it (UTF-8, RFC 7617).
PASSWORD = "correct horse: ünïcode"  # the tests' own  # nosec B105
OUTSIDE = "203.0.113.5"  # an address on the internet (TEST-NET-3)
CHALLENGE = 'Basic realm="Results", charset="UTF-8"'


@pytest.fixture(scope="module")
def stored_hash() -> str:
    """The hash of PASSWORD, made once (each takes some 40 ms)."""
    return owner.hash_password(PASSWORD)


@pytest.fixture
def password_set(monkeypatch, stored_hash):
    """The owner's password set, as the environment sets it; the user name left at its default."""
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", stored_hash)
    monkeypatch.delenv("RESULTS_USER", raising=False)
    return stored_hash


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    """A throttle of the test's own, on a clock it moves: no test waits, none sees another's."""
    clock = Clock()
    monkeypatch.setattr(owner, "THROTTLE", owner.Throttle(clock))
    return clock


@pytest.fixture(autouse=True)
def remembered(monkeypatch) -> owner.Remembered:
    """No credentials remembered from another test: each test's first right ones are checked."""
    fresh = owner.Remembered()
    monkeypatch.setattr(owner, "REMEMBERED", fresh)
    return fresh


def basic(user: str, password: str) -> str:
    """Return an Authorization header's Basic credentials, as a browser sends them."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


RIGHT = basic(owner.DEFAULT_USER, PASSWORD)


def visit(testapp, path, status, authorization=None, address="127.0.0.1", scheme="http", **kw):
    """Ask for an owner's page from a client address over a scheme, as Waitress would pass it."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    environ = {"wsgi.url_scheme": scheme}
    if address is not None:
        environ["REMOTE_ADDR"] = address
    return testapp.request(
        path,
        headers={**headers, **kw.pop("headers", {})},
        environ=environ,
        status=status,
        **kw,
    )


def assert_private(res):
    """Check an answer is never stored by a browser or a proxy, never indexed, and has the
    app's security headers, as every answer does."""
    assert res.headers.getall("Cache-Control") == ["no-store"]
    assert res.headers.getall("X-Robots-Tag") == ["noindex"]
    assert dict(guards.SECURITY_HEADERS).items() <= dict(res.headers).items()


def said(res) -> str:
    """Return what an error page says (its first paragraph), white space folded."""
    return " ".join(res.html.main.p.get_text().split())


# Who is let in.


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("address", "scheme"),
    [
        ("127.0.0.1", "http"),
        ("127.0.0.2", "http"),
        ("::1", "http"),
        ("::ffff:127.0.0.1", "http"),  # IPv4's loopback, as a dual-stack socket gives it
        (OUTSIDE, "https"),
    ],
)
def test_the_owner_is_let_in_from_loopback_or_over_https(
    testapp, password_set, path, address, scheme
):
    res = visit(testapp, path, 200, RIGHT, address, scheme)
    assert_private(res)


@pytest.mark.parametrize("path", PATHS)
def test_a_head_request_is_let_in_too(testapp, password_set, path):
    assert_private(visit(testapp, path, 200, RIGHT, method="HEAD"))


def test_another_user_name_is_read_from_the_environment(testapp, password_set, monkeypatch):
    monkeypatch.setenv("RESULTS_USER", "ana")
    visit(testapp, "/results", 200, basic("ana", PASSWORD))
    visit(testapp, "/results", 401, RIGHT)  # "owner" is no longer the user


# The refusals, each with its status, its page and the private headers.


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("unset", ["missing", "empty"])
def test_without_a_password_hash_the_pages_do_not_exist(testapp, monkeypatch, path, unset):
    if unset == "missing":
        monkeypatch.delenv("RESULTS_PASSWORD_HASH", raising=False)
    else:
        monkeypatch.setenv("RESULTS_PASSWORD_HASH", "")
    res = visit(testapp, path, 404, RIGHT)
    assert said(res) == app.ERROR_MESSAGES[404]  # the same page as any address that has none
    assert "WWW-Authenticate" not in res.headers
    assert_private(res)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("address", [OUTSIDE, "10.0.0.7", "2001:db8::5", "", None])
def test_plain_http_from_another_machine_is_refused_before_credentials(
    testapp, password_set, log, path, address
):
    res = visit(testapp, path, 403, RIGHT, address)
    assert said(res) == owner.NOT_HTTPS
    assert "WWW-Authenticate" not in res.headers  # never asked for over plain HTTP
    assert_private(res)
    assert [line for line in log() if "owner" in line] == []


def test_forwarded_headers_are_not_believed_from_the_request_itself(testapp, password_set):
    # Waitress turns a trusted proxy's headers into REMOTE_ADDR and the scheme, and drops
    # anyone else's; Bottle's request.remote_addr and urlparts would believe them.
    forged = {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"}
    visit(testapp, "/results", 403, RIGHT, OUTSIDE, headers=forged)


MALFORMED = {
    "no credentials after the scheme": "Basic",
    "another scheme": "Bearer " + base64.b64encode(b"owner:x").decode(),
    "not base64": "Basic !!!!",
    "base64 without its padding": "Basic " + base64.b64encode(b"owner:xy").decode().rstrip("="),
    "no colon": "Basic " + base64.b64encode(b"owner").decode(),
    "not UTF-8": "Basic " + base64.b64encode(b"owner:\xff").decode(),
    "a control character": "Basic " + base64.b64encode(b"owner:a\x00b").decode(),
    "a password in Latin-1": "Basic "
    + base64.b64encode(f"owner:{PASSWORD}".encode("latin-1")).decode(),
}
WRONG = {
    "wrong password": basic(owner.DEFAULT_USER, PASSWORD + "!"),
    "wrong user": basic("admin", PASSWORD),
    "user in another case": basic(owner.DEFAULT_USER.upper(), PASSWORD),
    "empty password": basic(owner.DEFAULT_USER, ""),
}


def test_a_user_name_not_in_utf_8_in_the_environment_is_refused_not_an_error(
    testapp, password_set, monkeypatch
):
    # Set from Latin-1 bytes, Python reads it with a surrogate, which UTF-8 cannot encode: no
    # credentials can match it (RFC 7617's are UTF-8), and the page must still answer.
    monkeypatch.setenv("RESULTS_USER", os.fsdecode("ownér".encode("latin-1")))
    visit(testapp, "/results", 401, basic("ownér", PASSWORD))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "authorization",
    [None, *MALFORMED.values(), *WRONG.values()],
    ids=["none", *MALFORMED, *WRONG],
)
def test_missing_malformed_or_wrong_credentials_get_401_and_the_challenge(
    testapp, password_set, path, authorization
):
    res = visit(testapp, path, 401, authorization)
    assert res.headers.getall("WWW-Authenticate") == [CHALLENGE]
    assert said(res) == owner.SIGN_IN
    assert_private(res)


@pytest.mark.parametrize("case", [*MALFORMED, *WRONG])
def test_a_failure_is_logged_with_the_address_and_nothing_that_was_typed(
    testapp, password_set, log, case
):
    visit(testapp, "/results", 401, {**MALFORMED, **WRONG}[case], OUTSIDE, "https")
    [line] = [line for line in log() if line.startswith("WARNING:")]
    kind = "unreadable" if case in MALFORMED else "wrong"
    assert line == f"WARNING:app:owner: {kind} credentials for the results from {OUTSIDE}"


def test_missing_credentials_are_neither_logged_nor_counted(testapp, password_set, log):
    # A browser's first request has none: it asks the person after the 401.
    for _ in range(owner.BURST * 3):
        visit(testapp, "/results", 401)
    assert [line for line in log() if line.startswith("WARNING:")] == []
    visit(testapp, "/results", 200, RIGHT)


# Guessing slowed, per client.


def fail(testapp, times: int, address: str = OUTSIDE):
    """Send wrong passwords from an address over HTTPS."""
    for _ in range(times):
        visit(testapp, "/results", 401, WRONG["wrong password"], address, "https")


@pytest.mark.parametrize("path", PATHS)
def test_after_the_burst_even_the_right_password_gets_429_until_the_wait_is_over(
    testapp, password_set, clock, monkeypatch, path
):
    fail(testapp, owner.BURST)
    tried = []
    with monkeypatch.context() as patch:
        patch.setattr(owner, "verify", lambda *args: tried.append(args))
        res = visit(testapp, path, 429, RIGHT, OUTSIDE, "https")
    assert tried == []  # a throttled guess is never tried
    assert res.headers["Retry-After"] == str(owner.INTERVAL)
    assert said(res) == (
        f"Too many wrong passwords came from your address. Please try again in "
        f"{owner.INTERVAL} seconds."
    )
    assert_private(res)
    clock.now += owner.INTERVAL - 1
    assert visit(testapp, path, 429, RIGHT, OUTSIDE, "https").headers["Retry-After"] == "1"
    clock.now += 1
    visit(testapp, path, 200, RIGHT, OUTSIDE, "https")


@pytest.mark.parametrize(
    ("seconds", "said_wait"),
    [(owner.INTERVAL, f"{owner.INTERVAL} seconds"), (2, "2 seconds"), (1, "1 second")],
)
def test_the_wait_is_said_in_seconds(testapp, password_set, clock, seconds, said_wait):
    fail(testapp, owner.BURST)
    clock.now += owner.INTERVAL - seconds
    res = visit(testapp, "/results", 429, RIGHT, OUTSIDE, "https")
    assert res.headers["Retry-After"] == str(seconds)
    assert said(res).endswith(f"Please try again in {said_wait}.")


@pytest.mark.parametrize("kind", [MALFORMED, WRONG])
def test_unreadable_credentials_count_as_wrong_ones(testapp, password_set, kind):
    for authorization in (list(kind.values()) * owner.BURST)[: owner.BURST]:
        visit(testapp, "/results", 401, authorization, OUTSIDE, "https")
    visit(testapp, "/results", 429, RIGHT, OUTSIDE, "https")


def test_after_the_burst_one_try_every_interval(testapp, password_set, clock):
    fail(testapp, owner.BURST)
    for _ in range(3):
        clock.now += owner.INTERVAL
        fail(testapp, 1)
        visit(testapp, "/results", 429, RIGHT, OUTSIDE, "https")
    clock.now += owner.BURST * owner.INTERVAL  # a whole burst again
    fail(testapp, owner.BURST)
    visit(testapp, "/results", 429, RIGHT, OUTSIDE, "https")


def test_one_clients_failures_do_not_slow_another(testapp, password_set):
    fail(testapp, owner.BURST)
    visit(testapp, "/results", 200, RIGHT, "198.51.100.7", "https")
    visit(testapp, "/results", 200, RIGHT, "127.0.0.1")


def test_the_addresses_of_one_ipv6_network_count_as_one_client(testapp, password_set):
    for host in range(owner.BURST):
        fail(testapp, 1, f"2001:db8:1:2::{host + 1}")
    visit(testapp, "/results", 429, RIGHT, "2001:db8:1:2:ffff::9", "https")
    visit(testapp, "/results", 200, RIGHT, "2001:db8:1:3::1", "https")  # another /64


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("2001:db8:a:b:c:d:e:f", "2001:db8:a:b::/64"),
        ("not an address", "not an address"),
    ],
)
def test_failures_are_counted_by_ipv4_address_and_ipv6_network(address, key):
    assert owner.client(address) == key


def test_a_full_table_shares_one_count_and_keeps_the_known_clients_own(monkeypatch, clock):
    monkeypatch.setattr(owner, "MAX_CLIENTS", 3)
    throttle = owner.THROTTLE
    for known in ["a", "b", "c"]:
        throttle.fail(known)
    for _ in range(owner.BURST):  # the newcomers share one bucket: none gets a burst of its own
        throttle.fail("attacker")
    assert throttle.wait("another attacker") == owner.INTERVAL
    assert throttle.wait("a") == 0  # a known client still has its own
    # A client is forgotten once its bucket is full again: room for a newcomer of its own.
    clock.now += owner.BURST * owner.INTERVAL
    assert throttle.wait("newcomer") == 0
    assert len(throttle.full_at) == 0


def test_a_client_is_forgotten_once_its_failures_have_expired(clock):
    throttle = owner.THROTTLE
    throttle.fail("a")
    clock.now += owner.INTERVAL - 1
    throttle.fail("b")
    clock.now += 1
    throttle.fail("c")  # each failure forgets the clients whose bucket is full again
    assert list(throttle.full_at) == ["b", "c"]


def test_while_the_server_checks_another_password_a_try_gets_503_at_once_and_counts(
    testapp, password_set, monkeypatch
):
    checking = threading.BoundedSemaphore(1)
    monkeypatch.setattr(owner, "CHECKING", checking)
    held, answered = threading.Event(), threading.Event()

    def check_another():  # another request's scrypt check, which lasts until these are answered
        with checking:
            held.set()
            answered.wait(30)  # against a hang only

    other = threading.Thread(target=check_another)
    other.start()
    try:
        assert held.wait(30)
        busy = [
            visit(testapp, "/results", 503, WRONG["wrong password"], OUTSIDE, "https")
            for _ in range(owner.BURST)
        ]
        # Each try counted, as a wrong one is: a flood of them is slowed, not let through.
        visit(testapp, "/results", 429, WRONG["wrong password"], OUTSIDE, "https")
        assert other.is_alive()  # all answered while the other check held the slot: none waited
    finally:
        answered.set()
        other.join()
    for res in busy:
        assert res.headers["Retry-After"] == "1"
        assert said(res) == owner.BUSY
        assert_private(res)
    visit(testapp, "/results", 200, RIGHT, "198.51.100.7", "https")  # the slot is free again


def test_user_and_password_are_compared_in_constant_time_whatever_the_user(
    testapp, password_set, monkeypatch
):
    compared, hashed = [], []
    real_compare, real_scrypt = owner.hmac.compare_digest, owner.scrypt
    monkeypatch.setattr(
        owner.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real_compare(a, b)
    )
    monkeypatch.setattr(owner, "scrypt", lambda *args: hashed.append(args) or real_scrypt(*args))
    visit(testapp, "/results", 401, WRONG["wrong user"], OUTSIDE, "https")
    assert compared[0] == (b"admin", owner.DEFAULT_USER.encode())
    assert len(compared) == 2 and len(hashed) == 1  # the password's hash checked all the same


# The Authorization header, as RFC 7617 reads it.


@pytest.mark.parametrize(
    ("header", "found"),
    [
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),  # RFC 7617's
        ("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),  # any case
        ("Basic dGVzdDoxMjPCow==", ("test", "123\u00a3")),  # RFC 7617's UTF-8 example
        (basic("owner", "a:b:c"), ("owner", "a:b:c")),  # split at the first colon
        (basic("", "x"), ("", "x")),
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ", None),  # its padding cut off
        ("Basic b3duZXI6eHk==", None),  # "owner:xy" with one = too many
        ("Basic QWxhZGRpbjpvcGVu IHNlc2FtZQ==", None),
        ("Basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ== x", None),
        ("BasicQWxhZGRpbjpvcGVuIHNlc2FtZQ==", None),
    ],
)
def test_basic_credentials_are_read_as_rfc_7617_says(header, found):
    assert owner.credentials(header) == found


# The stored hash.


def test_a_hash_verifies_its_password_only(stored_hash):
    assert re.fullmatch(r"scrypt:16384:8:1:[0-9a-f]{32}:[0-9a-f]{64}", stored_hash)
    assert owner.verify(PASSWORD, stored_hash)
    assert not owner.verify(PASSWORD + " ", stored_hash)
    assert not owner.verify("", stored_hash)
    assert owner.hash_password(PASSWORD) != stored_hash  # a new salt each time


def test_an_empty_password_is_not_hashed():
    with pytest.raises(ValueError, match="empty"):
        owner.hash_password("")


def test_a_hash_with_other_parameters_verifies(stored_hash):
    salt = bytes(16)
    key = owner.scrypt(PASSWORD, salt, 2**10, 4, 2, 40)
    assert owner.verify(PASSWORD, f"scrypt:1024:4:2:{salt.hex()}:{key.hex()}")


SALT, KEY = "00" * 16, "11" * 32
MALFORMED_HASHES = {
    "empty": "",
    "quoted": f'"scrypt:16384:8:1:{SALT}:{KEY}"',
    "a space after": f"scrypt:16384:8:1:{SALT}:{KEY} ",
    "another algorithm": f"pbkdf2:16384:8:1:{SALT}:{KEY}",
    "a part missing": f"scrypt:16384:8:{SALT}:{KEY}",
    "upper-case hex": f"scrypt:16384:8:1:{SALT}:{KEY.upper()}a",
    "an odd hex digit": f"scrypt:16384:8:1:{SALT}0:{KEY}",
    "a short salt": f"scrypt:16384:8:1:{'00' * 8}:{KEY}",
    "a leading zero": f"scrypt:016384:8:1:{SALT}:{KEY}",
    "N not a power of 2": f"scrypt:16000:8:1:{SALT}:{KEY}",
    "N of 1": f"scrypt:1:8:1:{SALT}:{KEY}",
    "too much memory": f"scrypt:1048576:8:1:{SALT}:{KEY}",
    "too much work": f"scrypt:16384:8:16:{SALT}:{KEY}",
    "memory one block over": f"scrypt:2:8192:61:{SALT}:{KEY}",
}


@pytest.mark.parametrize("stored", list(MALFORMED_HASHES.values()), ids=list(MALFORMED_HASHES))
def test_a_malformed_hash_is_refused_at_start_with_what_is_wrong(monkeypatch, stored):
    with pytest.raises(ValueError):
        owner.parse(stored)
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", stored)
    if stored:
        with pytest.raises(SystemExit, match="^RESULTS_PASSWORD_HASH is not a password hash: "):
            owner.check_settings()
    else:
        owner.check_settings()  # empty: unset, the pages answer 404


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "quoted",
            "it must be scrypt:N:r:p:SALT:HASH, as `make password` prints it (N, r and p "
            "numbers, SALT and HASH 32 to 128 lower-case hex digits, no spaces or quotes)",
        ),
        ("N not a power of 2", "N must be a power of 2, not 16000"),
        ("too much work", "N=16384, r=8, p=16 would take too long or too much memory"),
    ],
)
def test_a_malformed_hash_is_refused_saying_what_is_wrong(case, message):
    with pytest.raises(ValueError) as refused:
        owner.parse(MALFORMED_HASHES[case])
    assert str(refused.value) == message


def test_a_hash_at_the_limits_of_memory_and_work_is_read():
    # scrypt takes 128 * r * (N + p + 2) bytes and N * r * p of work: both at their limits here.
    assert 128 * 8192 * (2 + 60 + 2) == owner.MAX_MEMORY
    assert owner.parse(f"scrypt:2:8192:60:{SALT}:{KEY}")[:3] == (2, 8192, 60)
    assert owner.N * owner.R * 8 == owner.MAX_WORK
    assert owner.parse(f"scrypt:{owner.N}:{owner.R}:8:{SALT}:{KEY}")[:3] == (owner.N, owner.R, 8)
    assert owner.parse(f"scrypt:2:1:1:{SALT}:{KEY}")[:3] == (2, 1, 1)  # the smallest N


def test_a_hash_needing_more_memory_than_openssls_default_verifies():
    # 2**15 x 8 takes just over the 32 MiB OpenSSL allows unless told otherwise.
    salt = bytes(16)
    key = owner.scrypt(PASSWORD, salt, 2**15, 8, 1, 32)
    assert owner.verify(PASSWORD, f"scrypt:32768:8:1:{salt.hex()}:{key.hex()}")


def test_a_good_hash_and_a_user_name_pass_the_start(monkeypatch, stored_hash):
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", stored_hash)
    monkeypatch.setenv("RESULTS_USER", "ana")
    owner.check_settings()
    monkeypatch.setenv("RESULTS_USER", "ana:x")
    with pytest.raises(SystemExit, match="^RESULTS_USER cannot contain a colon"):
        owner.check_settings()


def test_the_app_does_not_start_with_a_malformed_hash():
    malformed = "scrypt:16384:8:1:abc"  # a hash cut short
    # PORT 0, which main() refuses: without the check, the app would exit all the same, saying
    # something else, rather than serve.
    environ = {**os.environ, "RESULTS_PASSWORD_HASH": malformed, "PORT": "0"}
    run = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("RESULTS_PASSWORD_HASH is not a password hash: it must be ")


# python -m owner, which `make password` runs.


def run_owner(*args: str, stdin: str) -> subprocess.CompletedProcess:
    """Run `python -m owner` with its standard input from a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "owner", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_the_hash_of_one_line_of_standard_input_is_printed(ending):
    run = run_owner(stdin=PASSWORD + ending + ("the next line is not read\n" if ending else ""))
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.splitlines()
    assert owner.verify(PASSWORD, line)
    assert run.stderr == ""


def test_make_password_prints_a_line_for_the_environment():
    # This run's Python, its venv built already: -o keeps make from building .venv again.
    run = subprocess.run(
        ["make", "-s", "-o", ".venv/.runtime", f"BIN={Path(sys.executable).parent}", "password"],
        cwd=ROOT,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.splitlines()
    name, stored = line.split("=", 1)
    assert name == "RESULTS_PASSWORD_HASH"
    assert owner.verify(PASSWORD, stored)


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_an_empty_password_is_refused_with_a_message(stdin):
    run = run_owner(stdin=stdin)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == "owner: the password is empty: type one; nothing printed\n"


def on_terminal(*typed: str) -> tuple[int, str]:
    """Run `python -m owner` on a new terminal (a pty), typing each line after each prompt;
    return its exit status and all it wrote there."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "owner"],
        cwd=ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,  # not the terminal the tests run in
    )
    os.close(terminal)
    shown, lines = b"", list(typed)
    prompts = [b"Password for the results: ", b"The same again: "]
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, f"python -m owner said nothing more in 30 s: {shown!r}"
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the program ended, and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            # Typed after its prompt: getpass discards what was typed before (TCSAFLUSH).
            if lines and sum(map(shown.count, prompts)) > len(typed) - len(lines):
                os.write(main, lines.pop(0).encode() + b"\n")
        return process.wait(30), shown.decode()
    finally:
        os.close(main)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


def test_on_a_terminal_the_password_is_asked_twice_and_not_shown():
    status, shown = on_terminal(PASSWORD, PASSWORD)
    assert status == 0, shown
    assert PASSWORD not in shown  # not echoed
    prompts, printed = shown.split("The same again: ")
    assert prompts.strip() == "Password for the results:"
    assert owner.verify(PASSWORD, printed.strip())


def test_on_a_terminal_two_different_passwords_print_nothing():
    status, shown = on_terminal(PASSWORD, PASSWORD + "x")
    assert status == 2
    assert "owner: the two passwords differ; nothing printed" in shown
    assert "scrypt:" not in shown


# The same, in-process: what `make mutation` can see (it cannot follow a child process).


class Terminal(io.StringIO):
    """Standard input on a terminal: getpass reads it, not main()."""

    def isatty(self) -> bool:
        return True


def run_main(monkeypatch, capsys, *args: str, stdin: str | None = None, typed=()):
    """Run owner.main() with one line of standard input from a pipe, or else on a terminal,
    each prompt answered with the next of typed (an exception: raised there, as Ctrl-C is).
    Return its exit status, what it printed and wrote on standard error, and the prompts."""
    prompts, answers = [], iter(typed)

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin) if stdin is not None else Terminal())
    monkeypatch.setattr(owner.getpass, "getpass", getpass)
    status = owner.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err, prompts


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_main_hashes_one_line_of_standard_input(monkeypatch, capsys, ending):
    stdin = PASSWORD + ending + ("the next line is not read\n" if ending else "")
    status, out, err, _ = run_main(monkeypatch, capsys, stdin=stdin)
    assert (status, err) == (0, "")
    assert out.endswith("\n") and owner.verify(PASSWORD, out.removesuffix("\n"))


def test_main_with_env_prints_the_line_to_set(monkeypatch, capsys):
    status, out, _, _ = run_main(monkeypatch, capsys, "--env", stdin=PASSWORD)
    name, stored = out.removesuffix("\n").split("=", 1)
    assert (status, name) == (0, "RESULTS_PASSWORD_HASH")
    assert owner.verify(PASSWORD, stored)


def test_main_asks_twice_on_a_terminal(monkeypatch, capsys):
    status, out, err, prompts = run_main(monkeypatch, capsys, typed=[PASSWORD, PASSWORD])
    assert (status, err) == (0, "")
    assert prompts == ["Password for the results: ", "The same again: "]
    assert owner.verify(PASSWORD, out.removesuffix("\n"))


@pytest.mark.parametrize(
    ("stdin", "typed", "said_why"),
    [
        ("", (), "owner: the password is empty: type one; nothing printed\n"),
        ("\r\n", (), "owner: the password is empty: type one; nothing printed\n"),
        (None, [""], "owner: the password is empty: type one; nothing printed\n"),
        (None, [PASSWORD, PASSWORD + "x"], "owner: the two passwords differ; nothing printed\n"),
        (None, [EOFError()], "\nowner: no password read; nothing printed\n"),
        (None, [PASSWORD, KeyboardInterrupt()], "\nowner: no password read; nothing printed\n"),
    ],
    ids=["empty line", "empty CRLF line", "empty on a terminal", "two differ", "Ctrl-D", "Ctrl-C"],
)
def test_main_prints_nothing_but_why_when_it_has_no_password(
    monkeypatch, capsys, stdin, typed, said_why
):
    status, out, err, prompts = run_main(monkeypatch, capsys, stdin=stdin, typed=typed)
    assert (status, out, err) == (2, "", said_why)
    assert len(prompts) == len(typed)  # an empty password is not asked for again


def test_main_refuses_a_password_that_is_not_unicode(monkeypatch, capsys):
    # What Python reads from bytes that are not UTF-8 under the C locale: a lone surrogate.
    status, out, err, _ = run_main(monkeypatch, capsys, stdin="pass\udcffword\n")
    assert (status, out) == (2, "")
    assert err.startswith("owner: 'utf-8' codec can't encode") and err.endswith(
        "; nothing printed\n"
    )


def test_main_says_what_it_does_in_its_help(monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        run_main(monkeypatch, capsys, "--help")
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert shown.startswith("usage: python -m owner [-h] [--env] ")
    assert (
        "Read the owner's password (from the terminal, or one line of standard input) and "
        "print its hash, to set as RESULTS_PASSWORD_HASH." in shown
    )
    assert "--env print RESULTS_PASSWORD_HASH=HASH, a line to paste" in shown


# On a real Waitress: the address and scheme are what a trusted proxy says.


@pytest.fixture(scope="module")
def owner_server(tmp_path_factory, stored_hash):
    """The Procfile's server with the owner's password set (it trusts 127.0.0.1's headers)."""
    log = tmp_path_factory.mktemp("owner") / "server.log"
    server = start_server(
        SERVER_COMMANDS["procfile"], log, environ={"RESULTS_PASSWORD_HASH": stored_hash}
    )
    yield server
    server.stop()


def get(server, path: str, forwarded: dict[str, str], authorization: str = RIGHT) -> Answer:
    """Send a GET from 127.0.0.1, the trusted proxy, with the headers it forwards."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": authorization, **forwarded})
        response = conn.getresponse()  # the export may come in chunks: http.client reads them
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def warnings(server) -> list[str]:
    """Return the warnings in a server's log."""
    return [line for line in server.output().splitlines() if line.startswith("WARNING:")]


@pytest.mark.parametrize("path", PATHS)
def test_over_https_through_the_trusted_proxy_the_owner_is_let_in_from_anywhere(owner_server, path):
    https = {"X-Forwarded-For": OUTSIDE, "X-Forwarded-Proto": "https"}
    answer = get(owner_server, path, https)
    assert answer.status == 200
    assert answer.values("Cache-Control") == ["no-store"]
    plain = {"X-Forwarded-For": OUTSIDE, "X-Forwarded-Proto": "http"}
    assert get(owner_server, path, plain).status == 403


def test_a_client_cannot_escape_its_count_by_writing_x_forwarded_for(owner_server):
    # A platform's router appends the address it saw to the client's own X-Forwarded-For:
    # Waitress keeps the last (the router's word), and the count goes by it.
    for host in range(owner.BURST):
        forwarded = {
            "X-Forwarded-For": f"198.51.100.{host}, 192.0.2.8",
            "X-Forwarded-Proto": "https",
        }
        assert get(owner_server, "/results", forwarded, WRONG["wrong password"]).status == 401
    forwarded = {"X-Forwarded-For": "198.51.100.99, 192.0.2.8", "X-Forwarded-Proto": "https"}
    assert get(owner_server, "/results", forwarded, WRONG["wrong password"]).status == 429
    deadline = time.monotonic() + 10  # the log is written by a thread of its own (logs.py)
    while len(logged := warnings(owner_server)) < owner.BURST and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(logged) == owner.BURST
    assert all("from 192.0.2.8" in line and "198.51.100" not in line for line in logged)


# Credentials found right are remembered; each try is counted as it is made.


def counted_scrypt(monkeypatch) -> list:
    """Count the scrypt checks from now on (each still made)."""
    hashed, real_scrypt = [], owner.scrypt
    monkeypatch.setattr(owner, "scrypt", lambda *args: hashed.append(args) or real_scrypt(*args))
    return hashed


def test_credentials_found_right_are_let_in_again_unchecked_even_while_throttled(
    testapp, password_set, monkeypatch
):
    visit(testapp, "/results", 200, RIGHT, OUTSIDE, "https")
    hashed = counted_scrypt(monkeypatch)
    visit(testapp, "/results", 200, RIGHT, OUTSIDE, "https")
    assert hashed == []  # no scrypt check: the header is known right
    fail(testapp, owner.BURST)  # its own address throttled now
    visit(testapp, "/results.csv", 200, RIGHT, OUTSIDE, "https")
    assert len(hashed) == owner.BURST  # the wrong ones' checks alone
    # Only that header: another try from the address waits, and is not checked.
    visit(testapp, "/results", 429, basic(owner.DEFAULT_USER, PASSWORD + "?"), OUTSIDE, "https")
    assert len(hashed) == owner.BURST


def test_the_owner_stays_in_while_an_attack_fills_the_table_of_clients(
    testapp, password_set, monkeypatch
):
    visit(testapp, "/results", 200, RIGHT, OUTSIDE, "https")
    monkeypatch.setattr(owner, "MAX_CLIENTS", 2)
    for host in range(2 + owner.BURST):  # two in the table, then the shared bucket emptied
        fail(testapp, 1, f"198.51.100.{host}")
    visit(testapp, "/results", 429, WRONG["wrong password"], "192.0.2.1", "https")
    visit(testapp, "/results", 200, RIGHT, "192.0.2.2", "https")  # a newcomer, but known right


def test_a_new_password_hash_or_user_forgets_the_credentials_remembered(
    testapp, password_set, monkeypatch
):
    visit(testapp, "/results", 200, RIGHT)
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", owner.hash_password("another password"))
    visit(testapp, "/results", 401, RIGHT)
    monkeypatch.setenv("RESULTS_PASSWORD_HASH", password_set)
    monkeypatch.setenv("RESULTS_USER", "ana")
    visit(testapp, "/results", 401, RIGHT)


def test_a_few_credentials_are_remembered_the_oldest_forgotten_first(remembered):
    settings = ("owner", "the hash")
    headers = [f"Basic {n}" for n in range(owner.REMEMBERED_AT_MOST + 1)]
    for header in headers:
        remembered.add(header, settings)
    assert not remembered.knows(headers[0], settings)
    assert all(remembered.knows(header, settings) for header in headers[1:])
    assert not remembered.knows(headers[1], ("owner", "another hash"))
    remembered.add(headers[1], ("owner", "another hash"))
    assert not remembered.knows(headers[2], settings)  # all forgotten with the old settings
    assert len(remembered.digests) == 1


def test_wrong_credentials_are_not_remembered(testapp, password_set, monkeypatch):
    fail(testapp, 1)
    hashed = counted_scrypt(monkeypatch)
    fail(testapp, 1)
    assert len(hashed) == 1


def test_a_try_is_counted_while_it_is_checked_and_given_back_when_right(
    testapp, password_set, monkeypatch, clock
):
    seen, real_verify = [], owner.verify
    monkeypatch.setattr(
        owner,
        "verify",
        lambda *args: seen.append(dict(owner.THROTTLE.full_at)) or real_verify(*args),
    )
    fail(testapp, 1)
    visit(testapp, "/results", 200, RIGHT, OUTSIDE, "https")
    # Counted before the check: requests at once cannot all be checked before any is counted.
    assert seen == [
        {OUTSIDE: clock.now + owner.INTERVAL},
        {OUTSIDE: clock.now + 2 * owner.INTERVAL},
    ]
    assert owner.THROTTLE.full_at == {OUTSIDE: clock.now + owner.INTERVAL}  # the right one back
    visit(testapp, "/results", 200, RIGHT, "198.51.100.7", "https")
    assert owner.THROTTLE.full_at == {OUTSIDE: clock.now + owner.INTERVAL}  # none left for it


def test_tries_at_once_get_no_more_than_the_burst(clock):
    tries = owner.BURST * 3
    start, waits = threading.Barrier(tries), []

    def one_try():
        start.wait(30)
        waits.append(owner.THROTTLE.take(OUTSIDE))

    threads = [threading.Thread(target=one_try) for _ in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(waits) == [0] * owner.BURST + [owner.INTERVAL] * (tries - owner.BURST)


# On a platform (TRUSTED_PROXY=*): only the router reaches the app, and any peer is believed.


@pytest.fixture(scope="module")
def platform_server(tmp_path_factory, stored_hash):
    """The Procfile's server as the docs set it on a platform: TRUSTED_PROXY=*."""
    log = tmp_path_factory.mktemp("platform") / "server.log"
    environ = {"RESULTS_PASSWORD_HASH": stored_hash, "TRUSTED_PROXY": "*"}
    server = start_server(SERVER_COMMANDS["procfile"], log, environ=environ)
    yield server
    server.stop()


ROUTER = "127.0.0.2"  # a peer that is not 127.0.0.1, as a platform's router is not


def get_from(server, source: str, forwarded: dict[str, str]) -> int:
    """Send the owner's GET /results from a source address with headers; return the status."""
    conn = http.client.HTTPConnection(
        server.host, server.port, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/results", headers={"Authorization": RIGHT, **forwarded})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def logged(server, client: str, count: int) -> list[list[str]]:
    """Return the client and scheme of a server's access lines for /results from `client` (as
    Waitress saw it), once `count` are there: the log is written by a thread of its own."""
    deadline = time.monotonic() + 10  # against a hang only
    while True:
        found = [
            fields[:2]
            for fields in access_lines(server.output())
            if fields[0] == client and fields[3] == "/results"
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


HTTPS = {"X-Forwarded-For": OUTSIDE, "X-Forwarded-Proto": "https"}
PLAIN = {"X-Forwarded-For": OUTSIDE, "X-Forwarded-Proto": "http"}


def test_on_a_platform_the_routers_address_and_scheme_are_believed_from_any_peer(
    platform_server,
):
    assert get_from(platform_server, ROUTER, HTTPS) == 200
    assert get_from(platform_server, ROUTER, PLAIN) == 403  # plain HTTP from the internet
    assert logged(platform_server, OUTSIDE, 2) == [[OUTSIDE, "https"], [OUTSIDE, "http"]]


def test_by_default_another_peers_forwarded_headers_are_dropped(owner_server):
    # Not the trusted proxy (127.0.0.1): its X-Forwarded-* are dropped, and it is what it is,
    # a loopback client over plain HTTP, let in either way.
    assert get_from(owner_server, ROUTER, HTTPS) == 200
    assert get_from(owner_server, ROUTER, PLAIN) == 200
    assert logged(owner_server, ROUTER, 2) == [[ROUTER, "http"], [ROUTER, "http"]]
