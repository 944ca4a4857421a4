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
- each try is counted per client (its IPv4 address, or its IPv6 /64) in a token bucket as it
  is let through, and given back when it was right: a few tries, then one every few seconds;
  beyond it 429 with Retry-After, and the password is not even tried. While the table of
  clients is full (an attack from thousands of addresses), newcomers share one bucket. The
  count is this process's own: nginx's rate on these paths (deploy/form-app.conf) bounds all
  processes together. Each failure is logged with the address, never with what was typed;
- one scrypt check runs at a time in a process, and no request waits for it: one that finds
  it busy gets 503 at once, and its try stays counted, so that a flood of guesses holds
  neither the server's few threads nor more than one core, and the form still answers;
- credentials found right are remembered (a keyed digest of the header, in memory, a few at
  most, forgotten when RESULTS_USER or RESULTS_PASSWORD_HASH changes): the owner's next
  requests are let in at once, with no scrypt check and no count, even while an attack fills
  the table of clients or this client's bucket;
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
# scrypt checks at once in this process (the app runs one process per core): each takes a core
# for some 40 ms, and the form's own requests must still find one. None is waited for: a thread
# waiting its turn is one of the server's four that the form cannot use.
CHECKS_AT_ONCE = 1
# Credentials found right that are remembered: the owner's browsers, a few devices.
REMEMBERED_AT_MOST = 8

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
    """Tries per client, as a token bucket (GCRA): BURST at once, then one every INTERVAL
    seconds. check() takes a try before the password is checked and gives it back when it was
    right, so what stays counted is the wrong ones (and those refused as busy). For each client,
    the time its bucket is full again; a client whose bucket is full is forgotten, so only those
    that failed in the last BURST * INTERVAL seconds are kept.

    At most MAX_CLIENTS are kept. Beyond them (a guessing attack from that many addresses at
    once), every other client shares one bucket: a newcomer, the owner signing in too, may wait
    some seconds while the attack lasts, but no attacker gets a fresh burst by crowding out its
    own count; the owner's known address keeps its own, and credentials already found right
    are not counted at all (Remembered). In this process only: each of the app's processes
    counts on its own, and nginx's rate (deploy/form-app.conf) covers them all.
    """

    SHARED = "(others)"

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.RLock()  # take() holds it across wait() and fail()
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

    def take(self, key: str) -> int:
        """Count a try if the client may make one now and return 0, else return how many
        seconds it must wait (counting nothing). In one step: requests at once cannot all find
        the bucket open before any of them is counted."""
        with self.lock:
            if seconds := self.wait(key):
                return seconds
            self.fail(key)
            return 0

    def give_back(self, key: str) -> None:
        """Take back a try counted by take() that was right."""
        with self.lock:
            now = self.clock()
            slot = self.slot(key, now)
            if slot in self.full_at:
                self.full_at[slot] -= INTERVAL
                if self.full_at[slot] <= now:  # full again: forgotten, as slot() would
                    del self.full_at[slot]

    def slot(self, key: str, now: float) -> str:
        """Return the bucket a client counts in, after forgetting those full again."""
        # The oldest failures first: one full BURST * INTERVAL ago is full, and so all before it.
        while self.full_at and next(iter(self.full_at.values())) <= now:
            self.full_at.popitem(last=False)
        if key in self.full_at or len(self.full_at) < MAX_CLIENTS:
            return key
        return self.SHARED


class Remembered:
    """Authorization headers lately found right, so that the owner's next requests need
    neither a scrypt check nor a try from the bucket: no guess is made with a known header.

    Each is kept as its HMAC-SHA256 under a key made at start, never as the header itself
    (nothing in memory reads as the password), at most REMEMBERED_AT_MOST of them, the oldest
    forgotten first. They hold for the settings they were checked under: a new RESULTS_USER
    or RESULTS_PASSWORD_HASH forgets them all.
    """

    def __init__(self):
        self.key = secrets.token_bytes(32)
        self.lock = threading.Lock()
        self.settings: tuple[str, str] | None = None
        self.digests: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def digest(self, header: str) -> bytes:
        """Return the keyed digest a header is remembered by."""
        # surrogatepass: whatever text a server put in the environ has bytes
        message = header.encode("utf-8", "surrogatepass")
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def knows(self, header: str, settings: tuple[str, str]) -> bool:
        """Tell whether a header was found right under these settings."""
        digest = self.digest(header)
        with self.lock:
            # A set's look-up is not constant time, and need not be: it compares digests under
            # a key that never leaves this process, so no one can make a header whose digest
            # comes near a kept one, and the time taken tells nothing of the password.
            return self.settings == settings and digest in self.digests

    def add(self, header: str, settings: tuple[str, str]) -> None:
        """Remember a header found right under these settings."""
        digest = self.digest(header)
        with self.lock:
            if self.settings != settings:
                self.digests.clear()
                self.settings = settings
            self.digests[digest] = None
            self.digests.move_to_end(digest)
            while len(self.digests) > REMEMBERED_AT_MOST:
                self.digests.popitem(last=False)


THROTTLE = Throttle()
CHECKING = threading.BoundedSemaphore(CHECKS_AT_ONCE)
REMEMBERED = Remembered()


def check() -> None:
    """Let the owner's request through, or refuse it: 404 while no password is set, 403 over
    plain HTTP but from loopback, 429 while this client has tried too often, 401 for missing or
    wrong credentials (the failures logged), 503 while another password is being checked.
    Every answer gets HEADERS."""
    for name, value in HEADERS.items():
        response.set_header(name, value)
    user, stored = settings()
    if not stored:
        raise HTTPError(404, headers=HEADERS)  # the app's page for "no page at this address"
    environ = request.environ
    address = environ.get("REMOTE_ADDR") or ""  # Waitress's, from a trusted proxy only
    if environ.get("wsgi.url_scheme") != "https" and not is_loopback(address):
        raise guards.Refusal(403, NOT_HTTPS, headers=HEADERS)
    header = environ.get("HTTP_AUTHORIZATION")
    if header is not None and REMEMBERED.knows(header, (user, stored)):
        return  # found right before: no guess is made, so nothing to check or count
    key = client(address)
    # A browser's first request has no credentials: it asks the person, then sends them. It
    # tries nothing, so it is not counted; any other try is, before it is checked.
    seconds = THROTTLE.wait(key) if header is None else THROTTLE.take(key)
    if seconds:
        raise guards.Refusal(
            429,
            f"Too many wrong passwords came from your address. Please try again in {seconds} "
            f"second{'s' if seconds > 1 else ''}.",
            headers={**HEADERS, "Retry-After": str(seconds)},
        )
    if header is None:
        raise unauthorized()
    given = credentials(header)
    if given is None:
        logs.APP.warning("owner: unreadable credentials for the results from %s", address)
        raise unauthorized()
    if not CHECKING.acquire(blocking=False):  # the try stays counted: a flood is slowed too
        raise guards.Refusal(503, BUSY, headers={**HEADERS, "Retry-After": "1"})
    try:
        # Both compared, whatever the first says: the answer takes as long either way.
        right_user = hmac.compare_digest(given[0].encode(), user.encode(errors="surrogateescape"))
        right_password = verify(given[1], stored)
    finally:
        CHECKING.release()
    if not (right_user and right_password):
        logs.APP.warning("owner: wrong credentials for the results from %s", address)
        raise unauthorized()
    THROTTLE.give_back(key)
    REMEMBERED.add(header, (user, stored))


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
