"""The operator's path: deploy/README.md followed as written, on Debian 13 booted with systemd.

`make test-systemd` boots a Debian 13 root filesystem with systemd as PID 1 (`.ci/rootfs boot`,
systemd-nspawn, a network of its own), and these tests, in order, run the README's shell blocks
in it as root, then do to the running site what happens to one in service: load, a rolling
restart, crashes, a migration that fails, a certificate renewal, the daily backup and a restore
from it, the owner's password set and the results opened with it, reboots. A wrong step in the
README fails here. Every POST answered 303 is a row in the database the unit writes.

The machine has no network and no DNS, and Let's Encrypt is out of reach, so a test changes what
it must, and only that (SUBSTITUTIONS, ENVIRONMENT, and `prepare`), each said below.
"""

import base64
import contextlib
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import encoded
from machine import Machine, section, shell_blocks

import app
import owner

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "deploy" / "README.md").read_text()
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()
SITE = "https://form.example.org/"
PORTS = (8001, 8002)
ROOT_CA = "/etc/pebble/root.pem"  # pebble's issuing root, which clients here trust
STATE = "/var/lib/form-app"  # the units' StateDirectory=: the database and its backups
# How many submissions the database holds, asked as the app's user with the units' settings.
COUNT = (
    f"cd /srv/form-app && runuser -u form-app -- env STATE_DIRECTORY={STATE} "
    ".venv/bin/python -m store count"
)
# What each run of the migration says in the journal (store.py's migrate command).
MIGRATED = re.compile(r"^\S+: schema at version \d+; ran ", re.MULTILINE)

# What in the README's commands the machine cannot do as written, and what it does instead.
SUBSTITUTIONS = {
    # The project's repository: this checkout, as it is now (committed or not), in /test.
    "git clone https://example.org/form-app.git": "git clone /test/repo.git",
}
# Set for every command: pip installs from the wheels the test downloaded (no network), and
# certbot trusts pebble's API, whose certificate the test made.
ENVIRONMENT = {
    "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": "/test/wheels",
    "REQUESTS_CA_BUNDLE": "/etc/pebble/api.pem",
}
# For Debian 12 only, which this machine is not (step 5's second block).
DEBIAN_12_ONLY = "X25519MLKEM768://"
# certbot's answers to the questions it would ask an operator at the terminal, and the ACME
# server to ask: pebble, on loopback, in place of Let's Encrypt. And what it does at a terminal:
# renew without first waiting a random while, as it does when unattended (no terminal here).
CERTBOT_INI = """\
server = https://127.0.0.1:14000/dir
agree-tos = true
register-unsafely-without-email = true
non-interactive = true
no-random-sleep-on-renew = true
"""
PEBBLE_JSON = {
    "pebble": {
        "listenAddress": "127.0.0.1:14000",
        "managementListenAddress": "127.0.0.1:15000",
        "certificate": "/etc/pebble/api.pem",
        "privateKey": "/etc/pebble/api.key",
        "httpPort": 80,  # where it fetches the HTTP-01 challenge: nginx's port-80 block
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
}


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> Machine:
    """The booted machine, with what the test's substitutions need in place."""
    if "MACHINE" not in os.environ:
        pytest.fail("run by `make test-systemd`, which boots the machine (MACHINE unset)")
    machine = Machine(Path(os.environ["MACHINE"]))
    machine.wait_booted()
    share_checkout(machine.share, tmp_path_factory.mktemp("index") / "index")
    download_wheels(machine, machine.share / "wheels")
    prepare(machine)
    return machine


def share_checkout(share: Path, index: Path) -> None:
    """Make /test/repo.git, whose main is this checkout's working tree, untracked files too."""
    git = ["git", "-C", str(ROOT)]
    environ = {"GIT_INDEX_FILE": str(index), "PATH": "/usr/bin:/bin"}
    subprocess.run([*git, "read-tree", "HEAD"], env=environ, check=True)
    subprocess.run([*git, "add", "-A"], env=environ, check=True)
    tree = subprocess.check_output([*git, "write-tree"], env=environ, text=True).strip()
    message = ["-m", "make test-systemd: the working tree"]
    commit = subprocess.check_output([*git, "commit-tree", tree, "-p", "HEAD", *message], text=True)
    repo = share / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "push", "-q", str(repo), f"{commit.strip()}:refs/heads/main"], check=True)


def download_wheels(machine: Machine, folder: Path) -> None:
    """Download requirements.txt's packages as wheels for the machine's pip: its Python's
    version, its processor and its C library (psycopg-binary is built for each), not the host's."""
    version, arch, glibc = machine.run(
        "python3 -c 'import platform, sys; "
        'print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(), '
        "platform.libc_ver()[1])'"
    ).stdout.split()
    newest = int(glibc.split(".")[1])
    # manylinux_2_N: built for glibc 2.N, which runs on the machine's glibc and any newer.
    platforms = [f"--platform=manylinux_2_{n}_{arch}" for n in range(17, newest + 1)]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    pip += ["--only-binary=:all:", f"--python-version={version}", *platforms]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.txt"), "-d", str(folder)], check=True)


def prepare(machine: Machine) -> None:
    """Name the site's host, and start pebble with a certificate for its API."""
    machine.run(
        f"""
        echo '127.0.0.1 form.example.org' >> /etc/hosts   # its DNS record
        mkdir -p /etc/pebble /etc/letsencrypt
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
            -keyout /etc/pebble/api.key -out /etc/pebble/api.pem 2>/dev/null
        echo {shlex.quote(json.dumps(PEBBLE_JSON))} > /etc/pebble/pebble.json
        echo {shlex.quote(CERTBOT_INI)} > /etc/letsencrypt/cli.ini
        systemd-run --unit=pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 \
            /usr/bin/pebble -config /etc/pebble/pebble.json
        until curl -fsS --cacert /etc/pebble/api.pem https://127.0.0.1:15000/roots/0 \
            -o {ROOT_CA} 2>/dev/null; do sleep 0.1; done
        """
    )


def operator_steps() -> list[str]:
    """Return the README's server steps as the machine runs them, substitutions made."""
    text = section(README, "## On a server (Debian 13)")
    for old, new in SUBSTITUTIONS.items():
        assert text.count(old) == 1, f"deploy/README.md no longer has {old!r} once"
        text = text.replace(old, new)
    blocks = shell_blocks(text)
    assert sum(DEBIAN_12_ONLY in block for block in blocks) == 1
    return [block for block in blocks if DEBIAN_12_ONLY not in block]


def rolling_restart() -> str:
    """Return docs/deployment.md's upgrade: pull, install, migrate, then restart the instances
    one at a time."""
    [block] = shell_blocks(section(DEPLOYMENT, "## Upgrading without losing a request"))
    return block


def rows(machine: Machine) -> int:
    """Return how many submissions the unit's database holds."""
    return int(machine.run(COUNT).stdout)


def migrations(machine: Machine) -> int:
    """Return how many times form-app-task@migrate has run, by what each run logged."""
    journal = machine.run("journalctl -u form-app-task@migrate --no-pager -o cat").stdout
    return len(MIGRATED.findall(journal))


def show(machine: Machine, unit: str, prop: str) -> str:
    """Return one of a unit's properties, as `systemctl show` gives it."""
    return machine.run(f"systemctl show -P {prop} {unit}").stdout.strip()


def curl(machine: Machine, arguments: str, check: bool = True) -> str:
    """Return what curl, in the machine and trusting pebble's root, printed."""
    return machine.run(f"curl -sS --cacert {ROOT_CA} {arguments}", check=check).stdout


@contextlib.contextmanager
def load(machine: Machine):
    """Four keep-alive clients (tests/load.py) in the machine, through nginx over HTTPS; what
    they got, and "stored": the rows the database gained meanwhile."""
    body = encoded().decode()
    machine.run("rm -f /run/stop-load")
    before = rows(machine)
    arguments = shlex.join([SITE, body, ROOT_CA, "/run/stop-load"])
    process = machine.start(f"exec python3 /src/tests/load.py {arguments}")
    counts: dict = {}
    try:
        time.sleep(1)  # under way before anything happens to the instances
        yield counts
        time.sleep(0.5)  # and still after
    finally:
        machine.run("touch /run/stop-load")
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    counts.update(json.loads(out))
    counts["stored"] = rows(machine) - before


def served_serial(machine: Machine) -> str:
    """Return the serial number of the certificate nginx presents for the site."""
    return machine.run(
        "openssl s_client -connect 127.0.0.1:443 -servername form.example.org </dev/null "
        "2>/dev/null | openssl x509 -noout -serial"
    ).stdout.strip()


def test_readme_steps_run_as_written(machine):
    for number, block in enumerate(operator_steps(), 1):
        done = machine.run(block, ENVIRONMENT, check=False, timeout=300)
        assert done.returncode == 0, (
            f"deploy/README.md's shell block {number} failed (exit {done.returncode}):\n{block}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )


def test_the_site_serves_as_the_readme_says(machine):
    assert machine.run("systemctl is-active form-app@8001 form-app@8002 nginx").returncode == 0
    assert "[warn]" not in machine.run("nginx -t 2>&1").stdout
    assert curl(machine, f"-o /dev/null -w '%{{http_version}} %{{http_code}}' {SITE}") == "2 200"
    redirect = curl(
        machine, "-o /dev/null -w '%{http_code} %{redirect_url}' http://form.example.org/x"
    )
    assert redirect == "301 https://form.example.org/x"
    machine.run(
        "mkdir -p /var/www/letsencrypt/.well-known/acme-challenge && "
        "echo token > /var/www/letsencrypt/.well-known/acme-challenge/probe"
    )
    assert curl(machine, "http://form.example.org/.well-known/acme-challenge/probe") == "token\n"
    head = curl(machine, f"-I {SITE}").lower()
    assert "strict-transport-security: max-age=63072000" in head
    body = shlex.quote(encoded().decode())
    origin = "-H 'Origin: https://form.example.org'"
    before = rows(machine)
    saved = curl(
        machine, f"-o /dev/null -w '%{{http_code}} %{{redirect_url}}' {origin} -d {body} {SITE}"
    )
    assert re.fullmatch(r"303 https://form\.example\.org/saved/[\w-]{22}", saved), saved
    assert f"Age: {app.EXAMPLE['age'][0]}" in curl(machine, saved.split()[1])
    assert rows(machine) == before + 1


def test_the_unit_keeps_the_database_in_its_state_folder_for_the_app_alone(machine):
    modes = machine.run(f"stat -c '%n %a %U' {STATE} {STATE}/form.sqlite3").stdout
    assert modes.splitlines() == [f"{STATE} 700 form-app", f"{STATE}/form.sqlite3 600 form-app"]


def test_the_migration_ran_once_before_the_instances_started(machine):
    # Both instances started together (step 3): one run of the migration, which they waited for.
    assert migrations(machine) == 1
    task = "form-app-task@migrate"
    assert show(machine, task, "Result") == "success"
    assert show(machine, task, "ActiveState") == "inactive"  # not RemainAfterExit: it runs again
    migrated = int(show(machine, task, "ExecMainExitTimestampMonotonic"))
    pids = []
    for port in PORTS:
        started = int(show(machine, f"form-app@{port}", "ExecMainStartTimestampMonotonic"))
        assert 0 < migrated < started
        pids.append(show(machine, f"form-app@{port}", "MainPID"))
    # Run by hand (`start`, as the unit says: a restart would restart every instance), it runs
    # again, and the instances keep running.
    machine.run(f"systemctl start {task}", timeout=60)
    assert migrations(machine) == 2
    assert [show(machine, f"form-app@{port}", "MainPID") for port in PORTS] == pids


def test_the_backup_timer_is_on_and_the_purge_timer_is_off_until_configured(machine):
    assert machine.run("systemctl is-active form-app-backup.timer").stdout.strip() == "active"
    assert machine.run("systemctl is-enabled form-app-backup.timer").stdout.strip() == "enabled"
    enabled = machine.run("systemctl is-enabled form-app-purge.timer", check=False).stdout
    assert enabled.strip() == "disabled"


def test_the_rolling_restart_under_load_loses_nothing(machine):
    migrated = migrations(machine)
    with load(machine) as counts:
        for _ in range(3):
            machine.run(rolling_restart(), ENVIRONMENT, timeout=300)
    print(f"three rolling restarts: {counts}")
    assert counts["errors"] == [] and counts["cut"] == {}, counts
    assert set(counts["statuses"]) == {"GET 200", "POST 303"}, counts
    assert min(counts["statuses"].values()) > 50, counts
    assert counts["stored"] == counts["statuses"]["POST 303"], counts
    # Each round ran the migration, then again before each instance's restart.
    assert migrations(machine) == migrated + 3 * (1 + len(PORTS))


KILL_AND_WAIT = """
port={port}
pid=$(systemctl show -P MainPID form-app@$port)
start=$(date +%s%N)
kill -{signal} "$pid"
until [ "$(systemctl show -P MainPID form-app@$port)" != "$pid" ] \
    && curl -fsS -o /dev/null http://127.0.0.1:$port/healthz 2>/dev/null; do sleep 0.02; done
echo $(( ($(date +%s%N) - start) / 1000000 ))
"""


def test_a_killed_instance_is_back_within_3_s_and_no_get_fails(machine):
    kills = 10
    with load(machine) as counts:
        back_in = []
        for kill in range(kills):
            script = KILL_AND_WAIT.format(port=PORTS[kill % 2], signal="KILL")
            back_in.append(int(machine.run(script, timeout=30).stdout) / 1000)
            time.sleep(1)  # serving on both again before the next kill
    posts_lost = counts["statuses"].get("POST 502", 0)
    print(f"back in {back_in} s; POSTs answered 502: {posts_lost} in {kills} kills; {counts}")
    # Its restart runs the migration, then the app: two Pythons started, on a loaded machine.
    assert max(back_in) < 3, back_in
    assert counts["errors"] == [] and counts["cut"] == {}, counts
    assert set(counts["statuses"]) <= {"GET 200", "POST 303", "POST 502"}, counts
    # A POST is not sent twice: those in flight on the killed instance get nginx's 502 page, at
    # most one per client a kill. docs/security.md states this.
    assert posts_lost <= 4 * kills, counts
    # Every POST answered as saved is stored; one cut off by the kill may be too, after its commit.
    saved = counts["statuses"]["POST 303"]
    assert saved <= counts["stored"] <= saved + posts_lost, counts


def test_a_hung_instance_is_killed_by_the_watchdog_and_no_get_fails(machine):
    with load(machine) as counts:
        back_in = []
        for port in PORTS:  # stopped, as a deadlock or a swap storm would leave it
            script = KILL_AND_WAIT.format(port=port, signal="STOP")
            back_in.append(int(machine.run(script, timeout=60).stdout) / 1000)
            time.sleep(1)
    statuses = counts["statuses"]
    failed = statuses.get("POST 502", 0) + statuses.get("POST 504", 0)
    # Stopped in the middle of a save, an instance holds the SQLite file's write lock until the
    # watchdog kills it: meanwhile the other's saves wait store.TIMEOUT (2 s) for it and answer
    # 503 with the person's values kept (the app's fault page), one a client every 2 s at most.
    locked = statuses.get("POST 503", 0)
    print(f"back in {back_in} s; POSTs answered 502 or 504: {failed}, 503: {locked}; {counts}")
    # The unit's WatchdogSec=5s, then RestartSec=, the migration and the start.
    assert max(back_in) < 8, back_in
    assert counts["errors"] == [] and counts["cut"] == {}, counts
    assert set(statuses) <= {"GET 200", "POST 303", "POST 502", "POST 503", "POST 504"}, counts
    assert failed <= 2 * 5, counts  # those in flight there: at most one per client, and nginx's try
    assert locked <= 2 * 4 * 4, counts  # 2 hangs, 4 clients, a 503 every 2 s for under 8 s
    # A 503 stored nothing; a 502 or 504 may have been stored before the instance stopped.
    saved = statuses["POST 303"]
    assert saved <= counts["stored"] <= saved + failed, counts


# The database out of reach for the migration only: a PostgreSQL port where none listens.
MIGRATION_FAILS = """
mkdir -p /etc/systemd/system/form-app-task@migrate.service.d
printf '[Service]\\nEnvironment=DATABASE_URL=postgresql://form@127.0.0.1:1/form\\n' \
    > /etc/systemd/system/form-app-task@migrate.service.d/unreachable.conf
systemctl daemon-reload
"""
MIGRATION_WORKS = """
rm -r /etc/systemd/system/form-app-task@migrate.service.d
systemctl daemon-reload
"""


def test_a_failed_migration_stops_the_upgrade_and_a_crash_still_restarts(machine):
    pids = [show(machine, f"form-app@{port}", "MainPID") for port in PORTS]
    machine.run(MIGRATION_FAILS)
    try:
        upgrade = machine.run(rolling_restart(), ENVIRONMENT, check=False, timeout=300)
        assert upgrade.returncode != 0, upgrade
        assert show(machine, "form-app-task@migrate", "Result") == "exit-code"
        # The upgrade stopped before any instance was restarted.
        assert [show(machine, f"form-app@{port}", "MainPID") for port in PORTS] == pids
        # A crash while the migration cannot run: the instance is back all the same (Wants=).
        back_in = int(machine.run(KILL_AND_WAIT.format(port=PORTS[0], signal="KILL")).stdout)
        assert back_in < 10_000, back_in
        assert curl(machine, f"-o /dev/null -w '%{{http_code}}' {SITE}") == "200"
    finally:
        machine.run(MIGRATION_WORKS)
    machine.run("systemctl start form-app-task@migrate", timeout=60)
    assert show(machine, "form-app-task@migrate", "Result") == "success"


def test_certbot_renew_runs_the_deploy_hook_and_clients_get_the_new_certificate(machine):
    before = served_serial(machine)
    # As certbot.timer runs it, but a renewal whether one is due or not.
    machine.run("certbot renew --force-renewal --quiet", ENVIRONMENT, timeout=300)
    issued = machine.run(
        "openssl x509 -noout -serial -in /etc/letsencrypt/live/form.example.org/cert.pem"
    ).stdout.strip()
    assert issued != before
    deadline = time.monotonic() + 10  # `systemctl reload nginx` returns before the new workers
    while served_serial(machine) != issued and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_serial(machine) == issued  # the deploy hook reloaded nginx
    curl(machine, f"-o /dev/null {SITE}")  # and it verifies against pebble's root


@pytest.mark.parametrize("unit", ["form-app@8001.service", "form-app-task@backup.service"])
def test_the_sandbox_holds(machine, unit):
    report = machine.run(f"systemd-analyze security {unit} --no-pager").stdout
    level = re.search(rf"Overall exposure level for {unit}: ([\d.]+) (\w+)", report)
    assert level and float(level[1]) <= 2.0 and level[2] == "OK", report[-300:]
    print(f"systemd-analyze security {unit}: {level[1]} {level[2]}")


def test_the_app_s_user_cannot_change_its_checkout(machine):
    for attempt in ("touch /srv/form-app/app.py", "mkdir /srv/form-app/new"):
        user = "setpriv --reuid=form-app --regid=form-app --clear-groups"
        assert machine.run(f"{user} {attempt}", check=False).returncode != 0, attempt
    journal = machine.run("journalctl -u 'form-app@*' --no-pager -o cat").stdout
    assert re.search(r"^INFO:access:127\.0\.0\.1 https GET / 200 ", journal, re.MULTILINE)


# The backup timer made to elapse in a second, once, as it does each day (OnCalendar=daily).
BACKUP_SOON = """
mkdir -p /etc/systemd/system/form-app-backup.timer.d
printf '[Timer]\\nOnActiveSec=1s\\nRandomizedDelaySec=0\\nAccuracySec=1ms\\n' \
    > /etc/systemd/system/form-app-backup.timer.d/soon.conf
systemctl daemon-reload
systemctl restart form-app-backup.timer
"""
BACKUP_DAILY = """
rm -r /etc/systemd/system/form-app-backup.timer.d
systemctl daemon-reload
systemctl restart form-app-backup.timer
"""
BACKUP_DONE = """
until [ "$(systemctl show -P ExecMainExitTimestampMonotonic form-app-task@backup)" != 0 ] \
    && [ "$(systemctl show -P ActiveState form-app-task@backup)" != activating ]; do sleep 0.1; done
"""


def test_the_backup_timer_leaves_a_copy_that_restores_every_row(machine):
    database = section(README, "## The database and its backups")
    [restore] = [block for block in shell_blocks(database) if "store restore" in block]
    assert machine.run(f"ls {STATE}/backups 2>/dev/null || true").stdout == ""
    kept = rows(machine)
    assert kept > 0
    machine.run(BACKUP_SOON)
    try:
        machine.run(BACKUP_DONE, timeout=60)
    finally:
        machine.run(BACKUP_DAILY)
    assert show(machine, "form-app-backup.timer", "LastTriggerUSecMonotonic") != "0"
    assert show(machine, "form-app-task@backup", "Result") == "success"
    [copy] = machine.run(f"ls {STATE}/backups").stdout.split()
    modes = machine.run(f"stat -c '%a %U' {STATE}/backups {STATE}/backups/{copy}").stdout
    assert modes.splitlines() == ["700 form-app", "600 form-app"]
    # One more submission after the backup, which the restore takes back.
    body = shlex.quote(encoded().decode())
    origin = "-H 'Origin: https://form.example.org'"
    assert curl(machine, f"-o /dev/null -w '%{{http_code}}' {origin} -d {body} {SITE}") == "303"
    assert rows(machine) == kept + 1
    machine.run(restore, timeout=120)  # the README's: the instances stopped, then started again
    assert rows(machine) == kept
    assert machine.run("systemctl is-active form-app@8001 form-app@8002").returncode == 0
    assert curl(machine, f"-o /dev/null -w '%{{http_code}}' {SITE}") == "200"


def test_the_purge_timer_runs_once_configured_as_the_readme_says(machine):
    database = section(README, "## The database and its backups")
    [purge] = [block for block in shell_blocks(database) if "form-app-purge.timer" in block]
    machine.run(purge)
    assert machine.run("systemctl is-active form-app-purge.timer").stdout.strip() == "active"
    kept = rows(machine)
    machine.run("systemctl start form-app-task@purge", timeout=60)  # what the timer starts
    journal = machine.run("journalctl -u form-app-task@purge --no-pager -o cat").stdout
    assert "deleted 0 submissions" in journal  # all were received today
    assert rows(machine) == kept


# The owner's password, typed by the operator, and a wrong one, as someone guessing would send it.
PASSWORD = "correct horse battery staple"  # the owner's, in these tests  # nosec B105
WRONG = "Tr0ub4dor&3-guess"
OWNER = shlex.quote(f"{owner.DEFAULT_USER}:{PASSWORD}")  # curl -u's argument
# What the owner's pages need of the units' sandbox: room for scrypt's 16 MiB a check.
MEMORY_BOUNDS = ("MemoryMax", "MemoryHigh", "MemorySwapMax", "LimitAS", "LimitDATA")


def owner_page(machine: Machine, path: str, password: str | None = None) -> tuple[int, dict, str]:
    """Return the status, headers (names in lower case) and body of an owner's page through
    nginx over HTTPS, asked for as the owner with a password, if given."""
    user = f"-u {shlex.quote(f'{owner.DEFAULT_USER}:{password}')}" if password else ""
    # Output as text: curl's CRLFs are LFs here.
    head, _, body = curl(machine, f"-i {user} {SITE}{path.lstrip('/')}").partition("\n\n")
    status, *fields = head.splitlines()
    headers = {name.lower(): value for name, value in (f.split(": ", 1) for f in fields)}
    return int(status.split()[1]), headers, body


def test_the_readme_sets_the_owner_s_password_and_the_restart_reads_it(machine):
    database = section(README, "## The database and its backups")
    [password_block] = [block for block in shell_blocks(database) if "-m owner" in block]
    # nginx lets an address send 11 requests at once to /results*, then one every 10 s: these
    # tests send 7 there.
    for path in ("/results", "/results.csv"):  # no password set yet: no such pages
        status, headers, _ = owner_page(machine, path)
        assert status == 404 and headers["cache-control"] == "no-store", (path, headers)
    settings = machine.run("cat /etc/default/form-app").stdout.splitlines()
    # As the README has it, typed at the terminal; here one line of standard input.
    typed = machine.run(password_block, stdin=f"{PASSWORD}\n")
    assert typed.stdout == "", typed
    *kept, added = machine.run("cat /etc/default/form-app").stdout.splitlines()
    assert kept == settings  # the purge's setting, from the README's block before
    assert re.fullmatch(r"RESULTS_PASSWORD_HASH=scrypt:[0-9a-f:]+", added), added
    mode = machine.run("stat -c '%a %U' /etc/default/form-app").stdout.strip()
    assert mode == "600 root"  # root's alone, as the README's `chmod 600` made it
    # The instances read the file when they start: until restarted, still no such pages.
    assert owner_page(machine, "/results")[0] == 404
    pids = [show(machine, f"form-app@{port}", "MainPID") for port in PORTS]
    machine.run(rolling_restart(), ENVIRONMENT, timeout=300)
    restarted = [show(machine, f"form-app@{port}", "MainPID") for port in PORTS]
    assert all(old != new for old, new in zip(pids, restarted, strict=True))


def test_the_owner_s_pages_open_with_the_password_over_https_only(machine):
    status, headers, _ = owner_page(machine, "/results")
    assert status == 401 and headers["www-authenticate"] == owner.CHALLENGE, headers
    status, headers, _ = owner_page(machine, "/results", WRONG)
    assert status == 401 and headers["www-authenticate"] == owner.CHALLENGE, headers
    assert headers["cache-control"] == "no-store"
    count = rows(machine)
    status, headers, page = owner_page(machine, "/results", PASSWORD)
    assert status == 200, page
    assert headers["cache-control"] == "no-store" and headers["x-robots-tag"] == "noindex"
    assert re.search(rf"<p>{count} submissions?; the last on ", page), count  # 1 submission
    status, headers, export = owner_page(machine, "/results.csv", PASSWORD)
    assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8", headers
    table = list(csv.reader(io.StringIO(export.removeprefix("\ufeff"))))
    assert table[0] == ["received", *app.FIELDS, *app.HOBBIES]
    assert len(table) == 1 + count
    # Plain HTTP, even with the password: the redirect, never the page.
    redirect = curl(
        machine,
        f"-o /dev/null -w '%{{http_code}} %{{redirect_url}}' -u {OWNER} "
        "http://form.example.org/results.csv",
    )
    assert redirect == "301 https://form.example.org/results.csv"
    # The wrong try is logged with the address, and neither password, as typed or as sent
    # (base64 in the Authorization header), is anywhere in the journal or nginx's logs.
    journal = machine.run("journalctl -u 'form-app@*' --no-pager -o cat").stdout
    failure = r"^WARNING:app:owner: wrong credentials for the results from 127\.0\.0\.1$"
    assert len(re.findall(failure, journal, re.MULTILINE)) == 1, journal[-2000:]
    for secret in (PASSWORD, WRONG):
        sent = base64.b64encode(f"{owner.DEFAULT_USER}:{secret}".encode()).decode()
        for text in (secret, sent):
            found = machine.run(
                f"journalctl --no-pager -o cat | grep -F -e {shlex.quote(text)} "
                f"|| grep -rF -e {shlex.quote(text)} /var/log/nginx",
                check=False,
            )
            assert found.returncode == 1, found.stdout


def test_the_sandbox_lets_each_instance_check_the_password(machine):
    # scrypt takes 16 MiB a check: no memory bound on the units, and each instance, asked on
    # loopback past nginx, checks the password and answers without dying.
    pids = [show(machine, f"form-app@{port}", "MainPID") for port in PORTS]
    for port in PORTS:
        shown = machine.run(f"systemctl show form-app@{port} -p " + " -p ".join(MEMORY_BOUNDS))
        bounds = dict(line.split("=", 1) for line in shown.stdout.split())
        assert bounds == dict.fromkeys(MEMORY_BOUNDS, "infinity"), bounds
        url = f"http://127.0.0.1:{port}/results"
        assert curl(machine, f"-o /dev/null -w '%{{http_code}}' -u {OWNER} {url}") == "200"
    assert [show(machine, f"form-app@{port}", "MainPID") for port in PORTS] == pids


def test_the_units_start_at_every_boot(machine):
    kept = rows(machine)
    for _ in range(2):
        machine.reboot()
        assert machine.run("systemctl is-active form-app@8001 form-app@8002 nginx").returncode == 0
        assert curl(machine, f"-o /dev/null -w '%{{http_code}}' {SITE}") == "200"
        assert rows(machine) == kept
