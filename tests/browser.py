"""A real Chromium for the UI tests: Debian's ``/usr/bin/chromium`` driven by Playwright's async API.

Never ``playwright install``: ``.ci/run`` installs the apt packages ``chromium`` and ``fonts-wqy-microhei`` (the
Chinese text must render, the screenshots are looked at). Use::

    async with open_page(server.http) as page:
        await login(page, "sup", PASSWORD)
        ...
        await screenshot(page, "console-alert")

Screenshots go to ``var/test-artifacts/screenshots/`` (gitignored). Errors the page logs are collected in
``page_errors(page)`` so a test can assert the page ran clean.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Page, async_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CM_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "var" / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}

_errors: dict[int, list[str]] = {}


@contextlib.asynccontextmanager
async def open_page(base_url: str) -> AsyncIterator[Page]:
    """A fresh browser (no cookies) with one page on ``base_url``; closed on exit."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        context = await browser.new_context(base_url=base_url, viewport=VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
        page = await context.new_page()
        errors: list[str] = []
        _errors[id(page)] = errors
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        try:
            yield page
        finally:
            _errors.pop(id(page), None)
            await browser.close()


def chromium_path() -> str:
    if not CHROMIUM.exists():  # fail loudly: the browser tests never skip
        raise RuntimeError(f"{CHROMIUM} missing: apt-get install -y chromium fonts-wqy-microhei (see .ci/run)")
    return str(CHROMIUM)


def page_errors(page: Page) -> list[str]:
    return list(_errors.get(id(page), []))


async def login(page: Page, username: str, password: str, next_path: str = "/") -> None:
    """Through the login page, as a person would; lands on ``next_path``."""
    await page.goto(next_path)  # a page behind auth sends the browser to /login?next=...
    await page.wait_for_url(lambda url: "/login?next=" in url)
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-submit")
    await page.wait_for_url(lambda url: "/login" not in url)


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path
