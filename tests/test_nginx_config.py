"""`nginx -t` on the shipped site (deploy/form-app.conf), filled in as `make run-proxy` fills it.

nginx starts with a warning (a deprecated directive, an ignored setting) as it starts without one,
and an operator rarely reads its log: only the test's exact output proves the site loads cleanly.
It runs on each nginx the project supports: Debian 12's (the host, `make test`), Debian 13's
(`make test-debian13`) and Debian unstable's (`make test-3.14`).
"""

import re
import subprocess

from helpers import require

from deploy import run_proxy
from deploy.servers import free_port

# All that `nginx -t` says about a configuration that loads with neither error nor warning.
CLEAN = [
    re.compile(r"nginx: the configuration file \S+ syntax is ok"),
    re.compile(r"nginx: configuration file \S+ test is successful"),
]


def test_nginx_loads_the_shipped_site_without_a_warning(tmp_path):
    nginx = require("nginx")
    require("openssl")  # write_config makes the site's self-signed certificate
    config = run_proxy.write_config(tmp_path, free_port(), [f"127.0.0.1:{free_port()}"])
    command = [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(config), "-e", "stderr"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    said = run.stderr.splitlines()
    assert run.returncode == 0, run.stderr
    assert len(said) == len(CLEAN), run.stderr  # a [warn] or [notice] line is one more
    assert all(pattern.fullmatch(line) for pattern, line in zip(CLEAN, said, strict=True)), said
