"""`make screenshots`: PNGs of the four states of the page, on a phone and on a desktop."""

import shutil
import sys
import tempfile
from pathlib import Path

from helpers import SERVER_COMMANDS
from pages import DESKTOP, INSTALL_HINTS, PHONE, STATES, launch
from playwright.sync_api import sync_playwright

from deploy.servers import start_server

SCREENS = {"phone": PHONE, "desktop": DESKTOP}


def main(folder: Path) -> None:
    """Serve the app from the Procfile and save <state>-<screen>.png for each state and screen."""
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit(f"chromium not found: {INSTALL_HINTS['chromium']}")
    folder.mkdir(parents=True, exist_ok=True)
    server = start_server(SERVER_COMMANDS["procfile"], Path(tempfile.mkdtemp()) / "server.log")
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            for screen, viewport in SCREENS.items():
                page = browser.new_page(viewport=viewport)
                for state, open_state in STATES.items():
                    open_state(page, server.url)
                    page.screenshot(path=folder / f"{state}-{screen}.png")
                    print(folder / f"{state}-{screen}.png")
                page.close()
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
