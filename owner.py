"""The owner's pages (/results, /results.csv): who may see them, and how guessing is slowed.

What people sent is for the person who runs the form, and the internet will try its door. Here:
- the pages do not exist (404) until RESULTS_PASSWORD_HASH is set: a fresh deploy shows nothing;
- the password is kept only as a salted scrypt hash (`make password` prints one), so whoever
  reads the environment (a process listing, an env file, a platform's config) cannot sign in
  with it, and each guess at it costs 16 MiB and some 40 ms of work;
- credentials are HTTP Basic (RFC 7617), which sends the password in clear: asked for and
  read over HTTPS only, or from loopback (`make run` on one's own machine); over plain HTTP
  from anywhere else the pages answer 403 and read nothing;
- user and password are compared in constant time, the hash checked even when the user is
  wrong, so that the time of an answer tells nothing;
- wrong or unreadable credentials are counted per client (its IPv4 address, or its IPv6 /64)
  in a token bucket: a few tries, then one every few seconds; beyond it 429 with Retry-After,
  and the password is not even tried. The count is this process's own: nginx's rate on these
  paths (deploy/form-app.conf) bounds all processes together. Each failure is logged with the
  address, never with what was typed;
- one scrypt check runs at a time in a process, so that a flood of guesses leaves the form's
  own requests a core;
- every answer, refusals too, is `Cache-Control: no-store` and `X-Robots-Tag: noindex`.
The client's address and scheme are the server's (REMOTE_ADDR and wsgi.url_scheme, which
Waitress takes from its trusted proxy's headers only), never Bottle's request.remote_addr and
urlparts, which would believe a client's own X-Forwarded-For and -Proto under a server that
passes them on.
"""

import argparse
import base64
import binascii
import collections
import getpass
import hashlib
import hmac
import ipaddress
import math
import os
import re
import secrets
import sys
import threading
import time

from bottle import HTTPError, request, response

import guards
import logs

DEFAULT_USER = "owner"
# Sent on every answer of the owner's pages: never kept by a browser or a proxy, never indexed.
HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
CHALLENGE = 'Basic realm="Results", charset="UTF-8"'  # RFC 7617: the credentials are UTF-8

# scrypt's cost: 2**14 x 8 (16 MiB of memory) takes about 40 ms on the test machine, within
# the 50 ms the results page can spare (it must answer within 0.5 s); p=1, one pass.
N, R, P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
# The most memory a stored hash may ask scrypt for (OpenSSL's default allows 32 MiB), and the
# most work, 8 times the cost above: a hash from elsewhere may be stronger, not unbounded.
MAX_MEMORY = 64 * 1024 * 1024
MAX_WORK = 8 * N * R * P
HASH = re.compile(
    r"scrypt:([1-9][0-9]{0,9}):([1-9][0-9]{0,3}):([1-9][0-9]{0,3}):"
    r"((?:[0-9a-f]{2}){16,64}):((?:[0-9a-f]{2}){16,64})"
)

# Wrong credentials per client: BURST tries at once, then one every INTERVAL seconds.
BURST, INTERVAL = 5, 10
# Clients whose tries are counted; one that failed within BURST * INTERVAL seconds is kept.
# When that many are kept, all others share one count (see Throttle).
MAX_CLIENTS = 10_000
# scrypt checks at once in this process (the app runs one process per core), and how long a
# request waits for its turn before a 503: each check takes a core for some 40 ms, and the form's
# own requests must still find one.
CHECKS_AT_ONCE, CHECK_WAIT = 1, 0.5

NOT_HTTPS = (
    "The results are shown over HTTPS only, where the password cannot be read on its way: "
    "open this address with https://."
)
SIGN_IN = "Sign in with the owner's user name and password to see the results."
BUSY = "The server is busy checking passwords. Please try again in a second."


def hash_password(password: str) -> str:
    """Return the string to set as RESULTS_PASSWORD_HASH for a password:
    `scrypt:N:r:p:SALT_HEX:HASH_HEX`, colons and hex only, safe unquoted in a shell, a systemd
    EnvironmentFile or a platform's config."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    key = scrypt(password, salt, N, R, P, KEY_BYTES)
    return f"scrypt:{N}:{R}:{P}:{salt.hex()}:{key.hex()}"


def scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    """Return scrypt's key for a password (UTF-8) with these parameters."""
    return hashlib.scrypt(
        password.encode(),  # a UnicodeEncodeError (a ValueError) for text that is not Unicode
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=MAX_MEMORY,
        dklen=length,
    )


def parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """Return a stored hash's N, r, p, salt and key; raise ValueError saying what is wrong."""
    found = HASH.fullmatch(stored)
    if found is None:
        raise ValueError(
            "it must be scrypt:N:r:p:SALT:HASH, as `make password` prints it (N, r and p "
            "numbers, SALT and HASH 32 to 128 lower-case hex digits, no spaces or quotes)"
        )
    n, r, p = (int(found[i]) for i in (1, 2, 3))
    if n < 2 or n & (n - 1):
        raise ValueError(f"N must be a power of 2, not {n}")
    if 128 * r * (n + p + 2) > MAX_MEMORY or n * r * p > MAX_WORK:
        raise ValueError(f"N={n}, r={r}, p={p} would take too long or too much memory")
    return n, r, p, bytes.fromhex(found[4]), bytes.fromhex(found[5])


def verify(password: str, stored: str) -> bool:
    """Tell whether a password is the one a stored hash was made from (compared in constant
    time). Raises ValueError for a hash that cannot be read (check_settings() says so at start)."""
    n, r, p, salt, key = parse(stored)
    return hmac.compare_digest(scrypt(password, salt, n, r, p, len(key)), key)


def settings() -> tuple[str, str]:
    """Return the owner's user name and stored password hash ("" when unset), read now."""
    return os.environ.get("RESULTS_USER") or DEFAULT_USER, os.environ.get(
        "RESULTS_PASSWORD_HASH", ""
    )


def check_settings() -> None:
    """Stop the app's start, saying why, when RESULTS_USER or RESULTS_PASSWORD_HASH cannot
    work: found at start, not by the owner as a 500 on every visit."""
    user, stored = settings()
    if ":" in user:
        sys.exit("RESULTS_USER cannot contain a colon: HTTP Basic ends the user name at one")
    if stored:
        try:
            parse(stored)
        except ValueError as error:
            sys.exit(f"RESULTS_PASSWORD_HASH is not a password hash: {error}")


# RFC 7617's credentials: the scheme, any case, then token68, which base64 must read as a whole.
BASIC = re.compile(r"[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2})")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # RFC 7617: none in a user name or a password


def credentials(header: str) -> tuple[str, str] | None:
    """Return the user name and password of an Authorization header's Basic credentials
    (RFC 7617: base64 of UTF-8 `user:password`, split at the first colon), or None when it
    holds none that can be read."""
    found = BASIC.fullmatch(header)
    if found is None:
        return None
    try:
        text = base64.b64decode(found[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = text.partition(":")
    if not colon or CONTROL.search(text):
        return None
    return user, password


def client(address: str) -> str:
    """Return what a client's failures are counted under: its IPv4 address, or its IPv6
    address's /64, the network one subscriber gets, all of whose addresses it may use."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def is_loopback(address: str) -> bool:
    """Tell whether a client address is this machine's own (127.0.0.0/8, ::1)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


class Throttle:
    """Failed tries per client, as a token bucket (GCRA): BURST at once, then one every
    INTERVAL seconds. For each client, the time its bucket is full again; a client whose bucket
    is full is forgotten, so only those that failed in the last BURST * INTERVAL seconds are kept.

    At most MAX_CLIENTS are kept. Beyond them (a guessing attack from that many addresses at
    once), every other client shares one bucket: a newcomer, the owner too, may wait some
    seconds while the attack lasts, but no attacker gets a fresh burst by crowding out its own
    count, and the owner's known address keeps its own. In this process only: each of the
    app's processes counts on its own, and nginx's rate (deploy/form-app.conf) covers them all.
    """

    SHARED = "(others)"

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.full_at: collections.OrderedDict[str, float] = collections.OrderedDict()

    def wait(self, key: str) -> int:
        """Return how many seconds a client must wait before its next try (0: it may try)."""
        with self.lock:
            now = self.clock()
            early = self.full_at.get(self.slot(key, now), now) - now - (BURST - 1) * INTERVAL
        return math.ceil(early) if early > 0 else 0

    def fail(self, key: str) -> None:
        """Count a failed try."""
        with self.lock:
            now = self.clock()
            slot = self.slot(key, now)
            self.full_at[slot] = max(self.full_at.get(slot, now), now) + INTERVAL
            self.full_at.move_to_end(slot)  # kept in the order of their last failure

    def slot(self, key: str, now: float) -> str:
        """Return the bucket a client counts in, after forgetting those full again."""
        # The oldest failures first: one full BURST * INTERVAL ago is full, and so all before it.
        while self.full_at and next(iter(self.full_at.values())) <= now:
            self.full_at.popitem(last=False)
        if key in self.full_at or len(self.full_at) < MAX_CLIENTS:
            return key
        return self.SHARED


THROTTLE = Throttle()
CHECKING = threading.BoundedSemaphore(CHECKS_AT_ONCE)


def check() -> None:
    """Let the owner's request through, or refuse it: 404 while no password is set, 403 over
    plain HTTP but from loopback, 429 while this client has failed too often, 401 for missing or
    wrong credentials (the failures counted and logged). Every answer gets HEADERS."""
    for name, value in HEADERS.items():
        response.set_header(name, value)
    user, stored = settings()
    if not stored:
        raise HTTPError(404, headers=HEADERS)  # the app's page for "no page at this address"
    environ = request.environ
    address = environ.get("REMOTE_ADDR") or ""  # Waitress's, from a trusted proxy only
    if environ.get("wsgi.url_scheme") != "https" and not is_loopback(address):
        raise guards.Refusal(403, NOT_HTTPS, headers=HEADERS)
    key = client(address)
    if seconds := THROTTLE.wait(key):
        raise guards.Refusal(
            429,
            f"Too many wrong passwords came from your address. Please try again in {seconds} "
            f"second{'s' if seconds > 1 else ''}.",
            headers={**HEADERS, "Retry-After": str(seconds)},
        )
    header = environ.get("HTTP_AUTHORIZATION")
    if header is None:  # a browser's first request: it asks the person, then sends them
        raise unauthorized()
    given = credentials(header)
    if given is None:
        THROTTLE.fail(key)
        logs.APP.warning("owner: unreadable credentials for the results from %s", address)
        raise unauthorized()
    if not CHECKING.acquire(timeout=CHECK_WAIT):
        raise guards.Refusal(503, BUSY, headers={**HEADERS, "Retry-After": "1"})
    try:
        # Both compared, whatever the first says: the answer takes as long either way.
        right_user = hmac.compare_digest(given[0].encode(), user.encode(errors="surrogateescape"))
        right_password = verify(given[1], stored)
    finally:
        CHECKING.release()
    if not (right_user and right_password):
        THROTTLE.fail(key)
        logs.APP.warning("owner: wrong credentials for the results from %s", address)
        raise unauthorized()


def unauthorized() -> guards.Refusal:
    """Return the 401 that asks for the owner's credentials."""
    return guards.Refusal(401, SIGN_IN, headers={**HEADERS, "WWW-Authenticate": CHALLENGE})


def read_password() -> str:
    """Read a password: from the terminal without echo (twice, the same), else one line of
    standard input. Raise ValueError when it cannot be used."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password for the results: ")
        if password and getpass.getpass("The same again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError("the password is empty: type one")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m owner",
        description="Read the owner's password (from the terminal, or one line of standard "
        "input) and print its hash, to set as RESULTS_PASSWORD_HASH.",
    )
    parser.add_argument(
        "--env", action="store_true", help="print RESULTS_PASSWORD_HASH=HASH, a line to paste"
    )
    args = parser.parse_args(argv)
    try:
        stored = hash_password(read_password())
    except ValueError as error:  # UnicodeError too: text that is not UTF-8
        print(f"owner: {error}; nothing printed", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt
        print("\nowner: no password read; nothing printed", file=sys.stderr)
        return 2
    print(f"RESULTS_PASSWORD_HASH={stored}" if args.env else stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
