"""Serve the app behind the shipped nginx configuration, on this machine: `make run-proxy`
(`python -m deploy.run_proxy` from the project folder).

nginx terminates TLS on https://127.0.0.1:$PORT/ (PORT defaults to 8443) with a self-signed
certificate made on first use, and forwards to the app, started as the Procfile's web: command on a
free loopback port; http://127.0.0.1:$HTTP_PORT/ (8880 by default: `make run` has 8080) redirects
there and serves the ACME challenge folder. Both also listen on [::1] where the machine has IPv6.
deploy/form-app.conf is used as it is, with its placeholders filled in and the two lines that
depend on nginx's and OpenSSL's versions adapted to this machine's; only the top-level nginx.conf
(pid, temp and log paths, foreground, connection limits) is this script's own. Both servers run
as children of this script; Ctrl-C or SIGTERM stops nginx (letting requests in flight finish), then
the app (which drains its own), and exits 0. Their files go in .run/proxy/, or in $RUN_DIR if set.
"""

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def site_config(values: dict[str, str | None]) -> str:
    """Return deploy/form-app.conf with each placeholder (@NAME@) replaced by its value; a line
    whose placeholder's value is None is left out."""
    text = SITE.read_text()
    placeholders = set(re.findall(r"@([A-Z_0-9]+)@", text))
    if placeholders != values.keys():
        raise ValueError(f"{SITE} has placeholders {placeholders}, given {set(values)}")
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
        site = re.sub(r"^\s*http2 on;\n", "", site, flags=re.MULTILINE)
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


def write_config(folder: Path, port: int, app_port: int, http_port: int | None = None) -> Path:
    """Write nginx.conf (foreground, files in `folder`) around the site; return its path.

    HTTPS on `port`, plain HTTP on `http_port` (a free one if not given), on 127.0.0.1 and ::1.
    """
    cert, key = certificate(folder)
    http_port = http_port or servers.free_port()
    webroot = folder / "acme"  # certbot --webroot -w: the tokens go in .well-known/acme-challenge/
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    ipv6 = has_ipv6()
    site = folder / "form-app.conf"
    text = site_config(
        {
            "LISTEN": f"127.0.0.1:{port}",
            "LISTEN_IPV6": f"[::1]:{port}" if ipv6 else None,
            "HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "HTTP_LISTEN_IPV6": f"[::1]:{http_port}" if ipv6 else None,
            "HTTPS_URL_PORT": "" if port == 443 else f":{port}",
            "ACME_WEBROOT": str(webroot),
            "SERVER_NAME": "localhost",
            "CERTIFICATE": str(cert),
            "CERTIFICATE_KEY": str(key),
            "APP_PORT": str(app_port),
            "ERROR_PAGES": str(HERE / "errors"),
            "ACCESS_LOG": str(folder / "access.log"),
        }
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


def start_nginx(config: Path) -> subprocess.Popen:
    """Start nginx in the foreground with its configuration and files in the config's folder."""
    prefix = f"{config.parent}/"
    command = [program("nginx"), "-p", prefix, "-c", str(config), "-e", "stderr"]
    return subprocess.Popen(command, process_group=0)


def until_listening(process: subprocess.Popen, port: int, stop: threading.Event) -> bool:
    """Wait until a child listens on the port; False if it exits, or if we are told to stop."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not stop.is_set():
        if servers.wait_until_listening(process, port, timeout=0.2):
            return True
        if process.poll() is not None:
            return False
    return False


def serve(
    children: dict, port: int, app_port: int, config: Path, stop: threading.Event, http_port: int
) -> int:
    """Start the app, then nginx in front of it, and watch both until told to stop."""
    for busy in (port, http_port, app_port):
        if servers.listening(busy):
            print(f"run_proxy: port {busy} is in use already", file=sys.stderr)
            return 1
    app_environ = {"HOST": "127.0.0.1", "PORT": str(app_port)}
    for name, start, listen in [
        ("app", lambda: servers.spawn(servers.procfile_web_command(), app_environ), app_port),
        ("nginx", lambda: start_nginx(config), port),
    ]:
        children[name] = servers.Server(start(), "127.0.0.1", listen)
        if not until_listening(children[name].process, listen, stop):
            if stop.is_set():
                return 0
            print(f"run_proxy: {name} did not listen on port {listen}", file=sys.stderr)
            return 1
    print(
        f"Serving the form on https://127.0.0.1:{port}/ (nginx, self-signed certificate "
        f"{config.parent / 'cert.pem'}) in front of the app on http://127.0.0.1:{app_port}; "
        f"http://127.0.0.1:{http_port}/ redirects there; Ctrl-C stops both",
        flush=True,
    )
    while not stop.wait(0.2):
        for name, child in children.items():
            if child.process.poll() is not None:
                print(f"run_proxy: {name} exited with {child.process.returncode}", file=sys.stderr)
                return 1
    return 0


def stop_all(children: dict[str, servers.Server]) -> bool:
    """Stop nginx, then the app; tell whether both exited 0."""
    statuses = []
    # nginx first, gracefully (SIGQUIT): it finishes the requests in flight, and no new ones
    # reach the app while the app drains its own (SIGTERM, shutdown.py).
    if "nginx" in children:
        statuses.append(children["nginx"].stop(signal.SIGQUIT, timeout=15))
    if "app" in children:
        statuses.append(children["app"].stop(signal.SIGTERM, timeout=30))
    return all(status == 0 for status in statuses)


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
    folder = Path(os.environ.get("RUN_DIR", ROOT / ".run" / "proxy")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    app_port = servers.free_port()
    config = write_config(folder, port, app_port, http_port)
    children: dict[str, subprocess.Popen] = {}
    try:
        status = serve(children, port, app_port, config, stop, http_port)
    finally:
        stopped = stop_all(children)
    if not stopped:
        print("run_proxy: nginx or the app did not stop cleanly", file=sys.stderr)
    return status if stopped else 1


if __name__ == "__main__":
    sys.exit(main())
