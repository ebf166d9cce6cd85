"""Issue 11's streaming acceptance: a video plays in the player page while its download runs.

A testnet of 8 ``peersm up`` peers over WebRTC on 127.N.0.1; the holder's upload is capped
(``--max-upload``, :data:`CAP` bytes/s) well under what the whole file needs, so the download is
still running while the test watches it play. For each of a 60 s video's three shapes (MP4 with
its index at the front, MP4 with its index at the end, WebM: made here with PyAV at about
2.5 Mbit/s), and for an encrypted share of one of them:

- the link is pasted into the requester's Downloads page, Play pressed on its row, and the
  player's ``<video>`` (reading ``/stream/<hash_name>``) passes 3 s while the download is
  still running;
- at that moment the keyframe a seek to 80 % needs is not held (``GET .../ranges``); the test
  seeks there and the video plays past the seek point, with the download still running;
- by then the bytes at that keyframe are held, while the contiguous prefix of the file has not
  reached them: the playhead went first, it was not a fast sequential fetch;
- the play time (from pressing Play to playing after the seek) is at most a third of the
  download's duration: by then at most a third of the file is held (the download started a moment
  before Play), so at the same rate the rest takes at least twice as long again.

CI runs it inside ``unshare -n`` (.ci/run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.webui.media import MediaSpec, Variant, keyframe_at, probe, write_media
from tests.webui.uikit import Peer, capped_net, login, paste_link, peer, running_testnet

pytestmark = [pytest.mark.e2e, pytest.mark.needs_tool("chromium")]

HOLDER, REQUESTER = 2, 5
CAP = 300_000  # the holder's upload cap, bytes/s: about the video's own rate
# 60 s at about 2.5 Mbit/s (the issue asks for 2-5), small frames so that making them is quick
SPEC = MediaSpec(seconds=60, width=320, height=180, bitrate=2_500_000)
CASES = [
    (Variant.MP4_FASTSTART, False),
    (Variant.MP4_INDEX_END, False),
    (Variant.WEBM, False),
    (Variant.MP4_INDEX_END, True),
]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("streamnet")
    with running_testnet(capped_net(d, HOLDER, CAP)) as state:
        yield state


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[Variant, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {v: write_media(d / f"movie-{v.value}{v.suffix}", v, SPEC) for v in Variant}


def holds(doc: dict[str, Any], offset: int) -> bool:
    return any(a <= offset < b for a, b in doc["ranges"])


def prefix(doc: dict[str, Any]) -> int:
    """Where the contiguous run of bytes held from the file's start ends."""
    return next((b for a, b in doc["ranges"] if a == 0), 0)


async def download_of(p: Peer, name: str) -> dict[str, Any]:
    (d,) = [d for d in (await p.get("/api/downloads"))["downloads"] if d["name"] == name]
    return d


@dataclass
class Case:
    """One video streamed: what it is, and what the test saw of it (seconds from pressing Play)."""

    clip: Path
    variant: Variant
    encrypt: bool
    seek_to: float  # 80 % of the duration
    key_offset: int  # the byte offset of the keyframe a seek there reads from
    timeline: dict[str, float] = field(default_factory=dict)
    requests: list[tuple[float, str | None]] = field(default_factory=list)  # the media element's Ranges

    @property
    def size(self) -> int:
        return self.clip.stat().st_size


@pytest.mark.parametrize(
    ("variant", "encrypt"), CASES, ids=[f"{v.value}{'-encrypted' * e}" for v, e in CASES]
)
async def test_plays_and_seeks_while_it_downloads(
    net: dict[str, Any], videos: dict[Variant, Path], variant: Variant, encrypt: bool, tmp_path: Path
) -> None:
    holder, requester = peer(net, HOLDER), peer(net, REQUESTER)
    clip = videos[variant]
    seek_to = 0.8 * probe(clip).duration
    case = Case(clip, variant, encrypt, seek_to, keyframe_at(clip, seek_to)[1])
    link = str((await holder.post("/api/shares", {"path": str(clip), "encrypt": encrypt}))["link"])
    try:
        await watch(requester, link, case, tmp_path)
    finally:  # the holder's capped upload goes to the next case only
        print(variant.value, "encrypted" * encrypt, case.timeline, case.requests)
        for d in (await requester.get("/api/downloads"))["downloads"]:
            if d["state"] != "complete":
                await requester.post(f"/api/downloads/{d['id']}/cancel", {})


async def watch(requester: Peer, link: str, case: Case, tmp_path: Path) -> None:
    from tests.webui.browser import chromium, screenshot

    size = case.size
    async with chromium() as ctx:
        page, origin = await login(ctx, requester)
        await paste_link(page, origin, link)
        row = page.locator("#rows tr", has=page.locator("td.name", has_text=case.clip.name))
        play = row.get_by_role("button", name="Play")
        await play.wait_for(timeout=90_000)  # shown once the manifest says the type is playable
        d = await download_of(requester, case.clip.name)
        pressed = time.monotonic()

        def mark(what: str) -> None:
            case.timeline[what] = round(time.monotonic() - pressed, 2)

        page.on(
            "request",
            lambda r: (
                case.requests.append((round(time.monotonic() - pressed, 2), r.headers.get("range")))
                if "/stream/" in r.url
                else None
            ),
        )
        await play.click()
        await page.wait_for_url(f"{origin}/ui/player")

        # it plays while the download runs
        await page.wait_for_function(
            "() => { const v = document.querySelector('video'); return v && v.currentTime > 0; }",
            timeout=90_000,
        )
        mark("playing")
        await page.wait_for_function(
            "() => { const v = document.querySelector('video'); return v && v.currentTime > 3; }",
            timeout=90_000,
        )
        mark("past 3 s")
        ranges = f"/api/downloads/{d['id']}/ranges"
        before = await requester.get(ranges)
        now = await requester.get(f"/api/downloads/{d['id']}")
        assert now["running"] and now["bytes"] < size, now
        assert not holds(before, case.key_offset), (case.key_offset, before)

        # a seek to 80 % plays again, before the download completes
        await page.evaluate("(t) => { document.querySelector('video').currentTime = t; }", case.seek_to)
        mark("seek")
        await page.wait_for_function(
            "(t) => { const v = document.querySelector('video'); return !v.seeking && v.currentTime > t + 0.5; }",
            arg=case.seek_to,
            timeout=90_000,
        )
        mark("playing after the seek")
        played = time.monotonic() - pressed
        after = await requester.get(ranges)
        now = await requester.get(f"/api/downloads/{d['id']}")
        assert now["running"] and now["bytes"] < size, now
        # the playhead went first: the keyframe's bytes came before the contiguous prefix got there
        assert holds(after, case.key_offset), (case.key_offset, after)
        assert prefix(after) <= case.key_offset, (case.key_offset, after)
        # the download lasts at least 3 times the play time: at most a third of the file came in
        # while it played (the download started a moment before Play), so at the same rate the
        # rest takes at least twice as long again
        assert now["bytes"] <= size / 3, (now["bytes"], size, played)
        if case.variant is Variant.MP4_FASTSTART and not case.encrypt:
            shots = Path(os.environ.get("PEERSM_SCREENSHOTS") or tmp_path / "screenshots")
            await screenshot(page, shots, "player-streaming", full_page=False)
