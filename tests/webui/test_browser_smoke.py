"""Debian's Chromium plays each test-media variant (tests/webui/media.py) served with HTTP Range.

A tiny aiohttp server on 127.0.0.1 serves a blank page and the files (``FileResponse`` answers
Range requests: the index-at-the-end MP4 is only playable through them); Chromium, driven by
Playwright, plays each one until ``currentTime`` passes 1 s, then seeks to 80 % and plays on
past the seek point.  This proves the media and the browser before the peer's stream endpoint
is put between them.  CI runs it inside ``unshare -n`` (.ci/run).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.webui.media import MediaSpec, Variant, write_all

pytestmark = [pytest.mark.e2e, pytest.mark.needs_tool("chromium")]

PAGE = b"<!doctype html><title>player</title><video id=v preload=auto muted></video>"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[Variant, Path]:
    return write_all(tmp_path_factory.mktemp("media"), MediaSpec(seconds=6))


@pytest.fixture
async def server(media: dict[Variant, Path]) -> AsyncIterator[tuple[str, list[str]]]:
    """The base URL, and the Range headers the media requests carried."""
    ranges: list[str] = []
    by_name = {p.name: p for p in media.values()}

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def file(request: web.Request) -> web.StreamResponse:
        path = by_name.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        ranges.append(request.headers.get("Range", ""))
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/media/{name}", file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", ranges
    finally:
        await runner.cleanup()


PLAY = """async (src) => {
  const v = document.getElementById('v');
  v.src = src;
  await v.play();
  return v.duration;
}"""
PLAYED_PAST = "([t]) => { const v = document.getElementById('v'); return !v.paused && v.currentTime > t; }"
SEEK = "(t) => { const v = document.getElementById('v'); v.currentTime = t; }"
# resolves with the media time of the first video frame shown past t (audio alone cannot pass)
FRAME_PAST = """(t) => new Promise((resolve) => {
  const v = document.getElementById('v');
  const f = (now, meta) => meta.mediaTime > t ? resolve(meta.mediaTime) : v.requestVideoFrameCallback(f);
  v.requestVideoFrameCallback(f);
})"""


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
async def test_chromium_plays_and_seeks(
    variant: Variant, media: dict[Variant, Path], server: tuple[str, list[str]], tmp_path: Path
) -> None:
    from tests.webui.browser import chromium, screenshot

    base, ranges = server
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.goto(base + "/")
        duration = await page.evaluate(PLAY, f"{base}/media/{media[variant].name}")
        assert duration == pytest.approx(6.0, abs=0.1)
        await page.wait_for_function(PLAYED_PAST, arg=[1.0], timeout=20_000)
        target = 0.8 * duration
        await page.evaluate(SEEK, target)
        await page.wait_for_function(PLAYED_PAST, arg=[target + 0.3], timeout=20_000)
        shown = await asyncio.wait_for(page.evaluate(FRAME_PAST, target + 0.3), 20)
        assert shown > target + 0.3
        assert await page.evaluate("document.getElementById('v').videoWidth") == 640
        error = await page.evaluate("document.getElementById('v').error")
        assert error is None
        shot = await screenshot(page, tmp_path, f"smoke {variant.value}", full_page=False)
        assert shot.read_bytes().startswith(b"\x89PNG")
    assert any(r.startswith("bytes=") for r in ranges)  # the browser asked by Range
