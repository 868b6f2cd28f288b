"""Headless Chromium for the browser tests: Debian's build, driven by Playwright."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# No sandbox (the tests run as root), no GPU, and none of Chromium's own calls home: on a machine
# without the internet they are refused, many at a time, and slow the start.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def launch(playwright: Any) -> Any:
    """A headless browser from a started `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
