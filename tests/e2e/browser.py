"""Debian's chromium driven by Playwright (never `playwright install`): the dashboard tests'
browser, and the mark that skips them, saying why, where it is not installed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

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


def open_dashboard(browser: Browser, orchestrator: str, key: str, problems: list[str], route: str = "") -> Page:
    """A page of the dashboard at `orchestrator`, signed in with `key`, on `route` (`#/evals`,
    ...); Content Security Policy violations and page errors land in `problems`."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    expect.set_options(timeout=30_000)
    page.goto(f"{orchestrator}/ui/{route}")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#connection")).to_have_text("connected")
    return page
