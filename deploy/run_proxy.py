"""Serve the app behind the shipped nginx configuration, on this machine: `make run-proxy`
(`python -m deploy.run_proxy` from the project folder).

nginx terminates TLS on https://127.0.0.1:$PORT/ (PORT defaults to 8443) with a self-signed
certificate made on first use, and forwards to the app, started as the Procfile's web: command on a
free loopback port. deploy/form-app.conf is used as it is, with its placeholders filled in; only the
top-level nginx.conf (pid, temp and log paths, foreground) is this script's own. Both servers run
as children of this script; Ctrl-C or SIGTERM stops nginx (letting requests in flight finish), then
the app (which drains its own), and exits 0. Their files go in .run/proxy/, or in $RUN_DIR if set.
"""

import grp
import os
import pwd
import re
import shutil
import signal
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
    """Return a self-signed certificate and its key, made unless one valid for a day is there."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    valid = cert.exists() and key.exists()
    if valid:
        check = [program("openssl"), "x509", "-checkend", "86400", "-noout", "-in", str(cert)]
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


def site_config(values: dict[str, str]) -> str:
    """Return deploy/form-app.conf with each placeholder (@NAME@) replaced by its value."""
    text = SITE.read_text()
    placeholders = set(re.findall(r"@([A-Z_]+)@", text))
    if placeholders != values.keys():
        raise ValueError(f"{SITE} has placeholders {placeholders}, given {set(values)}")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def write_config(folder: Path, port: int, app_port: int) -> Path:
    """Write nginx.conf (foreground, files in `folder`) around the site; return its path."""
    cert, key = certificate(folder)
    site = folder / "form-app.conf"
    site.write_text(
        site_config(
            {
                "LISTEN": f"127.0.0.1:{port}",
                "SERVER_NAME": "localhost",
                "CERTIFICATE": str(cert),
                "CERTIFICATE_KEY": str(key),
                "APP_PORT": str(app_port),
                "ERROR_PAGES": str(HERE / "errors"),
                "ACCESS_LOG": str(folder / "access.log"),
            }
        )
    )
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

events {{
    worker_connections 1024;
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


def serve(children: dict, port: int, app_port: int, config: Path, stop: threading.Event) -> int:
    """Start the app, then nginx in front of it, and watch both until told to stop."""
    for busy in (port, app_port):
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
        "Ctrl-C stops both",
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


def main() -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(sig, lambda signum, frame: stop.set())
    port = os.environ.get("PORT", "8443")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        sys.exit(f"PORT must be a port number from 1 to 65535, not {port!r}")
    port = int(port)
    folder = Path(os.environ.get("RUN_DIR", ROOT / ".run" / "proxy")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    app_port = servers.free_port()
    config = write_config(folder, port, app_port)
    children: dict[str, subprocess.Popen] = {}
    try:
        status = serve(children, port, app_port, config, stop)
    finally:
        stopped = stop_all(children)
    if not stopped:
        print("run_proxy: nginx or the app did not stop cleanly", file=sys.stderr)
    return status if stopped else 1


if __name__ == "__main__":
    sys.exit(main())
