"""Debian's Chromium driven by Playwright for Python (never a browser Playwright downloads).

``async with chromium() as ctx:`` gives a fresh :class:`BrowserContext` (its own user data
directory, removed afterwards); :func:`screenshot` saves a page as a PNG.  The flags keep the
browser from reaching anything but what a test opens (no background networking, no component
updates, no sync) and let it run as root in CI (``--no-sandbox``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, Page, async_playwright

CHROMIUM = Path(os.environ.get("PEERSM_CHROMIUM", "/usr/bin/chromium"))
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",  # play() from a test, without a click
)


@asynccontextmanager
async def chromium(*, viewport: tuple[int, int] = (1280, 800)) -> AsyncIterator[BrowserContext]:
    """A Chromium context with a fresh profile; closed and its profile removed on exit."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="peersm-chromium-") as profile:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=list(ARGS),
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                yield ctx
            finally:
                await ctx.close()


async def screenshot(page: Page, directory: Path, name: str, *, full_page: bool = True) -> Path:
    """Save ``page`` as ``directory/<name>.png`` (the name reduced to letters, digits, - and _)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") + ".png")
    await page.screenshot(path=str(path), full_page=full_page)
    return path
