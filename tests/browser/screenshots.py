"""`make screenshots`: PNGs of each state of the pages, on a phone and on a desktop."""

import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from helpers import SERVER_COMMANDS
from pages import DESKTOP, INSTALL_HINTS, PHONE, STATES, launch, reach, unsaved_database_url
from playwright.sync_api import sync_playwright

import store
from deploy.servers import start_server

SCREENS = {"phone": PHONE, "desktop": DESKTOP}


def main(folder: Path) -> None:
    """Serve the app from the Procfile and save <state>-<screen>.png for each state and screen.
    Two servers, each on a database of its own in a temporary folder, never `make run`'s: one
    that saves, and one that cannot, for the form that could not be saved."""
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit(f"chromium not found: {INSTALL_HINTS['chromium']}")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work, ExitStack() as servers:

        def serve(name: str, database_url: str) -> str:
            """Start the app on a database, until the end; return its address."""
            log, environ = Path(work) / f"{name}.log", {"DATABASE_URL": database_url}
            server = start_server(SERVER_COMMANDS["procfile"], log, environ=environ)
            servers.callback(server.stop)
            return server.url

        saving = f"sqlite:///{Path(work) / store.FILE_NAME}"
        store.connect(saving).migrate()
        url = serve("saving", saving)
        unsaved_url = serve("unsaved", unsaved_database_url(Path(work)))
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            for screen, viewport in SCREENS.items():
                page = browser.new_page(viewport=viewport)
                for state in STATES:
                    reach(page, state, url, unsaved_url)
                    page.screenshot(path=folder / f"{state}-{screen}.png")
                    print(folder / f"{state}-{screen}.png")
                page.close()
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
