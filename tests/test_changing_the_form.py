"""README's "Changing the form", followed as written on a copy of the checkout: its hobby line
and its recipe for a required name, then the tests that read the form's definition, run there.
They must pass unchanged: the README says a hobby is one line and a field a few, then `make test`.
"""

import re
import shutil
import subprocess
import sys

import pytest
from test_migrations import copy_of_the_checkout

from deploy.servers import ROOT

# The tests that read the form's definition: the form, its rules, what is stored and shown, the
# owner's results, migrations, a drained request, the audit's round trip.
SUBSET = [
    "tests/test_validate.py",
    "tests/test_form.py",
    "tests/test_security.py",
    "tests/test_errors.py",
    "tests/test_store.py",
    "tests/test_results.py",
    "tests/test_results_store.py",
    "tests/test_migrations.py",
    "tests/test_shutdown.py",
    "tests/test_audit.py",
]

# What a checkout holds beside its files: venvs, git, root filesystems, state, caches.
NOT_COPIED = [
    ".venv*",
    ".git",
    ".cache",
    "data",
    "mutants",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
]


def readme_blocks(after: str) -> list[str]:
    """Return the README's python code blocks after a heading's text, in order."""
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme[readme.index(after) :], re.DOTALL)


@pytest.mark.stress
def test_the_readmes_hobby_and_field_leave_the_tests_green(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*NOT_COPIED))
    edited = copy_of_the_checkout(tmp_path / "edited", recipe=True)  # the app's files, edited
    shutil.copytree(edited, copy, dirs_exist_ok=True)
    hobby_line, *_ = readme_blocks("**A hobby**")
    app_py = (copy / "app.py").read_text()
    [line] = [line for line in app_py.splitlines() if line.startswith("HOBBIES = {")]
    (copy / "app.py").write_text(app_py.replace(line, hobby_line.strip()))
    tests = readme_blocks("4. Test the rule")[0]
    validate_tests = copy / "tests" / "test_validate.py"
    if "def test_valid_names_are_cleaned" not in validate_tests.read_text():
        tests = "\n".join(line.removeprefix("   ") for line in tests.splitlines())
        validate_tests.write_text(validate_tests.read_text() + "\n\n" + tests)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *SUBSET],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:]
