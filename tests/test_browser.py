"""The app in a real browser: Debian's headless Chromium, driven by Playwright.

Playwright's own browser download is never used (it needs the network); the
system /usr/bin/chromium is. Screenshots of every tab land in test-artifacts/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
TABS = ["Classify", "Compare", "Fine-tune", "About"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser_page(running_app, tmp_path_factory):
    """A fresh Chromium profile on the app's page, and the uncaught page errors it reports."""
    on_ci = os.environ.get("CI") == "true"
    if not CHROMIUM.exists():
        if on_ci:
            pytest.fail(f"{CHROMIUM} is missing on CI: install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests")
    if on_ci:
        import playwright.sync_api as playwright_api
    else:
        playwright_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=FLAGS, headless=True, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(running_app.url, wait_until="domcontentloaded")  # "networkidle" never comes: the page keeps a stream open
        try:
            yield page, errors
        finally:
            context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_the_page_shows_the_offline_banner(browser_page):
    page, _ = browser_page
    banner = page.locator("#weights-banner")
    banner.wait_for()
    assert "Offline: the ImageNet weights are not reachable" in banner.inner_text()


@pytest.mark.parametrize("tab", TABS)
def test_each_tab_opens(browser_page, artifacts, tab):
    page, _ = browser_page
    open_tab(page, tab)
    selected = page.get_by_role("tab", name=tab, exact=True)
    assert selected.get_attribute("aria-selected") == "true"
    if tab == "About":
        about = page.get_by_text("Why ResNet-18 has 18 layers")
        about.wait_for()
        table = page.locator("table", has_text="layer4").first
        table.wait_for()
        assert "residual blocks" in table.inner_text()
    shot = artifacts / f"tab-{tab.lower()}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0


def test_classify_an_example_digit_in_the_browser(browser_page, artifacts):
    page, _ = browser_page
    open_tab(page, "Classify")
    digit = page.locator("img[src*='mnist-digit-3']")
    shown = digit.count()  # the example thumbnails
    digit.first.click()
    # The example reaches the Image input asynchronously; "Classify" before that is "no image".
    page.wait_for_function(f"() => document.querySelectorAll(\"img[src*='mnist-digit-3']\").length > {shown}")
    page.get_by_role("button", name="Classify", exact=True).click()

    label = page.locator("#classify-label")
    try:
        page.wait_for_function(
            "() => /\\b[0-9]\\b[\\s\\S]*%/.test(document.querySelector('#classify-label')?.innerText ?? '')",
            timeout=TIMEOUT_MS,
        )
    finally:
        page.screenshot(path=str(artifacts / "classify-result.png"), full_page=True)
    assert re.search(r"^[0-9]$", label.inner_text(), re.MULTILINE) and "%" in label.inner_text()


def test_the_page_raised_no_uncaught_errors(browser_page):
    _, errors = browser_page
    assert errors == []

