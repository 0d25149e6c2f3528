"""Debian's chromium driven by Playwright (never `playwright install`): the dashboard tests'
browser, and the mark that skips them, saying why, where it is not installed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ""

needs_chromium = pytest.mark.skipif(
    not CHROMIUM, reason="Debian's chromium package is not installed (apt-get install chromium)"
)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium, closed afterwards."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()
