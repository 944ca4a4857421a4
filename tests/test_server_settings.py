"""The Procfile and `python app.py` serve with the same Waitress settings (chosen in bench/)."""

import shlex

from helpers import procfile_web_command
from waitress.adjustments import Adjustments

from app import SERVER


def test_procfile_and_app_py_use_the_same_waitress_settings():
    options, _ = Adjustments.parse_args(shlex.split(procfile_web_command())[1:])
    for name in ("help", "call", "listen"):  # not settings: how waitress-serve is called
        options.pop(name)
    procfile, app_py = Adjustments(**options), Adjustments(**SERVER)
    assert set(options) == set(SERVER)
    assert {name: getattr(procfile, name) for name in SERVER} == {
        name: getattr(app_py, name) for name in SERVER
    }
