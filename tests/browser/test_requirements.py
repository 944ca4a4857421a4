"""Without Chromium or Java the browser checks skip and say how to install them, except in CI."""

import pytest
from pages import require


@pytest.fixture
def bare_path(monkeypatch, tmp_path):
    """A PATH where no program can be found."""
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.mark.parametrize(
    ("program", "hint"),
    [("chromium", "apt-get install chromium"), ("java", "apt-get install default-jre-headless")],
)
@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_a_missing_program_skips_with_how_to_install_it(monkeypatch, bare_path, program, hint, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=hint):
        require(program)


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_program_fails_in_ci(monkeypatch, bare_path, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        require("chromium")


def test_a_program_on_the_path_is_found(monkeypatch, tmp_path):
    program = tmp_path / "chromium"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require("chromium") == str(program)
