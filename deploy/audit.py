"""Check a running deployment of the form from outside, as a client would:
`make audit URL=https://host[:port]/ [HTTP_URL=http://host[:port]/] [INSECURE=1]`.

For the shipped nginx (deploy/) and for a platform's router in front of the Procfile alike: TLS
against Mozilla's intermediate profile (with sslyze), the certificate, the redirect from plain
HTTP, HTTP/2, HSTS and the app's security headers on the answers a server makes itself, the faults
that Waitress has at the edge (docs/security.md, "Known limits"), slow and idle clients, the
per-address limit, the client's address as the app gets it, the form's own round trip, which
stores the app's example submission once, as a person's would be, and the owner's pages (the
results), which must refuse a request without credentials. Each probe is sent once, with a
time limit, a few at a time: never a load (the per-address limit's probe holds 33 requests open
for a moment, alone, at the end).

One line per check, `pass`, `FAIL` or `skip`, and what it saw; the exit status is 0 only when
none failed. INSECURE=1 skips the certificate's trust (a self-signed one), not its name or dates.
"""

import argparse
import datetime
import html
import http.client
import ipaddress
import re
import socket
import ssl
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit

from bottle import FormsDict

import app
import guards

# Mozilla's Server Side TLS guideline 6.0 (ssl-config.mozilla.org/guidelines/6.0.json),
# "intermediate", as deploy/form-app.conf follows it.
PROTOCOLS = {"TLS 1.2", "TLS 1.3"}
CIPHERS = {
    "TLS 1.2": {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    },
    "TLS 1.3": {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"},
}
CURVES = {"X25519MLKEM768", "X25519", "prime256v1", "secp384r1"}
SAME_CURVE = {"secp256r1": "prime256v1"}  # sslyze's name for it, and the profile's
HSTS_MIN_AGE = 63072000  # two years
# Fewer days left than this means renewal has failed for weeks: certbot renews 30 days before.
MIN_DAYS_LEFT = 7
PROBE_TIMEOUT = 5  # seconds to wait for an answer to a probe
SLOW_HEAD_LIMIT = 15  # a request head still being sent after this must have been cut off
# An idle connection, or a body that stops coming, open after this was not cut off: the shipped
# site's timeouts are 10 s (deploy/form-app.conf), Waitress's alone 95 s.
IDLE_LIMIT = 15
BODY_WAIT = 2  # seconds an unfinished body is left waiting for an answer that must not come yet
PER_ADDRESS = 32  # requests in progress one address may have; the next gets 429 (limit_conn)
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n"
FORM = "application/x-www-form-urlencoded"
TOKEN_FIELD = re.compile(rb'name="token" value="([A-Za-z0-9_-]+)"')  # the form's, in its page
RESULT = re.compile(r'id="result">(.*?)</p>', re.DOTALL)  # what the saved page shows
MARKER = "<script>audit-reflected</script>"
OWNER_PAGES = ["/results", "/results.csv"]  # the results, for the owner only (owner.py)


@dataclass
class Check:
    """One check's verdict and what it saw."""

    name: str
    passed: bool | None  # None: not run (skip)
    saw: str

    def line(self) -> str:
        verdict = {True: "pass", False: "FAIL", None: "skip"}[self.passed]
        return f"{verdict}  {self.name:<28} {self.saw}"


@dataclass
class Answer:
    """One HTTP/1.x response as read off the wire."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_answers(data: bytes) -> list[Answer]:
    """Split what a server sent on one connection into its responses, interim ones included."""
    found = []
    while data.startswith(b"HTTP/"):
        head, blank, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        answer = Answer(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0)
        answer.headers = [
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines)
        ]
        if answer.status >= 200 and answer.status not in (204, 304):
            lengths = answer.header("Content-Length")
            length = int(lengths[0]) if lengths and lengths[0].isdigit() else len(data)
            answer.body, data = data[:length], data[length:]
        found.append(answer)
    return found


class Target:
    """The deployment under audit: where it is, and how to open a connection to it."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path or "/"
        default = (parts.scheme, self.port) in (("https", 443), ("http", 80))
        self.authority = self.host if default else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 address
            self.authority = f"[{self.host}]" + ("" if default else f":{self.port}")
        self.origin = f"{parts.scheme}://{self.authority}"

    def connect(self, timeout: float = PROBE_TIMEOUT, alpn=("http/1.1",)) -> socket.socket:
        """Open a connection, over TLS for https:// (trust is the certificate check's job),
        offering the protocols in `alpn`."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if not self.tls:
            return sock
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(list(alpn))
        name = None if is_address(self.host) else self.host
        return context.wrap_socket(sock, server_hostname=name)

    def exchange(self, data: bytes) -> tuple[bytes, bool]:
        """Send raw bytes on a new connection; return what came back, and whether the server
        closed the connection within the probe's time (False: it was still open)."""
        received = b""
        with self.connect() as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass  # it may answer and close before it has read all we send
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except TimeoutError:
                return received, False
            except OSError:
                pass  # reset: closed, after what it sent
        return received, True

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> Answer:
        """Send one well-formed request and return its answer."""
        head = {"Host": self.authority, "Connection": "close", **(headers or {})}
        if body or method == "POST":
            head["Content-Length"] = str(len(body))
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        raw = f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body
        answers = parse_answers(self.exchange(raw)[0])
        finals = [answer for answer in answers if answer.status >= 200]
        if not finals:
            raise ConnectionError(f"no answer to {method} {path}")
        return finals[0]

    def unfinished_post(self, headers=None) -> bytes:
        """Return a POST of the form whose body is one byte short: the server waits for it."""
        head = {
            "Host": self.authority,
            "Content-Type": FORM,
            "Content-Length": "2",
            **(headers or {}),
        }
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        return f"POST {self.path} HTTP/1.1\r\n{lines}\r\na".encode("latin-1")


def closed_within(sock: socket.socket, limit: float) -> tuple[float | None, bytes]:
    """Read until the server closes the connection; return how many seconds that took (None:
    still open after `limit`) and what it sent meanwhile."""
    started = time.monotonic()
    received = b""
    try:
        while (left := limit - (time.monotonic() - started)) > 0:
            sock.settimeout(left)
            if not (chunk := sock.recv(65536)):
                break
            received += chunk
        else:
            return None, received
    except TimeoutError:
        return None, received
    except OSError:
        pass  # reset: closed
    return time.monotonic() - started, received


def is_address(host: str) -> bool:
    """Tell whether a host is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def statuses(answers: list[Answer]) -> str:
    """Describe the statuses a connection got, e.g. `100, 200`, or `nothing`."""
    return ", ".join(str(answer.status) for answer in answers) or "nothing"


# TLS, with sslyze.


def tls_checks(target: Target, insecure: bool) -> list[Check]:
    """Scan the TLS listener with sslyze and hold it against the intermediate profile."""
    names = ["tls-protocols", "tls-ciphers", "tls-curves", "tls-session-tickets", "certificate"]
    if not target.tls:
        return [Check(name, False, "no TLS: the URL is plain http://") for name in names]
    from cryptography.utils import CryptographyDeprecationWarning
    from sslyze import (  # imported here: only the TLS checks need it, and it takes a second
        ScanCommand,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )

    versions = {
        "SSL 2.0": ScanCommand.SSL_2_0_CIPHER_SUITES,
        "SSL 3.0": ScanCommand.SSL_3_0_CIPHER_SUITES,
        "TLS 1.0": ScanCommand.TLS_1_0_CIPHER_SUITES,
        "TLS 1.1": ScanCommand.TLS_1_1_CIPHER_SUITES,
        "TLS 1.2": ScanCommand.TLS_1_2_CIPHER_SUITES,
        "TLS 1.3": ScanCommand.TLS_1_3_CIPHER_SUITES,
    }
    commands = {
        *versions.values(),
        ScanCommand.ELLIPTIC_CURVES,
        ScanCommand.SESSION_RESUMPTION,
        ScanCommand.CERTIFICATE_INFO,
    }
    location = ServerNetworkLocation(
        target.host, target.port, ip_address=target.host if is_address(target.host) else None
    )
    network = ServerNetworkConfiguration(target.host, network_timeout=PROBE_TIMEOUT)
    scanner = Scanner(per_server_concurrent_connections_limit=4)
    request = ServerScanRequest(location, network_configuration=network, scan_commands=commands)
    scanner.queue_scans([request])
    with warnings.catch_warnings():
        # sslyze's own trust store has a root with a serial number cryptography frowns upon.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        [scan] = scanner.get_results()
    if scan.scan_status != ServerScanStatusEnum.COMPLETED:
        error = scan.connectivity_error_trace or scan.connectivity_status
        return [Check(name, False, f"sslyze could not connect: {error}") for name in names]
    result = scan.scan_result

    def outcome(command):
        attempt = getattr(result, command.value)
        if attempt.result is None:
            raise RuntimeError(f"sslyze's {command.value} failed: {attempt.error_reason}")
        return attempt.result

    checks = []
    try:
        accepted = {
            name: {suite.cipher_suite.name for suite in outcome(command).accepted_cipher_suites}
            for name, command in versions.items()
        }
        spoken = {name for name, suites in accepted.items() if suites}
        checks.append(
            Check(
                "tls-protocols",
                spoken == PROTOCOLS,
                f"accepted {', '.join(sorted(spoken)) or 'none'} (the profile: TLS 1.2, TLS 1.3)",
            )
        )
        extra = {suite for name in PROTOCOLS for suite in accepted[name] - CIPHERS[name]}
        count = sum(len(accepted[name]) for name in PROTOCOLS)
        checks.append(
            Check(
                "tls-ciphers",
                count > 0 and not extra,
                f"outside the profile: {', '.join(sorted(extra))}"
                if extra
                else f"{count} suites accepted, all in the profile",
            )
        )
    except RuntimeError as error:
        checks += [Check(name, False, str(error)) for name in names[:2]]
    try:
        curves = {
            SAME_CURVE.get(curve.name, curve.name)
            for curve in outcome(ScanCommand.ELLIPTIC_CURVES).supported_curves or []
        }
        checks.append(
            Check(
                "tls-curves",
                bool(curves) and curves <= CURVES,
                f"accepted {', '.join(sorted(curves)) or 'none'}"
                + (
                    f"; outside the profile: {', '.join(sorted(curves - CURVES))}"
                    if curves - CURVES
                    else ""
                ),
            )
        )
    except RuntimeError as error:
        checks.append(Check("tls-curves", False, str(error)))
    try:
        resumption = outcome(ScanCommand.SESSION_RESUMPTION)
        tickets = resumption.tls_ticket_successful_resumptions_count
        checks.append(
            Check(
                "tls-session-tickets",
                tickets == 0,
                f"{tickets} of {resumption.tls_ticket_attempted_resumptions_count} TLS 1.2 "
                "resumptions with a ticket succeeded (the profile: none)",
            )
        )
    except RuntimeError as error:
        checks.append(Check("tls-session-tickets", False, str(error)))
    try:
        checks.append(certificate_check(target, outcome(ScanCommand.CERTIFICATE_INFO), insecure))
    except RuntimeError as error:
        checks.append(Check("certificate", False, str(error)))
    return checks


def certificate_check(target: Target, info, insecure: bool) -> Check:
    """Check the leaf certificate: the host's name in it, its days left, and (unless insecure)
    a chain that a browser's trust store accepts."""
    from cryptography import x509

    deployment = info.certificate_deployments[0]
    leaf = deployment.received_certificate_chain[0]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        addresses = [str(address) for address in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, addresses = [], []
    named = names_host(dns, addresses, target.host)
    now = datetime.datetime.now(datetime.UTC)
    days = (leaf.not_valid_after_utc - now).days
    started = leaf.not_valid_before_utc <= now
    trusted = any(path.was_validation_successful for path in deployment.path_validation_results)
    saw = [
        f"for {target.host}"
        if named
        else f"NOT for {target.host} (names: {', '.join(dns + addresses)})",
        f"{days} days left" if started else "not valid yet",
        "trust not checked (INSECURE)" if insecure else ("trusted" if trusted else "NOT trusted"),
    ]
    passed = named and started and days >= MIN_DAYS_LEFT and (insecure or trusted)
    return Check("certificate", passed, "; ".join(saw))


def names_host(dns: list[str], addresses: list[str], host: str) -> bool:
    """Tell whether a certificate's names (DNS names, wildcards of one label, IP addresses)
    include the host."""
    host = host.lower()
    if is_address(host):
        return str(ipaddress.ip_address(host)) in addresses
    return any(
        name.lower() == host
        or (name.startswith("*.") and host.partition(".")[2] == name[2:].lower())
        for name in dns
    )


# HTTP: headers, redirect, refusals.


def security_headers_check(target: Target, name: str, answer: Answer, status: int) -> Check:
    """Check an answer's status, that it is HTML, and its security headers (and HSTS on TLS)."""
    expected = list(guards.SECURITY_HEADERS)
    missing = [header for header, value in expected if answer.header(header) != [value]]
    hsts = answer.header("Strict-Transport-Security")
    if target.tls and not (hsts and hsts_age(hsts[0]) >= HSTS_MIN_AGE):
        missing.append("Strict-Transport-Security")
    kind = (answer.header("Content-Type") or ["no Content-Type"])[0]
    passed = answer.status == status and not missing and kind.startswith("text/html")
    saw = f"{answer.status}, {kind}, " + (
        f"missing or wrong: {', '.join(missing)}" if missing else "every header"
    )
    return Check(name, passed, saw)


def hsts_age(value: str) -> int:
    """Return a Strict-Transport-Security header's max-age, or -1."""
    for directive in value.split(";"):
        key, _, number = directive.strip().partition("=")
        if key.lower() == "max-age" and number.strip('"').isdigit():
            return int(number.strip('"'))
    return -1


def http2_check(target: Target) -> Check:
    """Check that the TLS port offers HTTP/2 (ALPN), which browsers use when offered."""
    if not target.tls:
        return Check("http2", False, "no TLS: the URL is plain http://")
    with target.connect(alpn=("h2", "http/1.1")) as sock:
        chosen = sock.selected_alpn_protocol()
    return Check("http2", chosen == "h2", f"offered h2 and http/1.1, the server chose {chosen}")


def hsts_check(target: Target) -> Check:
    """Check the Strict-Transport-Security header on the form page."""
    if not target.tls:
        return Check("hsts", False, "no TLS: the URL is plain http://")
    values = target.request("GET", target.path).header("Strict-Transport-Security")
    if not values:
        return Check("hsts", False, "no Strict-Transport-Security header")
    age = hsts_age(values[0])
    return Check("hsts", age >= HSTS_MIN_AGE, f"{values[0]} (at least max-age={HSTS_MIN_AGE})")


def redirect_check(target: Target, http_url: str | None) -> Check:
    """Check that plain HTTP sends every request to the same URL on HTTPS."""
    if not http_url:
        return Check("http-redirect", None, "no HTTP_URL given")
    plain = Target(http_url)
    path = plain.path.rstrip("/") + "/audit-redirect?probe=1&x=%2F"
    answer = plain.request("GET", path)
    location = (answer.header("Location") or ["no Location"])[0]
    wanted = f"{target.origin}{path}"
    missing = [name for name, value in guards.SECURITY_HEADERS if answer.header(name) != [value]]
    passed = answer.status in (301, 308) and location == wanted and not missing
    saw = f"{answer.status} to {location}" + (
        f"; missing: {', '.join(missing)}" if missing else "; with the security headers"
    )
    return Check(
        "http-redirect", passed, saw + ("" if location == wanted else f" (wanted {wanted})")
    )


def page_checks(target: Target) -> list[Check]:
    """The security headers on a page the app makes (200, 404) and on refusals a server in
    front makes itself (413 for a large body, 400 for a control byte in a header)."""
    form = {"Content-Type": FORM}
    large = b"age=" + b"1" * (guards.MAX_BODY - 4)
    return [
        security_headers_check(target, "headers-200", target.request("GET", target.path), 200),
        security_headers_check(
            target, "headers-404", target.request("GET", target.path + "audit-no-such-page"), 404
        ),
        security_headers_check(
            target, "headers-413", target.request("POST", target.path, large, form), 413
        ),
        security_headers_check(
            target,
            "headers-400",
            target.request("GET", target.path, headers={"X-Audit": "a\x01b"}),
            400,
        ),
    ]


def expect_check(target: Target) -> Check:
    """Expect: 100-continue on a request without a body: its own answer, then the next one's."""
    host = target.authority.encode()
    raw = (
        b"GET / HTTP/1.1\r\nHost: %s\r\nExpect: 100-continue\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (host, host)
    )
    data, closed = target.exchange(raw)
    answers = parse_answers(data)
    finals = [answer.status for answer in answers if answer.status >= 200]
    passed = finals == [200, 200] and closed
    saw = f"got {statuses(answers)}" + ("" if closed else f", then nothing for {PROBE_TIMEOUT} s")
    return Check("expect-100-continue", passed, saw + " (wanted 200 for each request)")


def refused_check(target: Target, name: str, raw: bytes) -> Check:
    """An ambiguous request: one 400, the connection closed, no second answer smuggled in."""
    data, closed = target.exchange(raw)
    answers = parse_answers(data)
    passed = [answer.status for answer in answers] == [400] and closed
    saw = f"got {statuses(answers)}, connection " + ("closed" if closed else "kept open")
    return Check(name, passed, saw + " (wanted one 400 and the connection closed)")


def edge_checks(target: Target) -> list[Check]:
    """The faults Waitress 3.0.2 has at the edge (docs/security.md), each sent once."""
    host = target.authority.encode()
    smuggled = SMUGGLED % host
    return [
        expect_check(target),
        refused_check(
            target,
            "content-length-and-chunked",
            b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % host + smuggled,
        ),
        refused_check(
            target,
            "http-1.0-chunked",
            b"POST / HTTP/1.0\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % host
            + smuggled,
        ),
        refused_check(target, "http-1.1-without-host", b"GET / HTTP/1.1\r\n\r\n" + smuggled),
        bare_lf_check(target),
        echo_check(target),
    ]


def bare_lf_check(target: Target) -> Check:
    """A request whose lines end in a bare LF gets an answer, 200 or 400 (RFC 9112 allows
    either), where Waitress answers nothing and waits out its 95 s timeout."""
    raw = f"GET {target.path} HTTP/1.1\nHost: {target.authority}\nConnection: close\n\n"
    data, closed = target.exchange(raw.encode())
    answers = parse_answers(data)
    finals = [answer.status for answer in answers if answer.status >= 200]
    passed = finals in ([200], [400]) and closed
    saw = f"got {statuses(answers)}, connection " + ("closed" if closed else "kept open")
    return Check("bare-lf", passed, saw + " (wanted 200 or 400, and the connection closed)")


def echo_check(target: Target) -> Check:
    """A malformed header line (a bare CR in it, which Waitress quotes in its 400) must not come
    back in the answer."""
    raw = (
        f"GET / HTTP/1.1\r\nHost: {target.authority}\r\nX-Audit: {MARKER}\rx\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    data, _ = target.exchange(raw)
    answers = parse_answers(data)
    echoed = MARKER.encode() in data
    return Check(
        "header-echo",
        not echoed and bool(answers),
        f"got {statuses(answers)}, " + ("the header line echoed" if echoed else "nothing echoed"),
    )


def slow_head_check(target: Target) -> Check:
    """A request head sent a header a second must be cut off within SLOW_HEAD_LIMIT seconds."""
    started = time.monotonic()
    with target.connect(timeout=1) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {target.authority}\r\n".encode())
        while (elapsed := time.monotonic() - started) < SLOW_HEAD_LIMIT:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                got = sock.recv(65536)
            except TimeoutError:
                continue  # still open, nothing said: send the next header
            except OSError:
                got = b""
            said = statuses(parse_answers(got)) if got else "nothing"
            return Check("slow-head", True, f"cut off after {elapsed:.0f} s (answered {said})")
    return Check("slow-head", False, f"still open after {SLOW_HEAD_LIMIT} s")


def idle_check(target: Target) -> Check:
    """A connection that sends nothing must be closed within IDLE_LIMIT seconds: Waitress holds
    one 95 s, and 1,000 of them lock everyone out (docs/security.md)."""
    with target.connect() as sock:
        elapsed, _ = closed_within(sock, IDLE_LIMIT)
    if elapsed is None:
        return Check("idle-connection", False, f"nothing sent, still open after {IDLE_LIMIT} s")
    return Check("idle-connection", True, f"nothing sent, closed after {elapsed:.0f} s")


def slow_body_check(target: Target) -> Check:
    """A body that stops coming must be cut off within IDLE_LIMIT seconds."""
    with target.connect() as sock:
        sock.sendall(target.unfinished_post())
        elapsed, got = closed_within(sock, IDLE_LIMIT)
    said = statuses(parse_answers(got))
    if elapsed is None:
        return Check("slow-body", False, f"still open after {IDLE_LIMIT} s (answered {said})")
    return Check("slow-body", True, f"cut off after {elapsed:.0f} s (answered {said})")


def buffering_check(target: Target) -> Check:
    """The edge reads a whole body before it passes the request on, so that no slow body holds
    a connection to the app. Seen from outside: a request head Waitress refuses at once (a
    control byte in a header) is answered only after its body is complete; an edge that streams
    bodies passes the head on at once, and Waitress's 400 comes back while the body is not."""
    with target.connect(timeout=BODY_WAIT) as sock:
        sock.sendall(target.unfinished_post({"X-Audit": "a\x01b", "Connection": "close"}))
        try:
            early = sock.recv(65536)
            said = f"answered {statuses(parse_answers(early))}" if early else "closed"
            return Check("request-buffering", False, f"{said} before the body was complete")
        except TimeoutError:
            pass  # nothing yet, as it should be: send the rest
        sock.sendall(b"a")
        _, got = closed_within(sock, PROBE_TIMEOUT)
    answers = parse_answers(got)
    return Check(
        "request-buffering",
        bool(answers),
        f"nothing for {BODY_WAIT} s while the body was unfinished, then {statuses(answers)}",
    )


def forwarded_for_check(target: Target) -> Check:
    """The edge sets X-Forwarded-For itself, so that the app logs each client's own address, and
    no client picks the address it is logged with. Seen from outside: a client's own header that
    Waitress cannot read (an unfinished quote) gets 200 when the edge replaces it, and Waitress's
    400 when the edge passes it on (Waitress believes it from the proxy). An edge that sets no
    X-Forwarded-For and drops the client's looks from outside like one that sets it."""
    answer = target.request("GET", target.path, headers={"X-Forwarded-For": '"audit'})
    saw = f'X-Forwarded-For: "audit sent: {answer.status}'
    if answer.status == 400:
        saw += ", the app read the client's own header"
    return Check("forwarded-for", answer.status == 200, saw + " (wanted 200)")


def per_address_check(target: Target) -> Check:
    """More than PER_ADDRESS requests in progress from one address: the next gets 429 at once,
    so that one address cannot hold the connections every other client needs. Unfinished bodies
    hold the requests; every connection is closed at the end."""
    held: list[socket.socket] = []

    def hold(_=None) -> socket.socket:
        sock = target.connect(timeout=BODY_WAIT)
        held.append(sock)
        sock.sendall(target.unfinished_post())
        return sock

    try:
        with ThreadPoolExecutor(8) as pool:  # a full share, a few connections at a time
            list(pool.map(hold, range(PER_ADDRESS)))
        last = hold()
        try:  # it must be refused, whoever else from this address holds a share
            answers = parse_answers(last.recv(65536))
        except TimeoutError:
            answers = []
    finally:
        for sock in held:
            sock.close()
    saw = f"{len(held)} unfinished requests at once, the last answered {statuses(answers)}"
    return Check("per-address-limit", statuses(answers) == "429", saw + " (wanted 429)")


def form_checks(target: Target) -> list[Check]:
    """The form's own round trip, and a cross-site POST refused."""
    body = urlencode(app.EXAMPLE, doseq=True).encode()
    cross = {"Content-Type": FORM, "Origin": "https://cross-site.invalid"}
    refused = target.request("POST", target.path, body, cross)
    return [
        round_trip_check(target),
        Check(
            "cross-site-post",
            refused.status == 403,
            f"POST with Origin https://cross-site.invalid: {refused.status} (wanted 403)",
        ),
    ]


def round_trip_check(target: Target) -> Check:
    """The form sent as a browser sends it: the page, then the example with the page's one-time
    token and its own Origin, answered 303 to the page of what was saved, which must show it.
    The example is stored: one submission each audit."""
    page = target.request("GET", target.path)
    found = TOKEN_FIELD.search(page.body)
    saw = f"GET {page.status}"
    if page.status != 200 or found is None:
        return Check("form-round-trip", False, saw + ", no form with a token")
    token = found[1].decode()
    body = urlencode({**app.EXAMPLE, "token": [token]}, doseq=True).encode()
    headers = {"Content-Type": FORM, "Origin": target.origin}
    answer = target.request("POST", target.path, body, headers)
    saw += f", POST with Origin {target.origin}: {answer.status}"
    locations = answer.header("Location")
    location = urljoin(target.url, locations[0]) if locations else ""
    if answer.status != 303 or location != urljoin(target.url, f"/saved/{token}"):
        return Check("form-round-trip", False, saw + " (wanted 303 to /saved/<the token>)")
    saved = target.request("GET", urlsplit(location).path)
    shown = saved.status == 200 and shows_example(saved.body.decode("utf-8", "replace"))
    saw += f" to /saved/<the token>, GET {saved.status}"
    return Check(
        "form-round-trip",
        shown,
        saw + (", the example shown" if shown else ", the example not shown"),
    )


def owner_check(target: Target) -> Check:
    """The owner's pages refuse a request without credentials: 401 (403 over plain HTTP, 404
    while no password is set), never the results."""
    statuses = {path: target.request("GET", path).status for path in OWNER_PAGES}
    saw = ", ".join(f"{path} {status}" for path, status in statuses.items())
    return Check(
        "owner-pages",
        all(status in (401, 403, 404) for status in statuses.values()),
        f"without credentials: {saw} (wanted 401, 403 or 404)",
    )


def shows_example(page: str) -> bool:
    """Tell whether a saved page's result paragraph shows the example submission as the app
    keeps it: each of the form's fields, then its hobbies' labels."""
    result = RESULT.search(page)
    shown = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", result[1])).split()) if result else ""
    example = FormsDict()
    for name, values in app.EXAMPLE.items():
        for value in values:
            example.append(name, value)
    return shown == result_text(app.validate(example)[0])


def result_text(values: dict) -> str:
    """Return the text of the saved page's result paragraph for these cleaned values: each of
    the form's fields (app.FIELDS), named as the results page names it, its value or "Empty",
    then the hobbies' labels in the form's order, or "No Hobbies?". Derived from the form's
    definition, so that a field or hobby added as README's "Changing the form" says needs no
    change here (nor in the tests, which read it too)."""
    fields = [
        f"{name.replace('_', ' ').capitalize()}: {values[name] or 'Empty'}" for name in app.FIELDS
    ]
    labels = [label for value, label in app.HOBBIES.items() if value in values["hobbies"]]
    return " ".join([*fields, "Hobbies: " + (", ".join(labels) or "No Hobbies?")])


def guarded(name: str, probe) -> list[Check]:
    """Run a probe; a probe that cannot finish (refused, reset, timed out) is its check failing."""
    try:
        checks = probe()
        return checks if isinstance(checks, list) else [checks]
    except (OSError, ConnectionError, ValueError, http.client.HTTPException) as error:
        return [Check(name, False, f"{type(error).__name__}: {error}")]


def audit(url: str, http_url: str | None = None, insecure: bool = False) -> list[Check]:
    """Run every check against a deployment; return them in a fixed order."""
    target = Target(url)
    probes = [
        ("tls", lambda: tls_checks(target, insecure)),
        ("http2", lambda: http2_check(target)),
        ("http-redirect", lambda: redirect_check(target, http_url)),
        ("hsts", lambda: hsts_check(target)),
        ("headers", lambda: page_checks(target)),
        ("edge", lambda: edge_checks(target)),
        ("slow-head", lambda: slow_head_check(target)),
        ("idle-connection", lambda: idle_check(target)),
        ("slow-body", lambda: slow_body_check(target)),
        ("request-buffering", lambda: buffering_check(target)),
        ("forwarded-for", lambda: forwarded_for_check(target)),
        ("form", lambda: form_checks(target)),
        ("owner-pages", lambda: owner_check(target)),
    ]
    # A few at a time, the slow and idle clients first, so that they run beside the others
    # rather than after them; the answers in the order above.
    slow = {"slow-head", "idle-connection", "slow-body"}
    with ThreadPoolExecutor(4) as pool:
        running = {
            name: pool.submit(guarded, name, probe)
            for name, probe in sorted(probes, key=lambda probe: probe[0] not in slow)
        }
    results = [running[name].result() for name, _ in probes]
    # Alone, after the others: while it holds a full share of requests, theirs would get 429.
    results.append(guarded("per-address-limit", lambda: per_address_check(target)))
    return [check for checks in results for check in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the form's URL, e.g. https://form.example.org/")
    parser.add_argument("--http-url", help="its plain-HTTP URL, to check the redirect")
    parser.add_argument("--insecure", action="store_true", help="do not check certificate trust")
    args = parser.parse_args(argv)
    try:
        checks = audit(args.url, args.http_url, args.insecure)
    except ValueError as error:
        parser.error(str(error))
    for check in checks:
        print(check.line(), flush=True)
    failed = [check.name for check in checks if check.passed is False]
    print(f"FAIL: {len(failed)} of {len(checks)} checks" if failed else f"all {len(checks)} pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
