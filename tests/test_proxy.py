"""The shipped reverse proxy (deploy/): nginx terminating TLS in front of the Procfile's Waitress.

The tests start it with deploy/run_proxy.py, as `make run-proxy` does, on free loopback ports.
"""

import fcntl
import os
import re
import signal
import socket
import threading
import time

import pytest
import webtest
from bottle import FormsDict
from helpers import (
    SITE,
    URLENCODED,
    Proxy,
    alive,
    answers,
    app_log,
    assert_saved,
    cleaned,
    encoded,
    exchange,
    fill,
    request,
    require,
    result_line,
    saved_page,
    start_proxy,
    stop_unread,
)

import app
import deploy.servers
import guards
import shutdown
from deploy import error_pages, run_proxy
from deploy.audit import result_text
from deploy.servers import (
    PROXY_COMMAND,
    Server,
    descendants,
    free_port,
    free_ports,
    spawn,
    wait_until_listening,
)

# nginx's configuration syntax, as far as deploy/form-app.conf uses it.
TOKEN = re.compile(
    r"""
    \#[^\n]*                          # a comment
    | "(?P<double>(?:[^"\\]|\\.)*)"    # a string in double quotes
    | '(?P<single>(?:[^'\\]|\\.)*)'    # or in single ones
    | (?P<punctuation>[;{}])
    | (?P<word>[^\s;{}"']+)
    """,
    re.VERBOSE,
)


def directives(text: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """Return an nginx configuration's directives: (enclosing blocks, [name, *arguments])."""
    found, blocks, words = [], [], []
    for match in TOKEN.finditer(text):
        punctuation = match["punctuation"]
        if punctuation == ";":
            found.append((tuple(blocks), words))
            words = []
        elif punctuation == "{":
            blocks.append(words[0])
            words = []
        elif punctuation == "}":
            blocks.pop()
        elif match.lastgroup:  # a word or a string; a comment has no group
            words.append(match[match.lastgroup])
    return found


def site(name: str, block: str) -> list[list[str]]:
    """Return the arguments of each `name` directive directly inside a block of the site file."""
    return [
        words[1:]
        for blocks, words in directives(SITE.read_text())
        if words[0] == name and blocks[-1:] == (block,)
    ]


def nginx_log(proxy, path: str) -> list[str]:
    """Return nginx's access-log lines for a path."""
    log = (proxy.run_dir / "access.log").read_text()
    return [line for line in log.splitlines() if f'{path}"' in line]


def assert_security_headers_once(headers: list[tuple[str, str]]):
    """Check that a response has each of the app's security headers, once, with its value."""
    for name, value in guards.SECURITY_HEADERS:
        assert [v for key, v in headers if key.lower() == name.lower()] == [value], name


@pytest.fixture
def proxyapp(proxy, monkeypatch):
    """The app through nginx as a webtest.TestApp, over HTTPS, trusting nginx's certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.certificate))  # read by each new SSL context
    return webtest.TestApp(proxy.url)


# The configuration, checked against the app's own settings.


def test_nginx_sends_the_apps_security_headers_instead_of_the_apps_copies():
    # Both server blocks (HTTPS, then port 80) send them; HTTPS adds Strict-Transport-Security.
    headers = [[name, value, "always"] for name, value in guards.SECURITY_HEADERS]
    hsts = ["Strict-Transport-Security", "max-age=63072000; includeSubDomains", "always"]
    assert site("add_header", "server") == [*headers, hsts, *headers]
    assert site("proxy_hide_header", "location") == [[name] for name, _ in guards.SECURITY_HEADERS]


# What bounds a slow or idle client; port 80's defaults would hold one for 60 s and more.
SLOW_CLIENT_LIMITS = [
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "keepalive_timeout",
    "limit_conn",
    "limit_conn_status",
]


@pytest.mark.parametrize("name", SLOW_CLIENT_LIMITS)
def test_port_80_bounds_slow_clients_as_https_does(name):
    https, port_80 = site(name, "server")  # the two server blocks, in the file's order
    assert port_80 == https


def test_nginx_closes_idle_upstream_connections_before_waitress_does():
    [[timeout]] = site("keepalive_timeout", "upstream")
    assert int(timeout.removesuffix("s")) < app.SERVER["channel_timeout"]
    # A draining instance waits for nginx to close them rather than cut them under it: nginx
    # must do so well within the drain, or the drain's end cuts them after all.
    assert int(timeout.removesuffix("s")) <= shutdown.DRAIN_SECONDS / 2


def test_a_post_is_passed_to_another_instance_only_if_it_was_never_sent():
    assert site("proxy_next_upstream", "location") == [["error", "timeout"]]  # no non_idempotent


def test_nginx_error_pages_are_the_apps_error_template():
    # 494 is nginx's own code for a header block over large_client_header_buffers: sent as 431.
    pages = [[str(status), f"/nginx-errors/{status}.html"] for status in error_pages.MESSAGES]
    pages.insert(pages.index(["502", "/nginx-errors/502.html"]), ["494", "=431", pages[4][1]])
    assert site("error_page", "server") == pages
    for name, html in error_pages.pages().items():
        assert (error_pages.ERRORS / name).read_text() == html, (
            "run `.venv/bin/python -m deploy.error_pages` to write the pages again"
        )


def test_the_owners_pages_keep_every_proxy_setting_and_add_a_rate_per_address():
    found = directives(SITE.read_text())
    nested = [words for blocks, words in found if blocks == ("server", "location", "location")]
    [[proxy_pass]] = site("proxy_pass", "location")[:1]
    # Only these: any other proxy_set_header, proxy_hide_header or add_header here would replace,
    # not add to, the ones `location /` and the server block set (nginx inherits a directive only
    # where it is unset).
    assert nested == [
        ["limit_req", "zone=form_app_owner", "burst=10", "nodelay"],
        ["limit_req_status", "429"],
        ["proxy_intercept_errors", "off"],  # the app's 429 with its Retry-After
        ["proxy_pass", proxy_pass],
    ]
    zones = [words[1:] for blocks, words in found if words[0] == "limit_req_zone"]
    assert zones == [["$binary_remote_addr", "zone=form_app_owner:10m", "rate=6r/m"]]


# The form and the app's answers, through nginx over HTTPS.


@pytest.mark.parametrize("name", ["localhost", "form.test", "127.0.0.1"])
def test_the_certificate_is_valid_for_the_local_names(proxy, name):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        proxy.tls().wrap_socket(sock, server_hostname=name).close()


def test_the_form_round_trip_through_the_proxy(proxyapp):
    sent = fill(proxyapp.get("/").form).submit()
    res = saved_page(sent)  # nginx passes on the app's Location as it is
    assert result_line(res) == result_text(cleaned())
    for answer in (sent, res):
        assert_security_headers_once(answer.headerlist)
        assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "says"),
    [
        ("GET", "/nowhere", b"", None, 404, app.ERROR_MESSAGES[404]),
        ("PUT", "/", b"", None, 405, app.ERROR_MESSAGES[405]),
        ("POST", "/", b"{}", "application/json", 415, app.ERROR_MESSAGES[415]),
        (
            "POST",
            "/",
            encoded(age=["x"]),
            URLENCODED,
            422,
            app.validate(FormsDict(age="x"))[1]["age"],
        ),
        ("POST", "/", b"age=%FF", URLENCODED, 400, error_pages.MESSAGES[400]),  # nginx's page
    ],
)
def test_the_apps_error_pages_come_through_with_each_header_once(
    proxyapp, method, path, body, content_type, status, says
):
    res = proxyapp.request(path, method=method, body=body, content_type=content_type, status=status)
    assert says in res.html.main.get_text()
    assert_security_headers_once(res.headerlist)


def test_same_origin_posts_keep_the_port_in_host_and_cross_origin_ones_are_refused(proxy):
    body = encoded()
    same = {
        "Content-Type": URLENCODED,
        "Origin": proxy.url,
    }  # http.client sends Host: 127.0.0.1:PORT
    answer = request(proxy, "POST", "/", body, same)
    [location] = answer.values("Location")
    assert_saved(answer.status, location)
    other = {"Content-Type": URLENCODED, "Origin": "https://evil.example"}
    assert request(proxy, "POST", "/", body, other).status == 403


# The body limit: nginx's and Waitress's agree.


def test_the_largest_body_waitress_accepts_passes_through_nginx(proxy):
    body = encoded() + b"&pad="
    body += b"x" * (guards.MAX_BODY - 1 - len(body))
    assert len(body) == guards.MAX_BODY - 1
    answer = request(proxy, "POST", "/", body, {"Content-Type": URLENCODED})
    [location] = answer.values("Location")
    saved = request(proxy, "GET", assert_saved(answer.status, location))
    assert f"Age: {app.EXAMPLE['age'][0]}<br>".encode() in saved.body


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_a_body_at_the_limit_gets_nginx_413_page_with_the_security_headers(proxy, framing):
    body = b"age=" + b"1" * (guards.MAX_BODY - 4)
    if framing == "chunked":
        body, head = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), "Transfer-Encoding: chunked"
    else:
        head = f"Content-Length: {len(body)}"
    path = f"/too-large-{framing}"
    raw = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {URLENCODED}\r\n{head}\r\n\r\n"
    [answer] = answers(exchange(proxy, raw.encode() + body))
    assert answer.status == 413
    assert answer.body == (error_pages.ERRORS / "413.html").read_bytes()
    assert answer.values("Content-Type") == ["text/html; charset=utf-8"]
    assert_security_headers_once(answer.headers)
    # nginx logs it as the POST it was, though error_page fetched the page with a GET. It logs
    # once its lingering close is over, which may be after the answer arrived: wait for the line.
    deadline = time.monotonic() + 10
    while not (lines := nginx_log(proxy, path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line.split("] ")[1].split(" ")[:4] for line in lines] == [
        ["https", '"POST', f'{path}"', "413"]
    ]


def test_nginx_502_page_when_the_app_is_down_has_the_apps_layout_and_headers(tmp_path):
    require("nginx")
    require("openssl")
    port = free_port()
    nothing_there = [f"127.0.0.1:{app_port}" for app_port in free_ports(2)]
    config = run_proxy.write_config(tmp_path, port, nothing_there)
    nginx = run_proxy.start_nginx(config)
    try:
        assert run_proxy.until_listening(nginx, port, threading.Event())
        answer = request(Proxy(port, tmp_path), "GET", "/")
    finally:
        assert Server(nginx, "127.0.0.1", port).stop(signal.SIGQUIT, timeout=10) == 0
    assert answer.status == 502
    assert answer.body == (error_pages.ERRORS / "502.html").read_bytes()
    assert_security_headers_once(answer.headers)


def test_nginx_takes_a_hung_instance_out_of_the_rotation_after_one_timeout(tmp_path, servers):
    require("nginx")
    require("openssl")
    live = servers("procfile")
    # Hung as a stopped or deadlocked instance is: its kernel accepts connections into the
    # listen backlog, and nothing ever reads them.
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = free_port()
        instances = [f"127.0.0.1:{hung.getsockname()[1]}", f"127.0.0.1:{live.port}"]
        config = run_proxy.write_config(tmp_path, port, instances)
        nginx = run_proxy.start_nginx(config)
        try:
            assert run_proxy.until_listening(nginx, port, threading.Event())
            proxy = Proxy(port, tmp_path)
            # nginx sends one of the first two to the hung instance (least_conn, with none in
            # progress, goes round as round-robin does): that GET waits for proxy_read_timeout
            # there, then gets its answer from the other, before the client gives up.
            gets = [request(proxy, "GET", "/healthz", timeout=10).status for _ in range(2)]
            # Then the hung one is out of the rotation (fail_timeout): a POST sent there would
            # wait as long, and get a 504, since nginx does not send a POST twice.
            headers = {"Content-Type": URLENCODED, "Origin": proxy.url}
            posts = [request(proxy, "POST", "/", encoded(), headers) for _ in range(4)]
        finally:
            assert Server(nginx, "127.0.0.1", port).stop(signal.SIGQUIT, timeout=10) == 0
    assert gets == [200, 200]
    assert [answer.status for answer in posts] == [303] * 4
    for answer in posts:
        [location] = answer.values("Location")
        assert_saved(answer.status, location)


# Waitress's edge faults (docs/security.md, "Known limits"), each sent through nginx.

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def test_expect_100_continue_without_a_body_gets_its_answer_and_not_the_next_ones(proxy):
    raw = (
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    got = answers(exchange(proxy, raw))
    final = [answer for answer in got if answer.status >= 200]
    assert [answer.status for answer in final] == [200, 200]
    assert b"<form" in final[0].body
    assert final[1].body == b"ok\n"
    # An interim 100 may come before the first answer; one before the second would mean the
    # second request inherited the first one's Expect.
    assert [answer.status for answer in got[got.index(final[0]) :]] == [200, 200]


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        (
            "Content-Length with Transfer-Encoding",
            b"POST /cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /te-http10 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n" + SMUGGLED,
        ),
        ("HTTP/1.1 without Host", b"GET /no-host HTTP/1.1\r\n\r\n" + SMUGGLED),
    ],
)
def test_ambiguous_requests_get_one_400_from_nginx_and_the_connection_closed(proxy, name, raw):
    got = answers(exchange(proxy, raw))  # returns only once nginx has closed the connection
    assert [answer.status for answer in got] == [400]
    assert_security_headers_once(got[0].headers)
    # The app logs a request before its answer leaves: had it answered, the line would be there.
    assert app_log(proxy, raw.split(b" ")[1].decode(), timeout=0) == [], "the app saw it"


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"<script>alert('reflected')</script>", 200),  # not a header: nginx drops the line
        (b"X-<script>:alert('reflected')</script>", 200),  # not a header name: dropped too
        (b"X-Bad <script>alert('reflected')</script>: x", 400),  # a space in a name: refused
        (b"X-Bad: <script>alert('reflected')</script>\x01", 400),  # a control character
    ],
)
def test_a_malformed_header_line_is_not_reflected(proxy, line, status):
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n" + line + b"\r\nConnection: close\r\n\r\n"
    received = exchange(proxy, raw)
    assert [answer.status for answer in answers(received)] == [status]
    assert b"reflected" not in received


def test_a_request_whose_lines_end_in_a_bare_lf_is_answered(proxy):
    # Waitress never answers one (docs/security.md); nginx reads it and passes it on in CRLF.
    raw = b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n"
    assert [answer.status for answer in answers(exchange(proxy, raw))] == [200]


def test_idle_and_slow_loris_clients_do_not_lock_out_a_normal_client(proxy):
    stop = threading.Event()
    idle = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(500)]
    loris = [proxy.connect() for _ in range(100)]

    def dribble():
        """Send each loris's request head a header at a time, never finishing it."""
        for sock in loris:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(0.5):
            for sock in loris:
                sock.sendall(b"X-Loris: 1\r\n")

    thread = threading.Thread(target=dribble)
    thread.start()
    try:
        time.sleep(1)  # let nginx take them all on
        for _ in range(3):
            started = time.monotonic()
            answer = request(proxy, "GET", "/", timeout=2)
            assert answer.status == 200
            assert b"<form" in answer.body
            assert time.monotonic() - started < 2  # the bound the issue sets
    finally:
        stop.set()
        thread.join()
        for sock in idle + loris:
            sock.close()


# Who the app sees.


def test_the_app_sees_the_clients_address_and_https_through_nginx(proxy):
    path = "/seen-through-nginx"
    forged = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n"
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n{forged}Connection: close\r\n\r\n"
    exchange(proxy, raw.encode(), source="127.0.0.2")
    assert [fields[:5] for fields in app_log(proxy, path)] == [
        ["127.0.0.2", "https", "GET", path, "404"]
    ]


def test_forwarded_headers_sent_straight_to_waitress_are_ignored(proxy):
    path = "/seen-straight"
    forged = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n{forged}Connection: close\r\n\r\n"
    address = ("127.0.0.1", proxy.app_port)
    with socket.create_connection(address, timeout=5, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(raw.encode())
        while sock.recv(65536):
            pass
    assert [fields[:5] for fields in app_log(proxy, path)] == [
        ["127.0.0.2", "http", "GET", path, "404"]
    ]


def test_nginx_logs_the_path_without_the_query_string(proxy):
    raw = b"GET /logged-by-nginx?age=secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    exchange(proxy, raw, source="127.0.0.2")
    [line] = nginx_log(proxy, "/logged-by-nginx")  # written before nginx closed the connection
    assert line.startswith("127.0.0.2 [")
    assert line.split("] ")[1].split(" ")[:4] == ["https", '"GET', '/logged-by-nginx"', "404"]
    assert "secret" not in (proxy.run_dir / "access.log").read_text()


@pytest.mark.parametrize("start", ["/saved/", "/%73aved/", "/saved%2F", "//SAVED/"])
def test_nginx_logs_the_saved_pages_path_without_its_token(proxy, start):
    token = "T0kenNotForTheLog" + start.strip("/%").upper()[:5].ljust(5, "x")
    raw = f"GET {start}{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    before = nginx_log(proxy, "/saved/<token>")
    exchange(proxy, raw, source="127.0.0.2")
    [line] = nginx_log(proxy, "/saved/<token>")[len(before) :]
    assert line.startswith("127.0.0.2 [")
    assert token not in (proxy.run_dir / "access.log").read_text()


# make run-proxy's script itself.


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["Ctrl-C", "SIGTERM", "hang-up"]
)
def test_run_proxy_stops_nginx_and_the_app_and_exits_0(tmp_path, sig):
    running = start_proxy(tmp_path)
    assert f"Serving the form on {running.url}/ " in running.server.output()
    assert request(running, "GET", "/healthz").body == b"ok\n"
    children = descendants(running.server.process.pid)
    assert len(children) == len(running.app_ports) + 2  # the app's, nginx's master and worker
    assert running.server.stop(sig) == 0, running.server.output()
    assert [pid for pid in children if alive(pid)] == []


def status_line(proxy, request: bytes) -> bytes:
    """Send a request on a new connection and return its answer's status line, without waiting
    for nginx to close the connection (after a 413 it waits 5 s for the body: lingering_timeout)."""
    with proxy.connect() as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_run_proxy_answers_while_nobody_reads_its_output(tmp_path):
    require("nginx")
    require("openssl")
    # A terminal that stalls: a pipe that holds 4 KiB (a page; 64 KiB by default), which some
    # twenty of nginx's error lines fill, then writes to it block.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    port, http_port = free_ports(2)
    environ = {
        "PORT": str(port),
        "HTTP_PORT": str(http_port),
        "RUN_DIR": str(tmp_path / "run"),
        "WEB_CONCURRENCY": "1",
    }
    with os.fdopen(write_end, "wb") as out:
        process = spawn(PROXY_COMMAND, environ, out)
    try:
        assert wait_until_listening(process, port)
        proxy = Proxy(port, tmp_path / "run")
        # A body over client_max_body_size: nginx answers 413 and logs an error line for each.
        over = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {guards.MAX_BODY * 2}\r\n\r\n"
        statuses = [status_line(proxy, over.encode()) for _ in range(200)]
        assert statuses == [b"HTTP/1.1 413 Request Entity Too Large"] * 200
        assert request(proxy, "GET", "/healthz").body == b"ok\n"
    finally:
        assert stop_unread(process, read_end) == 0


def test_run_proxys_instances_never_take_the_ports_chosen_for_nginx(monkeypatch):
    """Nothing listens on nginx's ports until nginx starts, after the instances: a free port
    found for an instance may be one of them (CI once saw it)."""
    found = iter([8001, 8001, 8443, 8002])
    monkeypatch.setattr(deploy.servers, "free_port", lambda host="127.0.0.1": next(found))
    assert deploy.servers.free_ports(2, taken=frozenset({8443, 8880})) == [8001, 8002]
