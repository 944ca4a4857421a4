"""The edge a client meets on a server (deploy/form-app.conf, run by deploy/run_proxy.py): the TLS
profile, HTTP/2 beside HTTP/1.1, the port-80 block, the per-address limit, and nginx's own pages
for the requests Waitress would answer with its bare text/plain ones.

Real servers here, since the server is the point; each test starts or shares its own on loopback.
"""

import base64
import contextlib
import http.client
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import pytest
from helpers import (
    SITE,
    Answer,
    answers,
    app_log,
    assert_saved,
    encoded,
    exchange,
    raise_open_file_limit,
    request,
    require,
    start_proxy,
)

import app
import guards
import owner
from deploy import error_pages, run_proxy

HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
FORM = "application/x-www-form-urlencoded"
# Mozilla's Server Side TLS guideline 6.0, intermediate: the TLS 1.2 suites it allows.
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}


def assert_edge_headers(headers) -> None:
    """Check an HTTPS answer's security headers and HSTS: each once, with its value."""
    for name, value in [*guards.SECURITY_HEADERS, HSTS]:
        assert [v for key, v in headers if key.lower() == name.lower()] == [value], name


def assert_nginx_page(status: int, headers, body: bytes) -> None:
    """Check an answer is nginx's page for `status`, in the app's layout, with every header."""
    page = error_pages.ERRORS / f"{status}.html"
    assert body == page.read_bytes(), body[:300]
    assert_edge_headers(headers)


# HTTP/2, with h2 (the library under httpx): a client that sends what it is told, invalid or not.


@dataclass
class H2Answer:
    """What one HTTP/2 stream got: its status, headers and body, or how it was cut off."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    reset: str | None  # an RST_STREAM or GOAWAY error code's name, if the stream got one


def h2_exchange(proxy, headers: list[tuple[str, str]], body: bytes = b"") -> H2Answer:
    """Send one request over a new HTTP/2 connection; return what came back on its stream."""
    context = proxy.tls()
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.selected_alpn_protocol() == "h2"
            config = h2.config.H2Configuration(
                validate_outbound_headers=False,  # send malformed requests as they are
                normalize_outbound_headers=False,
                header_encoding=None,
            )
            conn = h2.connection.H2Connection(config)
            conn.initiate_connection()
            sent = [
                (name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in headers
            ]
            conn.send_headers(1, sent, end_stream=not body)
            if body:
                conn.send_data(1, body, end_stream=True)
            sock.sendall(conn.data_to_send())
            answer = H2Answer(None, [], b"", None)
            while True:
                data = sock.recv(65536)  # a TimeoutError here: nginx neither answered nor reset
                if not data:
                    return answer
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        answer.headers = [
                            (k.decode(), v.decode("latin-1")) for k, v in event.headers
                        ]
                        answer.status = int(dict(answer.headers)[":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        answer.body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        return answer
                    elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        answer.reset = event.error_code.name
                        return answer
                sock.sendall(conn.data_to_send())


def h2_request(proxy, method: str, path: str, extra=(), body: bytes = b"") -> H2Answer:
    """Send a well-formed HTTP/2 request, with these headers added."""
    authority = f"127.0.0.1:{proxy.port}"
    head = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
    return h2_exchange(proxy, [*head, *extra], body)


# The site file, adapted to this machine's nginx.


def test_the_site_is_adapted_to_older_nginx_and_openssl_only():
    placeholders = re.findall(r"@([A-Z_0-9]+)@", SITE.read_text())
    site = run_proxy.site_config(dict.fromkeys(set(placeholders) - {"APP_ADDRESS"}, "x"), ["x"])
    assert run_proxy.for_versions(site, (1, 26, 3), (3, 5, 1)) == site  # Debian 13's
    old = run_proxy.for_versions(site, (1, 22, 1), (3, 0, 17))  # Debian 12's
    http2 = re.compile(r"^\s*http2 on;", re.MULTILINE)
    assert http2.search(site) and not http2.search(old)
    assert re.findall(r"^\s*listen (.*);", old, re.MULTILINE) == [
        "x ssl http2",
        "x ssl http2",  # the IPv6 line
        "x",
        "x",  # port 80: no TLS, no HTTP/2
    ]
    assert "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;" in site
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in old


def test_a_site_without_http2_gets_none_on_older_nginx():
    site = "server {\n    listen x ssl;\n}\n"  # no `http2 on;`, as tests/test_audit.py weakens it
    assert run_proxy.for_versions(site, (1, 22, 1), (3, 0, 17)) == site


# TLS: Mozilla's intermediate profile, as a client meets it.


def handshake(proxy, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    """Return a TLS connection to nginx made with this context, or None if nginx refused it."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname="localhost")
    except ssl.SSLError:
        sock.close()
        return None


def test_tls_12_offers_only_the_intermediate_profiles_suites(proxy):
    offered = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    offered.set_ciphers("ALL:@SECLEVEL=0")
    suites = {c["name"] for c in offered.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert len(suites) > 30  # CBC, SHA-1, CCM, ARIA, CAMELLIA, RSA key exchange: all offered
    accepted = set()
    for suite in sorted(suites):
        context = proxy.tls()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(f"{suite}:@SECLEVEL=0")
        if sock := handshake(proxy, context):
            accepted.add(sock.cipher()[0])
            sock.close()
    # The certificate is ECDSA, so the RSA-authenticated half of the list cannot be chosen.
    assert accepted == {name for name in INTERMEDIATE_TLS12 if "ECDSA" in name}


def old_protocols(context: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    """Return the context made to speak only `version`, TLS 1.0 and 1.1 included."""
    context.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 refuses 1.0 and 1.1 above level 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # setting 1.0 or 1.1 warns
        context.minimum_version = context.maximum_version = version
    return context


def speaks(client: ssl.SSLContext, proxy, version: ssl.TLSVersion) -> bool:
    """Tell whether this client completes a handshake with a local server that speaks `version`
    only: a refusal by nginx then means nginx refused it, not that the client could not ask."""
    server = old_protocols(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version)
    server.load_cert_chain(proxy.run_dir / "cert.pem", proxy.run_dir / "key.pem")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept():
            conn, _ = listener.accept()
            with conn, contextlib.suppress(ssl.SSLError, OSError):
                server.wrap_socket(conn, server_side=True).close()

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                client.wrap_socket(sock, server_hostname="localhost").close()
            return True
        except ssl.SSLError:
            return False
        finally:
            thread.join()


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        (ssl.TLSVersion.TLSv1, False),
        (ssl.TLSVersion.TLSv1_1, False),
        (ssl.TLSVersion.TLSv1_2, True),
        (ssl.TLSVersion.TLSv1_3, True),
    ],
    ids=["1.0", "1.1", "1.2", "1.3"],
)
def test_tls_versions_are_12_and_13(proxy, version, accepted):
    context = old_protocols(proxy.tls(), version)
    assert speaks(context, proxy, version)
    sock = handshake(proxy, context)
    assert (sock is not None) == accepted
    if sock:
        assert sock.version() == version.name.replace("_", ".")
        sock.close()


@pytest.mark.parametrize(
    ("group", "accepted"),
    [("X25519", True), ("prime256v1", True), ("secp384r1", True), ("secp521r1", False)],
)
def test_key_exchange_groups_are_the_profiles(proxy, group, accepted):
    openssl = require("openssl")
    connect = [openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-groups", group]
    shook = subprocess.run(connect, input="", capture_output=True, text=True, timeout=10)
    assert (shook.returncode == 0) == accepted, shook.stdout[-500:] + shook.stderr[-500:]


def test_tls_12_sessions_resume_from_the_cache_without_tickets(proxy):
    context = proxy.tls()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    first = handshake(proxy, context)
    session = first.session
    first.close()
    assert not session.has_ticket
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5),
        server_hostname="localhost",
        session=session,
    )
    assert sock.session_reused  # ssl_session_cache: resumption without a ticket key
    sock.close()


def test_http2_is_offered_beside_http11(proxy):
    context = proxy.tls()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(proxy, context) as sock:
        assert sock.selected_alpn_protocol() == "h2"


def test_ipv6_loopback_is_served_where_the_machine_has_it(proxy):
    site = (proxy.run_dir / "form-app.conf").read_text()
    if not run_proxy.has_ipv6():
        assert "[::" not in site
        return
    for port in (proxy.port, proxy.http_port):
        socket.create_connection(("::1", port), timeout=5).close()


# HSTS on every HTTPS answer, the app's and nginx's own.


@pytest.mark.parametrize(("path", "status"), [("/", 200), ("/nowhere", 404), ("/healthz", 200)])
def test_every_https_answer_has_hsts_and_the_security_headers(proxy, path, status):
    answer = request(proxy, "GET", path)
    assert answer.status == status
    assert_edge_headers(answer.headers)


# Port 80.


def plain_request(proxy, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """Send one request to nginx's plain-HTTP listener; return status, headers and body."""
    raw = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.http_port}\r\nConnection: close"
    with socket.create_connection(("127.0.0.1", proxy.http_port), timeout=5) as sock:
        sock.sendall(raw.encode() + b"\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    [answer] = answers(received)
    return answer.status, answer.headers, answer.body


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/", "/nowhere/page?age=34&hobbies=software", "/.well-known/"])
def test_port_80_redirects_to_the_same_url_on_https(proxy, method, path):
    status, headers, _ = plain_request(proxy, path, method)
    assert status == 301
    assert dict(headers)["Location"] == f"https://127.0.0.1:{proxy.port}{path}"
    for name, value in guards.SECURITY_HEADERS:
        assert [v for k, v in headers if k == name] == [value]
    assert "Strict-Transport-Security" not in dict(headers)  # meaningless over plain HTTP


def test_port_80_serves_the_acme_challenge_from_the_webroot(proxy):
    token = f"token-{time.monotonic_ns()}"
    folder = proxy.run_dir / "acme" / ".well-known" / "acme-challenge"
    (folder / token).write_text("key-authorization")
    status, headers, body = plain_request(proxy, f"/.well-known/acme-challenge/{token}")
    assert (status, body) == (200, b"key-authorization")
    assert dict(headers)["Content-Type"] == "text/plain"
    assert plain_request(proxy, "/.well-known/acme-challenge/missing")[0] == 404


# The form and Waitress's edge faults over HTTP/2 (tests/test_proxy.py sends them over HTTP/1.1).


def test_the_form_round_trip_over_http2(proxy):
    page = h2_request(proxy, "GET", "/")
    assert page.status == 200 and b"<form" in page.body
    assert_edge_headers(page.headers)
    origin = [("origin", proxy.url), ("content-type", FORM)]
    done = h2_request(proxy, "POST", "/", origin, encoded())
    assert_edge_headers(done.headers)
    location = assert_saved(done.status, dict(done.headers).get("location"))
    saved = h2_request(proxy, "GET", location)
    assert saved.status == 200
    assert f"Age: {app.EXAMPLE['age'][0]}<br>".encode() in saved.body
    assert_edge_headers(saved.headers)
    cross = [("origin", "https://evil.example"), ("content-type", FORM)]
    assert h2_request(proxy, "POST", "/", cross, encoded()).status == 403


def test_expect_100_continue_without_a_body_over_http2_gets_its_answer(proxy):
    answer = h2_request(proxy, "GET", "/", [("expect", "100-continue")])
    assert answer.status == 200 and b"<form" in answer.body


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/h2-cl-te", [("content-length", "5"), ("transfer-encoding", "chunked")]),
        ("/h2-no-host", None),  # neither :authority nor host
    ],
    ids=["Content-Length with Transfer-Encoding", "no authority"],
)
def test_ambiguous_http2_requests_get_nginx_400_and_never_reach_the_app(proxy, path, headers):
    if headers is None:
        answer = h2_exchange(proxy, [(":method", "GET"), (":scheme", "https"), (":path", path)])
    else:
        answer = h2_request(proxy, "POST", path, headers, b"0\r\n\r\n")
    if answer.status != 400 and headers is not None:
        # nginx 1.30 (Debian unstable) drops Transfer-Encoding from an HTTP/2 request, where it
        # means nothing (RFC 9113 8.2.2), and passes on the body by its length: one request the
        # app reads one way, answered as any other unknown path.
        assert answer.status == 404 and b"There is no page at this address." in answer.body
        return
    assert answer.status == 400
    assert_nginx_page(400, answer.headers, answer.body)
    assert app_log(proxy, path, timeout=0) == [], "the app saw it"


@pytest.mark.parametrize(
    "header",
    [
        ("x-bad <script>alert('reflected')</script>", "x"),  # a space in a name
        ("X-Upper", "<script>alert('reflected')</script>"),  # HTTP/2 names are lower case
        ("x-bad", "<script>alert('reflected')</script>\x01"),  # a control byte
    ],
)
def test_a_malformed_http2_header_is_refused_and_not_reflected(proxy, header):
    answer = h2_request(proxy, "GET", "/", [header])
    assert b"reflected" not in answer.body
    if answer.status is None:
        assert answer.reset == "PROTOCOL_ERROR"  # nginx resets the stream
    else:
        assert_nginx_page(400, answer.headers, answer.body)


# What Waitress would answer bare gets nginx's page, over HTTP/1.1 and HTTP/2.

CONTROL_BYTES = ["\x01", "\x08", "\x0b", "\x1b", "\x7f"]


@pytest.mark.parametrize("byte", CONTROL_BYTES, ids=[f"{ord(b):#04x}" for b in CONTROL_BYTES])
def test_a_control_byte_in_a_header_value_gets_nginx_400_page(proxy, byte):
    raw = f"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a{byte}b\r\nConnection: close\r\n\r\n"
    [answer] = answers(exchange(proxy, raw.encode()))
    assert answer.status == 400
    assert_nginx_page(400, answer.headers, answer.body)
    over_h2 = h2_request(proxy, "GET", "/", [("x-note", f"a{byte}b")])
    assert over_h2.status == 400
    assert_nginx_page(400, over_h2.headers, over_h2.body)


@pytest.mark.parametrize("target", ["/é", "/\udcff", "/?age=é"], ids=["UTF-8", "latin-1", "query"])
def test_a_raw_non_ascii_target_gets_nginx_400_page(proxy, target):
    raw = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    [answer] = answers(exchange(proxy, raw.encode("utf-8", "surrogateescape")))
    assert answer.status == 400
    assert_nginx_page(400, answer.headers, answer.body)
    over_h2 = h2_request(proxy, "GET", target)
    assert over_h2.status == 400
    assert_nginx_page(400, over_h2.headers, over_h2.body)


def header_lines(count: int, size: int = 1000) -> str:
    """Return `count` header lines of about `size` bytes each."""
    return "".join(f"X-Pad-{i}: {'a' * (size - 12)}\r\n" for i in range(count))


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (f"GET /{'a' * 5000} HTTP/1.1\r\nHost: x\r\n", 414),  # a request line over 4 KiB
        (f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 5000}\r\n", 431),  # a header over 4 KiB
        (f"GET / HTTP/1.1\r\nHost: x\r\n{header_lines(16)}", 431),  # 16 KiB, Waitress's limit
        (f"GET / HTTP/1.1\r\nHost: x\r\n{header_lines(30)}", 431),  # 30 KiB: nginx's default
    ],
    ids=["request line", "one header", "16 KiB", "30 KiB"],
)
def test_a_request_head_larger_than_the_app_needs_gets_nginx_page(proxy, head, status):
    [answer] = answers(exchange(proxy, (head + "Connection: close\r\n\r\n").encode()))
    assert answer.status == status
    assert_nginx_page(status, answer.headers, answer.body)


def test_the_largest_head_nginx_accepts_still_reaches_the_app_under_waitress_limit(proxy):
    head = f"GET / HTTP/1.1\r\nHost: x\r\n{header_lines(12)}Connection: close\r\n\r\n"
    assert len(head) > 12 * 1000
    [answer] = answers(exchange(proxy, head.encode()))
    assert answer.status == 200  # the app's form: not Waitress's 431
    over_h2 = h2_request(proxy, "GET", "/", [(f"x-pad-{i}", "a" * 988) for i in range(11)])
    assert over_h2.status == 200


def test_a_http2_header_block_over_the_limit_ends_the_connection_with_a_clear_code(proxy):
    # HTTP/2 has no page for it: nginx answers with GOAWAY, ENHANCE_YOUR_CALM, at once.
    answer = h2_request(proxy, "GET", "/", [(f"x-pad-{i}", "a" * 988) for i in range(16)])
    assert (answer.status, answer.reset) == (None, "ENHANCE_YOUR_CALM")


# One address cannot hold the connections others need.


def test_sixteen_keep_alive_connections_from_one_address_are_not_limited(proxy):
    """The benchmarks' shape (bench/proxy.py: 16 connections from 127.0.0.1) stays unthrottled."""

    def client(_):
        context = proxy.tls()
        conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=5, context=context)
        statuses = []
        for _ in range(25):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()
        return statuses

    with ThreadPoolExecutor(16) as pool:
        statuses = [status for result in pool.map(client, range(16)) for status in result]
    assert statuses == [200] * 16 * 25


def test_the_owners_pages_answer_429_past_their_rate_from_one_address(proxy):
    source = "127.0.0.9"  # an address of this test's own: the proxy is shared

    def get(path: str) -> Answer:
        raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        [answer] = answers(exchange(proxy, raw, source))
        return answer

    # The burst (limit_req's burst=10, and the one request its rate allows), on both pages;
    # the app answers 404, as no password is set. Then nginx's 429, on either page.
    statuses = [get(path).status for path in ["/results", "/results.csv"] * 6 + ["/results"]]
    assert statuses == [404] * 11 + [429] * 2
    refused = get("/results.csv")
    assert refused.status == 429
    assert_nginx_page(429, refused.headers, refused.body)
    assert get("/").status == 200  # the form is not limited
    # Those let through reached the app over HTTPS, from the client's address: the settings of
    # `location /` hold in the owner's location.
    deadline = time.monotonic() + 10  # the app writes its log from a thread of its own

    def seen() -> list[list[str]]:
        logged = app_log(proxy, "/results", 0) + app_log(proxy, "/results.csv", 0)
        return [fields[:3] for fields in logged if fields[0] == source]

    while len(seen()) < 11 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen() == [[source, "https", "GET"]] * 11


@pytest.fixture(scope="module")
def owner_proxy(tmp_path_factory):
    """A proxy with the owner's password set ("pw"), in front of one instance, which counts
    every wrong password (each instance counts its own)."""
    environ = {"WEB_CONCURRENCY": "1", "RESULTS_PASSWORD_HASH": owner.hash_password("pw")}
    running = start_proxy(tmp_path_factory.mktemp("owner"), environ)
    yield running
    assert running.server.stop() == 0, running.server.output()


def test_the_apps_own_429_for_wrong_passwords_comes_through_nginx_as_it_made_it(owner_proxy):
    def get(password: str) -> Answer:
        credentials = base64.b64encode(f"owner:{password}".encode()).decode()
        headers = f"Host: x\r\nAuthorization: Basic {credentials}\r\nConnection: close"
        raw = f"GET /results HTTP/1.1\r\n{headers}\r\n\r\n".encode()
        [answer] = answers(exchange(owner_proxy, raw, "127.0.0.10"))
        return answer

    assert get("pw").status == 200
    assert [get("wrong").status for _ in range(owner.BURST)] == [401] * owner.BURST
    throttled = get("another guess")  # the right one is remembered: let in without a try
    assert throttled.status == 429
    assert throttled.values("Retry-After") == [str(owner.INTERVAL)]
    assert throttled.values("Cache-Control") == ["no-store"]
    assert throttled.values("X-Robots-Tag") == ["noindex"]
    assert b"Too many wrong passwords came from your address." in throttled.body
    assert_edge_headers(throttled.headers)


@pytest.fixture(scope="module")
def crowded_proxy(tmp_path_factory):
    """A proxy of this module's own, for the test that fills it with 1,700 connections."""
    raise_open_file_limit()
    running = start_proxy(tmp_path_factory.mktemp("crowded"))
    yield running
    assert running.server.stop() == 0, running.server.output()


SLOW_BODY_LENGTH = 1000


@pytest.mark.stress
def test_idle_connections_and_slow_bodies_from_one_address_leave_room_for_another(crowded_proxy):
    proxy = crowded_proxy
    head = (
        f"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {SLOW_BODY_LENGTH}\r\n\r\nage="
    ).encode()
    idle, slow, refused = [], [], []
    stop = threading.Event()
    one_at_a_time = threading.Lock()  # a TLS connection must not be read and written at once

    def trickle():
        """Send each slow body a byte a second, never finishing it."""
        while not stop.wait(1):
            with one_at_a_time:
                for sock in slow:
                    try:
                        sock.sendall(b"1")
                    except OSError:
                        pass

    thread = threading.Thread(target=trickle)
    try:
        idle += [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(600)]
        started = time.monotonic()
        for _ in range(1100):
            sock = proxy.connect("127.0.0.1")
            sock.sendall(head)
            slow.append(sock)
        thread.start()
        opened = time.monotonic() - started
        # Those over the limit were refused at once, with a page; the others are being read.
        time.sleep(0.5)
        for sock in slow:
            sock.settimeout(0.1)
            response = http.client.HTTPResponse(sock)
            with one_at_a_time:
                try:
                    response.begin()
                except TimeoutError:
                    continue  # let in: nginx is reading its body
                body = response.read()
            refused.append(sock)
            assert response.status == 429
            assert_nginx_page(429, response.getheaders(), body)
        assert len(refused) == 1100 - 32, f"{len(refused)} refused (opened in {opened:.1f} s)"

        # Meanwhile a person at another address gets the form and submits it.
        other = time.monotonic()
        with proxy.connect("127.0.0.2") as sock:
            conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=2)
            conn.sock = sock
            conn.request("GET", "/")
            page = conn.getresponse()
            assert page.status == 200 and b"<form" in page.read()
            body = encoded()
            conn.request("POST", "/", body, {"Content-Type": FORM, "Origin": proxy.url})
            result = conn.getresponse()
            assert result.read() == b""
            conn.request("GET", assert_saved(result.status, result.getheader("Location")))
            saved = conn.getresponse()
            assert f"Age: {app.EXAMPLE['age'][0]}<br>".encode() in saved.read()
        assert time.monotonic() - other < 1
        # The slow bodies that were let in were never passed to the app: nginx holds them.
        assert app_log(proxy, "/slow", timeout=0) == []
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for sock in idle + slow:
            sock.close()


def test_the_apps_own_400_and_413_get_nginx_pages_with_a_general_message(proxy):
    # The price of replacing Waitress's bare 400 (docs/security.md): the app's particular
    # messages for a bad %-escape or too many fields give way to its general one for the status.
    fields = "&".join(f"f{i}=x" for i in range(guards.MAX_FIELDS + 1)).encode()
    for body, status in [(b"age=%FF", 400), (fields, 413)]:
        answer = request(proxy, "POST", "/", body, {"Content-Type": FORM})
        assert answer.status == status
        assert_nginx_page(status, answer.headers, answer.body)
        assert error_pages.MESSAGES[status].encode() in answer.body
