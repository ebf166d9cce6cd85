"""Issue 11's browser acceptance: the web UI of real peer processes, driven in Debian's Chromium.

A testnet of 8 ``peersm up`` peers over WebRTC on 127.N.0.1 (peer.app.testnet); the holder's
upload is capped (``--max-upload``) so that a download lasts long enough to be watched, paused
and played while it runs.

- share and download through the pages: a file chosen on the Share page of the holder, the link
  copied from that page and pasted into the Downloads page of another peer; the row reaches
  100 %; its figures are the API's; pause stops the progress; the export made through the page
  has the original's sha256; cancel removes a download. A PNG of each page goes to
  ``$PEERSM_SCREENSHOTS`` (default: the test's tmp dir).

CI runs it inside ``unshare -n`` (.ci/run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Dialog, Page

from tests.webui.media import MediaSpec, Variant, write_media
from tests.webui.uikit import Peer, capped_net, login, paste_link, peer, running_testnet, sha256

pytestmark = [pytest.mark.e2e, pytest.mark.needs_tool("chromium")]

HOLDER, REQUESTER, OTHER = 1, 6, 3
CAP = 1_000_000  # the holder's upload cap, bytes/s


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("uinet")
    with running_testnet(capped_net(d, HOLDER, CAP)) as state:
        yield state


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("PEERSM_SCREENSHOTS") or tmp_path / "screenshots")


def answer_dialogs(page: Page, prompt_answer: str) -> list[str]:
    """Accept every dialog (a prompt with ``prompt_answer``); returns the messages seen."""
    seen: list[str] = []

    async def on_dialog(d: Dialog) -> None:
        seen.append(f"{d.type}: {d.message}")
        await d.accept(prompt_answer if d.type == "prompt" else None)

    page.on("dialog", on_dialog)
    return seen


async def row_of(page: Page, name: str) -> Any:
    return page.locator("#rows tr", has=page.locator("td.name", has_text=name))


async def wait_have(p: Peer, id_: str, pred: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d = await p.get(f"/api/downloads/{id_}")
        if d["state"] == "failed":
            raise AssertionError(f"the download failed: {d}")
        if pred(d):
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {d}")
        await _sleep(0.1)


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_share_download_export_pause_cancel(net: dict[str, Any], tmp_path: Path, shots: Path) -> None:
    from tests.webui.browser import chromium, screenshot

    holder, requester, other = peer(net, HOLDER), peer(net, REQUESTER), peer(net, OTHER)
    clip = write_media(tmp_path / "talk.mp4", Variant.MP4_FASTSTART, MediaSpec(seconds=20))
    size = clip.stat().st_size
    digest = sha256(clip)
    async with chromium() as ctx:
        await ctx.grant_permissions(["clipboard-read", "clipboard-write"])
        # the Share page of the holder: choose the file, copy the link
        share, share_origin = await login(ctx, holder)
        await share.goto(f"{share_origin}/ui/share")
        await share.set_input_files("#file", str(clip))
        await share.locator("#result").wait_for(state="visible", timeout=60_000)
        await share.locator("#qr").wait_for(state="visible", timeout=10_000)
        assert await share.locator("#result-name").text_content() == "talk.mp4"
        await share.click("#copy")
        await share.locator("#copy", has_text="Copied").wait_for(timeout=5_000)
        link = await share.evaluate("() => navigator.clipboard.readText()")
        assert link == await share.input_value("#link")
        assert link.startswith("peersm:")
        # the page's figures are the API's
        shares = (await holder.get("/api/shares"))["shares"]
        (mine,) = [s for s in shares if s.get("link") == link or s.get("name") == "talk.mp4"]
        status = await share.text_content("#status")
        assert status == f"Shared talk.mp4 ({await share.evaluate('fmtBytes', size)}).", status
        assert mine["size"] == size
        await screenshot(share, shots, "share", full_page=False)

        # the Downloads page of the requester: paste the link
        dl, dl_origin = await login(ctx, requester)
        prompts = answer_dialogs(dl, "talk-export.mp4")
        await paste_link(dl, dl_origin, link)
        row = await row_of(dl, "talk.mp4")
        await row.wait_for(timeout=30_000)
        id_ = (await requester.get("/api/downloads"))["downloads"][0]["id"]
        await wait_have(requester, id_, lambda d: d["have"] > 0, "no piece arrived", 120)
        # pause stops the progress (pieces already in flight may still land)
        await row.get_by_role("button", name="Pause").click()
        await row.get_by_role("button", name="Resume").wait_for(timeout=10_000)
        await _sleep(1.5)
        have0 = (await requester.get(f"/api/downloads/{id_}"))["have"]
        await _sleep(3)
        paused = await requester.get(f"/api/downloads/{id_}")
        assert paused["paused"] and not paused["running"], paused
        assert paused["have"] == have0 < paused["total"], (have0, paused)
        pct = await row.locator("td").nth(1).text_content()
        assert pct is not None and f"{100 * paused['have'] / paused['total']:.1f}%" in pct, (pct, paused)
        await row.get_by_role("button", name="Resume").click()
        await row.get_by_role("button", name="Pause").wait_for(timeout=10_000)
        # progress reaches 100 % on the page
        await row.locator("td", has_text="100.0%").wait_for(timeout=120_000)
        # every piece is verified; the download is complete once they are stored
        await row.locator("td.state-complete").wait_for(timeout=30_000)
        done = await requester.get(f"/api/downloads/{id_}")
        assert done["state"] == "complete", done
        cells = [await c.text_content() for c in await row.locator("td").all()]
        fb = await dl.evaluate("([a, b]) => [fmtBytes(a), fmtBytes(b)]", [done["bytes"], done["size"]])
        assert f"100.0% ({fb[0]} of {fb[1]})" in (cells[1] or ""), cells
        assert cells[4] == f"{done['circuits']} / {done['ordbs']}", cells
        assert done["size"] == size
        await screenshot(dl, shots, "downloads", full_page=False)
        # export through the page: the copy's sha256 is the original's
        await row.get_by_role("button", name="Export").click()
        notice = dl.locator("#notice", has_text="Saved as ")
        await notice.wait_for(timeout=30_000)
        assert any(p.startswith("prompt:") for p in prompts), prompts
        saved = Path(((await notice.text_content()) or "").removeprefix("Saved as "))
        assert saved.name == "talk-export.mp4"
        assert sha256(saved) == digest

        # the player (screenshot) on the finished download
        await row.get_by_role("button", name="Play").click()
        await dl.wait_for_url(f"{dl_origin}/ui/player")
        await dl.wait_for_function(
            "() => { const v = document.querySelector('video'); return v && v.currentTime > 1; }",
            timeout=30_000,
        )
        await screenshot(dl, shots, "player", full_page=False)

        # Library (holder) and Network (requester): their figures are the API's
        await share.goto(f"{share_origin}/ui/library")
        lib_row = share.locator("#rows tr", has=share.locator("td.name", has_text="talk.mp4"))
        await lib_row.wait_for(timeout=10_000)
        lib = [await c.text_content() for c in await lib_row.locator("td").all()]
        assert lib[1] == await share.evaluate("fmtBytes", size), lib
        assert lib[2] == "video/mp4", lib
        await screenshot(share, shots, "library", full_page=False)
        await dl.goto(f"{dl_origin}/ui/network")
        await dl.locator("#links tr").first.wait_for(timeout=10_000)
        network = await requester.get("/api/network")
        status_doc = await requester.get("/api/status")
        assert await dl.locator("#links tr").count() == len(network["links"]) == len(status_doc["links"])
        await screenshot(dl, shots, "network", full_page=True)

        # cancel removes a download (another peer, another file from the capped holder)
        clip2 = write_media(tmp_path / "second.mp4", Variant.MP4_FASTSTART, MediaSpec(seconds=20))
        link2 = str((await holder.post("/api/shares", {"path": str(clip2), "encrypt": False}))["link"])
        ot, ot_origin = await login(ctx, other)
        confirms = answer_dialogs(ot, "")
        await paste_link(ot, ot_origin, link2)
        row2 = await row_of(ot, "second.mp4")
        await row2.get_by_role("button", name="Cancel").click(timeout=30_000)
        await row2.wait_for(state="detached", timeout=10_000)
        assert any(c.startswith("confirm:") for c in confirms), confirms
        assert (await other.get("/api/downloads"))["downloads"] == []


async def test_an_encrypted_share_from_a_local_path_downloads_and_exports(
    net: dict[str, Any], tmp_path: Path
) -> None:
    """The same for an encrypted share, shared from a path typed on the Share page: the holder's
    library says encrypted, the requester's row reaches 100 % under the share's real name (read
    from the decrypted manifest), and the export is the original."""
    from tests.webui.browser import chromium

    holder, requester = peer(net, HOLDER), peer(net, REQUESTER)
    clip = write_media(tmp_path / "secret.webm", Variant.WEBM, MediaSpec(seconds=8))
    digest = sha256(clip)
    async with chromium() as ctx:
        share, share_origin = await login(ctx, holder)
        await share.goto(f"{share_origin}/ui/share")
        await share.check("#encrypt")
        await share.fill("#path", str(clip))
        await share.click("#share-path")
        await share.locator("#result").wait_for(state="visible", timeout=60_000)
        link = await share.input_value("#link")
        lib = (await holder.get("/api/library"))["shares"]
        (mine,) = [s for s in lib if s["link"] == link]
        assert mine["encrypted"] and mine["name"] == "secret.webm", mine

        dl, dl_origin = await login(ctx, requester)
        answer_dialogs(dl, "secret-export.webm")
        await paste_link(dl, dl_origin, link)
        row = await row_of(dl, "secret.webm")
        await row.locator("td", has_text="100.0%").wait_for(timeout=120_000)
        await row.get_by_role("button", name="Export").click()
        notice = dl.locator("#notice", has_text="Saved as ")
        await notice.wait_for(timeout=30_000)
        saved = Path(((await notice.text_content()) or "").removeprefix("Saved as "))
        assert saved.name == "secret-export.webm"
        assert sha256(saved) == digest
