"""A real headless Chromium for the tests that look at a page as a person does: Debian's ``chromium``, driven by
Playwright's Python package (never a browser Playwright downloads), and a screenshot of what was on the screen
when such a test fails."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from components import require_component

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it)
WAIT_MS = 60_000  # as long as dev_helpers waits for up: two cores shared with other test runs


def chromium_browser() -> Iterator[Browser]:
    """A headless Chromium, closed after use; skipped when there is none (failed under CI=true)."""
    if not CHROMIUM.exists():
        require_component("chromium", f"no {CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        require_component("playwright", "pip install -e '.[test]'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for a test module."""
    yield from chromium_browser()


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Page]:
    """A fresh page (its own context: no cookies or cache from another test)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def see(page: Page, locator: Locator, text: str | re.Pattern[str], what: str, shots: Path) -> None:
    """Wait until ``locator`` shows ``text``; else fail saying what was awaited and what the page showed, with a
    screenshot saved under ``shots`` (pytest's tmp dir for the test)."""
    __tracebackhide__ = True
    from playwright.sync_api import expect

    try:
        expect(locator).to_have_text(text, timeout=WAIT_MS)
    except AssertionError as exc:
        shot = shots / f"screenshot-{len(list(shots.glob('screenshot-*.png')))}.png"
        page.screenshot(path=str(shot), full_page=True)
        seen = page.locator("body").inner_text()
        raise AssertionError(f"waited for {what}: {exc}\nthe page showed:\n{seen}\nscreenshot: {shot}") from None
