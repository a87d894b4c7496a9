"""A real headless Chromium (Debian's `chromium`), started once per session and driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Owner

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "console"
# Short, so a broken page fails fast instead of eating the suite's time.
TIMEOUT_MS = 10_000


def chromium_path() -> str | None:
    """HOOKYARD_CHROMIUM, else Debian's `chromium` on PATH."""
    for candidate in (os.environ.get("HOOKYARD_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright: pip install -e '.[dev]'")
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests need Chromium: apt-get install chromium (.ci/run and `make test` install it)")
    async with async_playwright() as playwright:
        # As root (CI containers) Chromium refuses to start with its sandbox.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = await playwright.chromium.launch(executable_path=path, args=args)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) and page at laptop width."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    yield tab
    await context.close()


async def sign_in(page: Any, base_url: str, owner: Owner) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(f"{base_url}/console/sign-in")
    await page.get_by_label("API key").fill(owner.key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/console/inbox")


async def screenshot(page: Any, name: str) -> None:
    """Keep a picture of the page for review (test-artefacts/console, not committed)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
