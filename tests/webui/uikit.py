"""Helpers for the browser tests of the web UI on a testnet of real peer processes.

- :func:`running_testnet`: ``peersm testnet`` (peer.app.testnet) in a directory, stopped on exit;
- :class:`Peer`: one peer of it: its API client (blocking calls run in a thread) and UI origin;
- :func:`login`: a fresh one-time code from ``POST /api/ui/code`` opened as a top-level
  navigation in a new tab, which lands on a page of the UI with the token in that tab's
  ``sessionStorage`` and the session cookie set.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page

from peer.app.apiclient import ApiClient
from peer.app.testnet import NetSpec, launch_testnet, stop_testnet


@contextmanager
def running_testnet(spec: NetSpec) -> Iterator[dict[str, Any]]:
    """A started testnet's state (``peer.app.testnet``); every process stopped on exit."""
    state = launch_testnet(spec)
    try:
        yield state
    finally:
        stop_testnet(spec.dir)


@dataclass(frozen=True)
class Peer:
    """One peer of a testnet, as the tests reach it."""

    data_dir: Path

    def client(self) -> ApiClient:
        return ApiClient.from_data_dir(self.data_dir, timeout=60)

    async def get(self, path: str) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.client().get(path))

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.client().post(path, body))

    async def origin(self) -> str:
        url = (await self.post("/api/ui/code", {}))["url"]
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"


def peer(state: dict[str, Any], i: int) -> Peer:
    return Peer(Path(state["peers"][i]["data_dir"]))


async def login(ctx: BrowserContext, p: Peer, page: Page | None = None) -> tuple[Page, str]:
    """Open a fresh login link of ``p`` in ``page`` (a new tab by default); the tab and the UI's origin."""
    url = str((await p.post("/api/ui/code", {}))["url"])
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if page is None:
        page = await ctx.new_page()
    await page.goto(url)
    await page.wait_for_url(f"{origin}/ui/**", timeout=20_000)
    assert "code=" not in page.url
    assert await page.evaluate("() => !!sessionStorage.getItem('peersm-token')")
    return page, origin


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def poll(page: Page, seconds: float) -> None:
    await page.wait_for_timeout(seconds * 1000)


def capped_net(d: Path, holder: int, cap: int) -> NetSpec:
    """8 stable peers, 3 links each, no exit; ``holder``'s upload capped at ``cap`` bytes/s."""
    return NetSpec(
        peers=8, dir=d, links=3, exits=0, stable=True, peer_args={holder: ("--max-upload", str(cap))}
    )


async def paste_link(page: Page, origin: str, link: str) -> None:
    """Start a download the way a user does: the link pasted on the Downloads page."""
    await page.goto(f"{origin}/ui/downloads")
    await page.fill("#link", link)
    await page.click("#start")
