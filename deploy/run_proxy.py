"""Serve the app behind the shipped nginx configuration, on this machine: `make run-proxy`.

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
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def free_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_web_command() -> str:
    """Return the Procfile's `web:` command line."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise ValueError("the Procfile has no web: line")


def start_app(port: int) -> subprocess.Popen:
    """Start the app as the Procfile does, on loopback, where nginx reaches it."""
    # The venv's bin (where waitress-serve lives) first, as `make run` has it.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "PATH": path}
    # Its own process group: Ctrl-C in a terminal reaches this script only, which stops the
    # servers in order, rather than both servers at once.
    command = ["sh", "-c", f"exec {procfile_web_command()}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, process_group=0)


def start_nginx(config: Path) -> subprocess.Popen:
    """Start nginx in the foreground with its configuration and files in the config's folder."""
    prefix = f"{config.parent}/"
    command = [program("nginx"), "-p", prefix, "-c", str(config), "-e", "stderr"]
    return subprocess.Popen(command, process_group=0)


def wait_until_listening(port: int, process: subprocess.Popen, stop: threading.Event) -> bool:
    """Wait until a child accepts connections on the port; False if it exits or we must stop."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None and not stop.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_child(process: subprocess.Popen, sig: signal.Signals, timeout: float) -> int:
    """Signal a child to stop and return its exit status; kill it if it takes too long."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -signal.SIGKILL


def serve(children: dict, port: int, app_port: int, config: Path, stop: threading.Event) -> int:
    """Start the app, then nginx in front of it, and watch both until told to stop."""
    for name, start, listen in [
        ("app", lambda: start_app(app_port), app_port),
        ("nginx", lambda: start_nginx(config), port),
    ]:
        children[name] = start()
        if not wait_until_listening(listen, children[name], stop):
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
            if child.poll() is not None:
                print(f"run_proxy: {name} exited with {child.returncode}", file=sys.stderr)
                return 1
    return 0


def stop_all(children: dict) -> bool:
    """Stop nginx, then the app; tell whether both exited 0."""
    statuses = []
    # nginx first, gracefully (SIGQUIT): it finishes the requests in flight, and no new ones
    # reach the app while the app drains its own (SIGTERM, shutdown.py).
    if "nginx" in children:
        statuses.append(stop_child(children["nginx"], signal.SIGQUIT, timeout=15))
    if "app" in children:
        statuses.append(stop_child(children["app"], signal.SIGTERM, timeout=30))
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
    app_port = free_port()
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
