"""Instances on other hosts: the shipped nginx in front of two app instances that are not on its
loopback, each trusting nginx's address through TRUSTED_PROXY, both saving to one PostgreSQL on
a host of its own.

The "hosts" are network namespaces this test creates (`ip netns`), joined by a bridge in nginx's
namespace on a private network that exists only inside them: nginx, each instance, the database
and a client each have one, and no traffic leaves them. They are deleted at the end, whatever
happens. Needs root, iproute2 and PostgreSQL.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from databases import Postgres
from helpers import access_lines, assert_saved, encoded, require, skip_unless_ci

import app
import store
from deploy import run_proxy, servers

NETWORK = "10.217.17"  # private (RFC 1918), and only ever inside the test's own namespaces
EDGE = f"{NETWORK}.1"  # nginx
INSTANCES = [f"{NETWORK}.11", f"{NETWORK}.12"]
DATABASE = f"{NETWORK}.20"  # PostgreSQL
CLIENT = f"{NETWORK}.100"
APP_PORT, PROXY_PORT = 8001, 8443


def ip(*args: str):
    """Run an iproute2 command; fail the test with its message if it fails."""
    done = subprocess.run([require("ip"), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


@pytest.fixture
def hosts():
    """Five namespaces (edge, app1, app2, db, client) on one bridged private network; names."""
    if os.geteuid() != 0:
        skip_unless_ci("network namespaces need root")
    roles = ("edge", "app1", "app2", "db", "client")
    names = {role: f"form17-{os.getpid()}-{role}" for role in roles}
    created = []
    try:
        for name in names.values():
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        edge = names["edge"]
        ip("-n", edge, "link", "add", "br0", "type", "bridge")
        ip("-n", edge, "addr", "add", f"{EDGE}/24", "dev", "br0")
        ip("-n", edge, "link", "set", "br0", "up")
        others = [("app1", INSTANCES[0]), ("app2", INSTANCES[1]), ("db", DATABASE)]
        for role, address in [*others, ("client", CLIENT)]:
            # A cable from the bridge to the host: one end in each namespace, never the test's.
            port = f"to-{role}"
            peer = ["peer", "name", "eth0", "netns", names[role]]
            ip("-n", edge, "link", "add", port, "type", "veth", *peer)
            ip("-n", edge, "link", "set", port, "master", "br0", "up")
            ip("-n", names[role], "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", names[role], "link", "set", "eth0", "up")
        yield names
    finally:
        for name in created:
            ip("netns", "delete", name)


def in_namespace(name: str) -> str:
    """Return the command prefix that runs a command in a namespace."""
    return f"{require('ip')} netns exec {name}"


CLIENT_SCRIPT = """
import http.client, json, socket, ssl, sys
cert, edge, proxy_port, instance, app_port, body = sys.argv[1:]
tls = ssl.create_default_context(cafile=cert)
tls.check_hostname = False  # the certificate names form.test, not this private address
host = f"form.test:{proxy_port}"
got = {}

def ask(conn, name, method, path, body=None, headers=()):
    conn.request(method, path, body, {"Host": host, **dict(headers)})
    res = conn.getresponse()
    got[name] = [res.status, res.read().decode(), res.getheader("Location")]

proxy = http.client.HTTPSConnection(edge, int(proxy_port), timeout=10, context=tls)
ask(proxy, "form", "GET", "/")
form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"https://{host}"}
ask(proxy, "submitted", "POST", "/", body, form)
ask(proxy, "submitted again", "POST", "/", body, form)  # one at a time: each in turn
ask(proxy, "saved", "GET", got["submitted"][2] or "/no-location")
forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"}
for n in range(4):  # least_conn with none in progress goes round: two for each instance
    ask(proxy, f"through-{n}", "GET", f"/seen-through-nginx-{n}", None, forged)
straight = http.client.HTTPConnection(instance, int(app_port), timeout=10)
forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
ask(straight, "straight", "GET", "/seen-straight", None, forged)
print(json.dumps(got))
"""


@pytest.fixture
def postgres(hosts):
    """A PostgreSQL server on the db host, and the URL of an empty database there, migrated once
    from app1's host as a deploy's release step would."""
    server = Postgres(listen=DATABASE, wrapper=tuple(in_namespace(hosts["db"]).split()))
    try:
        url = server.create()
        migrate = [*in_namespace(hosts["app1"]).split(), sys.executable, "-m", "store", "migrate"]
        environ = {**os.environ, "DATABASE_URL": url}
        done = subprocess.run(
            migrate, env=environ, cwd=servers.ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        yield server, url
    finally:
        server.close()


def test_instances_on_other_hosts_serve_the_form_and_trust_only_nginx(hosts, postgres, tmp_path):
    require("nginx")
    require("openssl")
    database_server, url = postgres
    started: list[servers.Server] = []
    try:
        for role, address in zip(["app1", "app2"], INSTANCES, strict=True):
            environ = {"HOST": address, "PORT": str(APP_PORT), "TRUSTED_PROXY": EDGE}
            environ["DATABASE_URL"] = url  # one database for both
            command = f"{in_namespace(hosts[role])} {servers.procfile_web_command()}"
            log = tmp_path / f"{role}.log"
            process = servers.spawn(command, environ, log)
            started.append(servers.Server(process, address, APP_PORT, log))
            assert servers.wait_until_listening(started[-1].process, APP_PORT), log.read_text()
        addresses = [f"{address}:{APP_PORT}" for address in INSTANCES]
        config = run_proxy.write_config(tmp_path, PROXY_PORT, addresses, listen_host=EDGE)
        wrapper = tuple(in_namespace(hosts["edge"]).split())
        nginx = servers.Server(run_proxy.start_nginx(config, wrapper), EDGE, PROXY_PORT)
        started.append(nginx)
        assert servers.wait_until_listening(nginx.process, PROXY_PORT)

        arguments = [str(tmp_path / "cert.pem"), EDGE, str(PROXY_PORT), INSTANCES[0]]
        arguments += [str(APP_PORT), encoded().decode()]
        command = [*wrapper[:-1], hosts["client"], sys.executable, "-c", CLIENT_SCRIPT]
        done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
    finally:
        for server in reversed(started):  # nginx first: it closes its upstream connections
            server.stop(signal.SIGQUIT if server.port == PROXY_PORT else signal.SIGTERM)

    assert got["form"][0] == 200 and "<form" in got["form"][1]
    assert_saved(got["submitted"][0], got["submitted"][2])
    assert got["saved"][0] == 200
    assert f"Age: {app.EXAMPLE['age'][0]}<br>" in got["saved"][1]
    # Each instance saved one submission, both in the one database.
    for instance in started[:2]:
        posts = [fields[2:5] for fields in access_lines(instance.output()) if fields[2] == "POST"]
        assert posts == [["POST", "/", "303"]], access_lines(instance.output())
    database = store.connect(database_server.local_url(url.rsplit("/", 1)[1]))
    try:
        assert database.count() == 2
        for name in ("submitted", "submitted again"):
            status, _, location = got[name]
            assert status == 303 and location.startswith("/saved/"), got[name]
            _, values = database.find(location.removeprefix("/saved/"))
            assert values["age"] == app.EXAMPLE["age"][0]
    finally:
        database.close()
    # Each instance answered through nginx, and saw the client's own address and https, not
    # what the client wrote in X-Forwarded-*: nginx replaces those, and the instance believes
    # nginx (TRUSTED_PROXY) only.
    for server in started[:2]:
        seen = [
            fields for fields in access_lines(server.output()) if "/seen-through-nginx" in fields[3]
        ]
        assert len(seen) == 2, access_lines(server.output())
        assert {(fields[0], fields[1]) for fields in seen} == {(CLIENT, "https")}
    # Sent straight to an instance, the same headers from the client are dropped.
    assert got["straight"][0] == 404
    straight = [
        fields for fields in access_lines(started[0].output()) if fields[3] == "/seen-straight"
    ]
    assert [fields[:5] for fields in straight] == [[CLIENT, "http", "GET", "/seen-straight", "404"]]
