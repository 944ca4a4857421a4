"""A run's skipped tests are summed up in one line saying what to install (tests/conftest.py),
not listed one a line: a newcomer's first `make test`, without nginx, Chromium, Java or wrk,
skips about a hundred."""

import pytest
from helpers import INSTALL_HINTS, require, skip_summary


def reason(program: str) -> str:
    """Return the reason pytest records for a test that skipped without `program`."""
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(program)
    return f"Skipped: {skipped.value.msg}"


@pytest.fixture
def bare(monkeypatch):
    """A machine without the tests' programs (not even in /usr/sbin), outside CI."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("shutil.which", lambda program, path=None: None)


def test_tests_skipped_for_want_of_programs_name_the_packages_to_install_in_one_line(bare):
    reasons = [reason("nginx")] * 3 + [reason("chromium")] * 5 + [reason("wrk")]
    assert skip_summary(reasons) == (
        "9 tests skipped: to run them, apt-get install -y chromium nginx-light wrk"
        " (`pytest -rs` lists why)"
    )


def test_every_program_the_tests_ask_for_names_its_package(bare):
    for program in INSTALL_HINTS:
        assert skip_summary([reason(program)]).startswith("1 test skipped: to run them, apt-get")


def test_tests_skipped_for_another_reason_are_counted_apart(bare):
    reasons = [reason("java"), "Skipped: network namespaces need root"]
    assert skip_summary(reasons) == (
        "1 test skipped: to run them, apt-get install -y default-jre-headless;"
        " 1 test skipped for other reasons (`pytest -rs` lists why)"
    )


def test_a_run_without_skips_has_no_line():
    assert skip_summary([]) is None
