"""Serve the app behind the shipped nginx configuration, on this machine: `make run-proxy`
(`python -m deploy.run_proxy` from the project folder).

nginx terminates TLS on https://127.0.0.1:$PORT/ (PORT defaults to 8443) with a self-signed
certificate made on first use, and balances over $WEB_CONCURRENCY instances of the app (default:
the number of CPUs), each started as deploy/form-app@.service starts it: the Procfile's web:
command with HOST=127.0.0.1 and its own free loopback PORT. Like systemd's Restart=always, an
instance that exits is started again on the same port, so SIGTERM to one instance here is what
`systemctl restart form-app@PORT` is on a server; like its WatchdogSec=, one that hangs (no
WATCHDOG=1 on its $NOTIFY_SOCKET for WATCHDOG_SECONDS: notify.py) is killed and started again.
http://127.0.0.1:$HTTP_PORT/ (8880 by default: `make run` has 8080) redirects to HTTPS and
serves the ACME challenge folder. Both also listen on
[::1] where the machine has IPv6. deploy/form-app.conf is used as it is, with its placeholders
filled in and the two lines that depend on nginx's and OpenSSL's versions adapted to this
machine's; only the top-level nginx.conf (pid, temp and log paths, foreground, connection limits)
is this script's own. All servers run as children of this script; Ctrl-C or SIGTERM stops nginx
(letting requests in flight finish), then the instances (which drain their own), and exits 0.
Their files go in .run/proxy/, or in $RUN_DIR if set.
"""

import atexit
import functools
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import logs
from deploy import servers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SITE = HERE / "form-app.conf"

# Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PACKAGES = {"nginx": "nginx-light", "openssl": "openssl"}


def program(name: str) -> str:
    """Return the path of a program this script needs, or stop with how to install it."""
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        sys.exit(f"{name} not found: install it with `apt-get install {PACKAGES[name]}`")
    return path


def certificate(folder: Path) -> tuple[Path, Path]:
    """Return a self-signed certificate and its key, made unless one valid for 14 days is there
    (`make audit` wants a week left, as it would of a real one)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    valid = cert.exists() and key.exists()
    if valid:
        days = str(14 * 86400)
        check = [program("openssl"), "x509", "-checkend", days, "-noout", "-in", str(cert)]
        valid = subprocess.run(check, capture_output=True).returncode == 0
    if not valid:
        names = "subjectAltName=DNS:localhost,DNS:form.test,IP:127.0.0.1"
        make = [program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                "-addext", names, "-keyout", str(key), "-out", str(cert)]  # fmt: skip
        made = subprocess.run(make, capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"openssl could not make a certificate:\n{made.stderr}")
        key.chmod(0o600)  # openssl keeps an existing file's mode
    return cert, key


def site_config(values: dict[str, str | None], app_addresses: list[str]) -> str:
    """Return deploy/form-app.conf with each placeholder (@NAME@) replaced by its value (a line
    whose placeholder's value is None is left out), and each line that holds @APP_ADDRESS@ (the
    upstream's `server` lines) written once for each instance."""
    text = SITE.read_text()
    placeholders = set(re.findall(r"@([A-Z_0-9]+)@", text))
    if placeholders != {*values, "APP_ADDRESS"}:
        raise ValueError(f"{SITE} has placeholders {placeholders}, given {set(values)}")
    text = re.sub(
        r"^.*@APP_ADDRESS@.*$",
        lambda line: "\n".join(line[0].replace("@APP_ADDRESS@", at) for at in app_addresses),
        text,
        flags=re.MULTILINE,
    )
    for name, value in values.items():
        if value is None:
            text = re.sub(rf"^.*@{name}@.*\n", "", text, flags=re.MULTILINE)
        text = text.replace(f"@{name}@", value or "")
    return text


def versions(nginx: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the versions of nginx and of the OpenSSL it runs with, as `nginx -V` reports them."""
    report = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    nginx_version = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", report)
    # "running with" is there only when the library differs from the one nginx was built with.
    openssl = re.findall(r"(?:built|running) with OpenSSL (\d+)\.(\d+)\.(\d+)", report)
    if nginx_version is None or not openssl:
        raise ValueError(f"cannot read the versions in `nginx -V`: {report!r}")
    return tuple(map(int, nginx_version.groups())), tuple(map(int, openssl[-1]))


def for_versions(site: str, nginx: tuple[int, ...], openssl: tuple[int, ...]) -> str:
    """Return the site adapted to older nginx and OpenSSL than the Debian 13 it is written for."""
    if nginx < (1, 25, 1):  # no `http2` directive: HTTP/2 is a parameter of listen
        site, http2 = re.subn(r"^\s*http2 on;\n", "", site, flags=re.MULTILINE)
        if http2:  # a site without it gets no HTTP/2 here either
            site = re.sub(r"^(\s*listen \S+ ssl);", r"\1 http2;", site, flags=re.MULTILINE)
    if openssl < (3, 5, 0):  # no post-quantum hybrid key exchange
        site = site.replace("ssl_ecdh_curve X25519MLKEM768:", "ssl_ecdh_curve ")
    return site


def has_ipv6() -> bool:
    """Tell whether this machine can listen on IPv6's loopback address."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def write_config(
    folder: Path,
    port: int,
    app_addresses: list[str],
    http_port: int | None = None,
    listen_host: str = "127.0.0.1",
) -> Path:
    """Write nginx.conf (foreground, files in `folder`) around the site; return its path.

    HTTPS on `port`, plain HTTP on `http_port` (a free one if not given), on `listen_host` and,
    where the machine has IPv6, ::1; `app_addresses` are the instances' host:port.
    """
    cert, key = certificate(folder)
    http_port = http_port or servers.free_port()
    webroot = folder / "acme"  # certbot --webroot -w: the tokens go in .well-known/acme-challenge/
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    ipv6 = has_ipv6() and listen_host == "127.0.0.1"
    site = folder / "form-app.conf"
    text = site_config(
        {
            "LISTEN": f"{listen_host}:{port}",
            "LISTEN_IPV6": f"[::1]:{port}" if ipv6 else None,
            "HTTP_LISTEN": f"{listen_host}:{http_port}",
            "HTTP_LISTEN_IPV6": f"[::1]:{http_port}" if ipv6 else None,
            "HTTPS_URL_PORT": "" if port == 443 else f":{port}",
            "ACME_WEBROOT": str(webroot),
            "SERVER_NAME": "localhost",
            "CERTIFICATE": str(cert),
            "CERTIFICATE_KEY": str(key),
            "ERROR_PAGES": str(HERE / "errors"),
            "ACCESS_LOG": str(folder / "access.log"),
        },
        app_addresses,
    )
    site.write_text(for_versions(text, *versions(program("nginx"))))
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    user = ""
    if os.geteuid() == 0:
        # As root, nginx runs its workers as `user` (nobody by default), and they read
        # deploy/errors and write the temp folders: make them the checkout's owner, who can.
        owner = ROOT.stat()
        user = f"user {pwd.getpwuid(owner.st_uid).pw_name} {grp.getgrgid(owner.st_gid).gr_name};"
    config = folder / "nginx.conf"
    config.write_text(f"""\
# Written by deploy/run_proxy.py for `make run-proxy`; the site is deploy/form-app.conf.
daemon off;  # a child of run_proxy.py, which stops it
{user}
worker_processes 1;
worker_shutdown_timeout 10s;  # a graceful stop waits no longer for requests in flight
pid {folder / "nginx.pid"};
# Room for idle connections, which the site's per-address limit does not count: 4096 a worker,
# each a file, and as many files again for logs, pages and the certificate (deploy/README.md).
worker_rlimit_nofile 8192;

events {{
    worker_connections 4096;
}}

http {{
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    include {site};
}}
""")
    return config


def start_nginx(config: Path, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start nginx in the foreground with its configuration and files in the config's folder,
    its error log forwarded to this process's stderr (forward_error_log).

    `wrapper` runs it through another command (the tests' `ip netns exec NAME`).
    """
    prefix = f"{config.parent}/"
    command = [*wrapper, program("nginx"), "-p", prefix, "-c", str(config), "-e", "stderr"]
    nginx = subprocess.Popen(command, stderr=subprocess.PIPE, process_group=0)
    threading.Thread(
        target=forward_error_log, args=(nginx.stderr,), name="nginx error log", daemon=True
    ).start()
    return nginx


@functools.cache
def error_log() -> logging.Logger:
    """Return the logger that writes nginx's error lines to stderr, as nginx wrote them, through
    the app's bounded queue and writer thread (logs.py)."""
    writer = logs.LineWriter(sys.stderr)
    writer.setFormatter(logs.OneLineFormatter("%(message)s"))
    atexit.register(logs.flush, writer)
    logger = logging.getLogger("nginx")
    logger.addHandler(writer)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # only here, once
    return logger


def forward_error_log(pipe) -> None:
    """Pass nginx's error lines on, never waiting for the stream they go to.

    nginx writes its error log with blocking writes, from the worker that serves requests: to a
    stderr nobody reads (a terminal paused with Ctrl-S, a pipe to a stalled reader) some 300
    lines (a 413 logs one) would block the worker, and every client with it. So nginx writes to
    a pipe that this thread always reads; logs.py queues each line for this process's stderr
    and, while that stream stalls, counts and drops what does not fit.
    """
    logger = error_log()
    with pipe:
        for line in pipe:
            logger.info(line.decode(errors="backslashreplace").rstrip("\n"))


def until_listening(process: subprocess.Popen, port: int, stop: threading.Event) -> bool:
    """Wait until a child listens on the port; False if it exits, or if we are told to stop."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not stop.is_set():
        if servers.wait_until_listening(process, port, timeout=0.2):
            return True
        if process.poll() is not None:
            return False
    return False


def instance_count() -> int:
    """Return how many app instances to run: $WEB_CONCURRENCY, else one per CPU."""
    count = os.environ.get("WEB_CONCURRENCY") or str(os.cpu_count() or 1)
    if not (count.isascii() and count.isdigit() and 0 < int(count) <= 64):
        sys.exit(f"WEB_CONCURRENCY must be a number of instances from 1 to 64, not {count!r}")
    return int(count)


# systemd's default start limit: an instance that exits this many times within this many seconds
# is not started again (a port taken by someone else, an app that cannot start).
START_LIMIT_BURST, START_LIMIT_SECONDS = 5, 10
# deploy/form-app@.service's WatchdogSec=: an instance that said READY=1 and then sends no
# WATCHDOG=1 for this long is hung (notify.py), and is killed and started again. Its
# TimeoutStopSec=: once it says STOPPING=1, it has this long to finish its drain and exit.
WATCHDOG_SECONDS, STOP_SECONDS = 5, 30


class Instances:
    """The app's instances, each kept running on its own port as systemd's Restart=always does,
    and, as its WatchdogSec= does, killed and started again when it hangs."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.running: dict[int, servers.Server] = {}
        self.starts: dict[int, list[float]] = {port: [] for port in ports}
        self.ready: dict[int, bool] = {}
        # Each instance's $NOTIFY_SOCKET, where it says READY=1, WATCHDOG=1 and STOPPING=1, as it
        # would to systemd: in a folder of this user's alone, so that no one else can ping for it,
        # and short, since a socket's path may not be longer than 107 bytes.
        self.notify_folder = tempfile.TemporaryDirectory(prefix="form-app-notify-")
        self.notify: dict[int, socket.socket] = {}
        for port in ports:
            self.notify[port] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify[port].bind(f"{self.notify_folder.name}/{port}")
            self.notify[port].setblocking(False)
        self.deadline: dict[int, float | None] = {}  # when its watchdog kills it, once armed

    def start(self, port: int):
        """Start the instance for a port."""
        self.heard(port)  # what the one before it said is not this one's
        self.starts[port].append(time.monotonic())
        process = servers.spawn_instance(port, notify_socket=self.notify[port].getsockname())
        self.running[port] = servers.Server(process, "127.0.0.1", port)
        self.ready[port] = False
        self.deadline[port] = None  # armed by READY=1, as systemd's is once start-up completes

    def heard(self, port: int) -> list[str]:
        """Return what the instance on a port has said since last asked."""
        said = []
        while True:
            try:
                said += self.notify[port].recv(4096).decode(errors="replace").split("\n")
            except BlockingIOError:
                return said

    def watch(self) -> bool:
        """Start again each instance that exited, kill one that hangs, say when one listens;
        False past the start limit."""
        for port, instance in self.running.items():
            status = instance.process.poll()
            if status is not None:
                recent = [
                    t for t in self.starts[port] if t > time.monotonic() - START_LIMIT_SECONDS
                ]
                if len(recent) >= START_LIMIT_BURST:
                    print(
                        f"run_proxy: the instance on port {port} exited {len(recent)} times "
                        f"within {START_LIMIT_SECONDS} s; not starting it again",
                        file=sys.stderr,
                    )
                    return False
                print(
                    f"run_proxy: the instance on port {port} exited with {status}; "
                    "starting it again"
                )
                self.start(port)
                continue
            said = self.heard(port)
            if "STOPPING=1" in said:
                self.deadline[port] = time.monotonic() + STOP_SECONDS
            elif "READY=1" in said or "WATCHDOG=1" in said:
                self.deadline[port] = time.monotonic() + WATCHDOG_SECONDS
            deadline = self.deadline[port]
            if deadline is not None and time.monotonic() > deadline:
                print(
                    f"run_proxy: the instance on port {port} (pid {instance.process.pid}) "
                    "hangs: no watchdog ping or exit in time; killing it",
                    file=sys.stderr,
                )
                instance.process.kill()  # SIGKILL: a stopped or deadlocked process acts on no other
                self.deadline[port] = None
            elif not self.ready[port] and servers.listens(instance.process.pid, port):
                self.ready[port] = True
                print(
                    f"run_proxy: app instance on http://127.0.0.1:{port} "
                    f"(pid {instance.process.pid})",
                    flush=True,
                )
        return True

    def stop(self) -> bool:
        """Stop every instance at once (each drains its own); tell whether all exited 0."""
        for instance in self.running.values():
            if instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        stopped = all(
            [instance.stop(signal.SIGTERM, timeout=30) == 0 for instance in self.running.values()]
        )
        for sock in self.notify.values():
            sock.close()
        self.notify_folder.cleanup()
        return stopped


def serve(
    children: dict,
    instances: Instances,
    port: int,
    config: Path,
    stop: threading.Event,
    http_port: int,
) -> int:
    """Start the app's instances, then nginx in front of them, and watch them until told to stop."""
    for busy in (port, http_port, *instances.ports):
        if servers.listening(busy):
            print(f"run_proxy: port {busy} is in use already", file=sys.stderr)
            return 1
    for app_port in instances.ports:
        instances.start(app_port)
    for app_port, instance in instances.running.items():
        if not until_listening(instance.process, app_port, stop):
            if stop.is_set():
                return 0
            print(f"run_proxy: the app did not listen on port {app_port}", file=sys.stderr)
            return 1
    instances.watch()  # says where each listens
    children["nginx"] = servers.Server(start_nginx(config), "127.0.0.1", port)
    if not until_listening(children["nginx"].process, port, stop):
        if stop.is_set():
            return 0
        print(f"run_proxy: nginx did not listen on port {port}", file=sys.stderr)
        return 1
    urls = " ".join(f"http://127.0.0.1:{app_port}" for app_port in instances.ports)
    print(
        f"Serving the form on https://127.0.0.1:{port}/ (nginx, self-signed certificate "
        f"{config.parent / 'cert.pem'}) in front of {len(instances.ports)} app instance(s): "
        f"{urls}; http://127.0.0.1:{http_port}/ redirects there; Ctrl-C stops them all",
        flush=True,
    )
    while not stop.wait(0.05):
        if children["nginx"].process.poll() is not None:
            print(
                f"run_proxy: nginx exited with {children['nginx'].process.returncode}",
                file=sys.stderr,
            )
            return 1
        if not instances.watch():
            return 1
    return 0


def stop_all(children: dict[str, servers.Server], instances: Instances) -> bool:
    """Stop nginx, then the instances; tell whether all exited 0."""
    statuses = []
    # nginx first, gracefully (SIGQUIT): it finishes the requests in flight, and no new ones
    # reach the app while the instances drain their own (SIGTERM, shutdown.py).
    if "nginx" in children:
        statuses.append(children["nginx"].stop(signal.SIGQUIT, timeout=15) == 0)
    statuses.append(instances.stop())
    return all(statuses)


def port_setting(name: str, default: str) -> int:
    """Return a port number from the environment, or stop with what is wrong with it."""
    port = os.environ.get(name, default)
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        sys.exit(f"{name} must be a port number from 1 to 65535, not {port!r}")
    return int(port)


def main() -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(sig, lambda signum, frame: stop.set())
    port, http_port = port_setting("PORT", "8443"), port_setting("HTTP_PORT", "8880")
    count = instance_count()
    folder = Path(os.environ.get("RUN_DIR", ROOT / ".run" / "proxy")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Not nginx's ports: nothing listens there yet (CI once saw an instance take PORT).
    instances = Instances(servers.free_ports(count, taken=frozenset({port, http_port})))
    addresses = [f"127.0.0.1:{app_port}" for app_port in instances.ports]
    config = write_config(folder, port, addresses, http_port)
    children: dict[str, servers.Server] = {}
    try:
        status = serve(children, instances, port, config, stop, http_port)
    finally:
        stopped = stop_all(children, instances)
    if not stopped:
        print("run_proxy: nginx or an app instance did not stop cleanly", file=sys.stderr)
    return status if stopped else 1


if __name__ == "__main__":
    sys.exit(main())
