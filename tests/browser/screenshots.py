"""`make screenshots`: PNGs of each state of the pages, on a phone and on a desktop."""

import random
import shutil
import sys
import tempfile
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from unittest import mock

from helpers import SERVER_COMMANDS
from pages import (
    DESKTOP,
    INSTALL_HINTS,
    PHONE,
    STATES,
    launch,
    owner_environ,
    reach,
    unsaved_database_url,
)
from playwright.sync_api import sync_playwright

import app
import store
from deploy.servers import start_server

SCREENS = {"phone": PHONE, "desktop": DESKTOP}


def seed(database, count: int = 80) -> None:
    """Save `count` made-up submissions over the last four weeks, more of them lately, for the
    results page's charts: the same ones each run (a fixed seed), but for the dates."""
    rng = random.Random(25)  # made-up data for a picture, not a secret  # nosec B311
    start = store.now()
    for number in range(count):
        received = start - timedelta(days=rng.triangular(0, 28, 0))
        age = min(max(round(rng.gauss(38, 14)), 14), 90) if rng.random() < 0.9 else ""
        hobbies = [value for n, value in enumerate(app.HOBBIES) if rng.random() < 0.7 / (n + 1)]
        with mock.patch.object(store, "now", return_value=received):
            database.save(f"seed{number:018}", {"age": str(age), "hobbies": hobbies})


def main(folder: Path) -> None:
    """Serve the app from the Procfile and save <state>-<screen>.png for each state and screen;
    the results page shows the submissions seed() made. Two servers, each on a database of its
    own in a temporary folder, never `make run`'s: one that saves, and one that cannot, for the
    form that could not be saved."""
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit(f"chromium not found: {INSTALL_HINTS['chromium']}")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work, ExitStack() as servers:

        def serve(name: str, database_url: str) -> str:
            """Start the app on a database, until the end; return its address."""
            log = Path(work) / f"{name}.log"
            environ = {"DATABASE_URL": database_url, **owner_environ()}
            server = start_server(SERVER_COMMANDS["procfile"], log, environ=environ)
            servers.callback(server.stop)
            return server.url

        saving = f"sqlite:///{Path(work) / store.FILE_NAME}"
        database = store.connect(saving)
        database.migrate()
        seed(database)
        database.close()
        url = serve("saving", saving)
        unsaved_url = serve("unsaved", unsaved_database_url(Path(work)))
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            for screen, viewport in SCREENS.items():
                page = browser.new_page(viewport=viewport)
                for state in STATES:
                    reach(page, state, url, unsaved_url)
                    # The whole page: the results are longer than a screen.
                    page.screenshot(path=folder / f"{state}-{screen}.png", full_page=True)
                    print(folder / f"{state}-{screen}.png")
                page.close()
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
