"""The stream endpoint against a real chunk store holding part of a share, behind the real API guard.

The peer is not started: the handler reads through :class:`webui.stream.PeerSource` over a real
:class:`ChunkStore` and a real :class:`Downloads` whose download is a stand-in that records the
playhead windows it is given; the test stores pieces itself and reports the progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import PeerError, StorageError
from peer.roles.downloads import Downloads
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink
from storage.types import ByteRange, ImportResult
from storage.verify import verify_pieces
from tests.roles.fakedownload import Factories, FakeDownload
from tests.storage.conftest import write_file
from webui import stream
from webui.server import ApiServer
from webui.stream import STREAM_CSP, Media, PeerSource, content_policy, serve_streams, window

TOKEN = "S" * 20 + "0123456789abcdefghijklm"
PS = 16 << 10
N = 12
SIZE = N * PS - 100
#: Safety net so a broken handler fails the test instead of hanging it (not a speed assertion).
HANG = 20.0


class PlayheadDownload(FakeDownload):
    """The stand-in download, recording each stream's window."""

    def __init__(self, link: ShareLink) -> None:
        super().__init__(link)
        self.windows: dict[int, tuple[int, int, int]] = {}
        self.changed = asyncio.Event()

    def want(self, owner: int, first: int, last: int, *, tail: int = 0) -> None:
        self.windows[owner] = (first, last, tail)
        self.changed.set()

    def unwant(self, owner: int) -> None:
        self.windows.pop(owner, None)
        self.changed.set()

    async def until(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(HANG):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Rig:
    publisher: ChunkStore
    store: ChunkStore
    share: ImportResult
    raw: bytes
    downloads: Downloads
    made: list[PlayheadDownload]
    url: str

    @property
    def hash_name(self) -> bytes:
        return self.share.hash_name

    def path(self, suffix: str = "") -> str:
        return f"{self.url}/stream/{self.hash_name.hex()}{suffix}"

    async def give(self, pieces: range | list[int]) -> None:
        """Store these pieces as a download would: verified against the manifest first."""
        got = []
        for i in pieces:
            got += await self.publisher.get_pieces(self.hash_name, i, i)
        await self.store.put_pieces(self.hash_name, verify_pieces(self.share.manifest, got))

    def start_download(self) -> PlayheadDownload:
        self.downloads.start(self.share.link)
        return self.made[-1]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, *, mime: str = "video/mp4", encrypt: bool = False, store_key: bool = True
) -> AsyncIterator[Rig]:
    src = write_file(tmp_path / "media.bin", SIZE, 5)
    publisher = await ChunkStore.open(tmp_path / "publisher.db")
    store = await ChunkStore.open(tmp_path / "peer.db")
    share = await publisher.import_file(
        src,
        encrypt=encrypt,
        randbytes=random.Random(3).randbytes,
        piece_size=PS,
        mime=mime,
        name="<b>clip</b>.mp4",
    )
    key = share.link.key if store_key else None
    await store.put_manifest(
        await publisher.get_manifest(share.hash_name), expected_hash=share.hash_name, key=key
    )
    made: list[PlayheadDownload] = []

    def make(link: ShareLink) -> PlayheadDownload:
        made.append(PlayheadDownload(link))
        return made[-1]

    f = Factories()
    downloads = Downloads(tmp_path, make, f.export, f.seed)  # type: ignore[arg-type]
    api = ApiServer(token=TOKEN)
    serve_streams(api, PeerSource(lambda: store, downloads))
    url = await api.start("127.0.0.1", 0)
    try:
        yield Rig(publisher, store, share, src.read_bytes(), downloads, made, url)
    finally:
        await api.stop()
        await downloads.close()
        await store.close()
        await publisher.close()


@pytest.fixture
async def video(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(tmp_path) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-Peersm-Token": TOKEN}, auto_decompress=False) as s:
        yield s


def assert_stream_headers(headers: aiohttp.typedefs.LooseHeaders) -> None:
    assert headers["Content-Security-Policy"] == STREAM_CSP  # type: ignore[index]
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]
    assert headers["Cache-Control"] == "no-store"  # type: ignore[index]


# ---- ranges on a partial share ------------------------------------------------------------------
async def test_a_range_of_stored_pieces_is_206_with_its_headers(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    await video.give(range(0, 4))
    async with http.get(video.path(), headers={"Range": "bytes=100-2099"}) as r:
        body = await r.read()
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 100-2099/{SIZE}"
        assert r.headers["Content-Length"] == "2000"
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Content-Type"] == "video/mp4"
        assert r.headers["Content-Disposition"].startswith("inline")
        assert "<" not in r.headers["Content-Disposition"]  # the publisher's name, percent-encoded
        assert_stream_headers(r.headers)
    assert body == video.raw[100:2100]


async def test_the_whole_of_a_complete_share_is_200(video: Rig, http: aiohttp.ClientSession) -> None:
    await video.give(range(N))
    async with http.get(video.path()) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(SIZE)
        assert r.headers["Accept-Ranges"] == "bytes"
        assert "Content-Range" not in r.headers
        assert await r.read() == video.raw
    async with http.head(video.path(), headers={"Range": "bytes=-10"}) as r:
        assert (r.status, r.headers["Content-Range"]) == (206, f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}")
        assert await r.read() == b""


async def test_a_range_past_the_end_is_416(video: Rig, http: aiohttp.ClientSession) -> None:
    async with http.get(video.path(), headers={"Range": f"bytes={SIZE}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{SIZE}"
        assert_stream_headers(r.headers)


async def test_bytes_no_download_can_bring_are_503_not_a_hang(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    await video.give(range(0, 4))
    async with http.get(video.path(), headers={"Range": f"bytes={5 * PS}-"}) as r:
        assert r.status == 503
        assert "resume" in (await r.json())["error"]
        assert_stream_headers(r.headers)


async def test_unknown_shares_bad_names_and_file_lists_are_404(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{video.url}/stream/{'ab' * 32}") as r:
        assert r.status == 404 and "start its download" in (await r.json())["error"]
    async with http.get(f"{video.url}/stream/not-a-hash") as r:
        assert r.status == 404
    async with http.get(video.path("/clip.mp4")) as r:
        assert r.status == 404
        assert "not a list of files" in (await r.json())["error"]
        assert_stream_headers(r.headers)


async def test_the_guard_still_runs_and_its_refusal_is_sandboxed(video: Rig) -> None:
    async with aiohttp.ClientSession() as anonymous, anonymous.get(video.path()) as r:
        assert r.status == 401
        assert_stream_headers(r.headers)


# ---- the MIME policy ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mime", "inline"),
    [
        ("video/mp4", True),
        ("audio/ogg; codecs=opus", True),
        ("image/png", True),
        ("text/html", False),
        ("image/svg+xml", False),
        ("image/svg", False),
        ("IMAGE/SVG+XML; charset=utf-8", False),
        ("application/javascript", False),
        ("text/xml", False),
        ("", False),
    ],
)
async def test_only_media_goes_inline(tmp_path: Path, mime: str, inline: bool) -> None:
    async with rig(tmp_path, mime=mime) as r:
        await r.give(range(N))
        async with (
            aiohttp.ClientSession(headers={"X-Peersm-Token": TOKEN}) as http,
            http.get(r.path()) as resp,
        ):
            assert resp.status == 200
            assert_stream_headers(resp.headers)
            if inline:
                assert resp.headers["Content-Type"] == mime.split(";")[0].lower()
                assert resp.headers["Content-Disposition"].startswith("inline")
            else:
                assert resp.headers["Content-Type"] == "application/octet-stream"
                assert resp.headers["Content-Disposition"].startswith("attachment")


@given(st.text(max_size=40) | st.sampled_from(["image/svg+xml", "video/mp4", "image/x-icon", "text/html"]))
def test_the_policy_sends_inline_only_audio_video_and_plain_images(mime: str) -> None:
    ctype, inline = content_policy(mime)
    top, _, sub = ctype.partition("/")
    if inline:
        assert top in ("audio", "video", "image") and "svg" not in sub and "xml" not in sub
        assert ctype == mime.split(";")[0].strip(" \t").lower()
    else:
        assert ctype == "application/octet-stream"
    assert "\r" not in ctype and "\n" not in ctype


# ---- waiting for pieces, the playhead -----------------------------------------------------------
async def test_a_response_waits_for_a_missing_piece_and_completes_when_it_is_stored(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    await video.give(range(0, 4))
    d = video.start_download()
    async with http.get(video.path()) as r:
        assert r.status == 200 and r.headers["Content-Length"] == str(SIZE)
        head = await r.content.readexactly(4 * PS)  # what is stored goes out at once
        await d.until(lambda: any(w[0] == 4 for w in d.windows.values()))
        ((first, last, tail),) = d.windows.values()
        assert (first, last, tail) == (4, N - 1, -(-stream.TAIL // PS))  # the playhead, and the index early
        await video.give(range(4, N))
        d.step(N, N)  # the download reports progress: the response goes on
        rest = await r.read()
    assert head + rest == video.raw
    await d.until(lambda: not d.windows)  # the response ended: its window is released
    assert d.listeners == []


async def test_a_seek_puts_a_new_window_at_the_new_offset_and_keeps_the_old(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    await video.give(range(0, 2))
    d = video.start_download()
    seek = int(SIZE * 0.8)
    async with http.get(video.path(), headers={"Range": "bytes=0-"}) as first:
        await first.content.readexactly(2 * PS)
        await d.until(lambda: len(d.windows) == 1)

        async def seek_to() -> tuple[int, bytes]:
            async with http.get(video.path(), headers={"Range": f"bytes={seek}-"}) as second:
                return second.status, await second.read()

        second = asyncio.ensure_future(seek_to())  # its headers wait for its first bytes
        await d.until(lambda: len(d.windows) == 2)
        assert sorted(w[0] for w in d.windows.values()) == [2, seek // PS]
        await video.give(range(seek // PS, N))
        d.step(5, N)
        assert await second == (206, video.raw[seek:])
        await d.until(lambda: len(d.windows) == 1)  # the seek's window is released, the first stays
        assert [w[0] for w in d.windows.values()] == [2]


async def test_a_client_that_leaves_mid_wait_releases_its_window(
    video: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "LIVENESS", 0.05)
    await video.give(range(0, 4))
    d = video.start_download()
    host = video.url.removeprefix("http://")
    _, writer = await asyncio.open_connection(*host.split(":"))
    writer.write(
        f"GET /stream/{video.hash_name.hex()} HTTP/1.1\r\nHost: {host}\r\nX-Peersm-Token: {TOKEN}\r\n"
        f"Range: bytes={6 * PS}-\r\n\r\n".encode()
    )
    await writer.drain()
    await d.until(lambda: bool(d.windows))
    assert next(iter(d.windows.values()))[0] == 6
    assert len(d.listeners) == 1
    writer.close()
    await writer.wait_closed()
    await d.until(lambda: not d.windows)
    assert d.listeners == []


async def test_a_stopped_download_ends_a_waiting_response_short(
    video: Rig, http: aiohttp.ClientSession
) -> None:
    await video.give(range(0, 4))
    d = video.start_download()
    async with http.get(video.path()) as r:
        await r.content.readexactly(4 * PS)
        await d.until(lambda: bool(d.windows))
        d.fail(PeerError("gone"))  # the download fails
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(HANG):
                await r.read()
    await d.until(lambda: not d.windows)


def test_the_window_covers_the_playhead_and_flags_the_tail_for_media_only() -> None:
    v = Media(size=1000 * PS, piece_size=PS, mime="video/webm", name="")
    assert window(5 * PS + 7, v.size, v) == (5, 5 + stream.WINDOW // PS, stream.TAIL // PS)
    assert window(5 * PS, 7 * PS, v)[:2] == (5, 6)  # never past the requested range
    doc = Media(size=100 * PS, piece_size=PS, mime="application/pdf", name="")
    assert window(0, doc.size, doc)[2] == 0


# ---- encrypted shares -----------------------------------------------------------------------------
async def test_an_encrypted_share_streams_decrypted_with_the_download_links_key(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with rig(tmp_path, encrypt=True, store_key=False) as r:  # the store does not keep the key
        await r.give(range(0, 3))
        d = r.start_download()  # started with the full link: its key decrypts
        async with http.get(r.path(), headers={"Range": "bytes=10-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Type"] == "video/mp4"  # from the decrypted metadata
            head = await resp.content.readexactly(3 * PS - 10)
            await r.give(range(3, N))
            d.step(N, N)
            assert head + await resp.read() == r.raw[10:]


async def test_a_store_failure_after_the_headers_cuts_the_body(
    video: Rig, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await video.give(range(N))
    real = video.store.read_range
    calls: list[int] = []

    async def failing(hash_name: bytes, start: int, end: int, *, key: bytes | None = None) -> ByteRange:
        calls.append(start)
        if len(calls) > 1:
            raise StorageError("the disk went away")
        return await real(hash_name, start, min(end, start + PS), key=key)

    monkeypatch.setattr(video.store, "read_range", failing)
    async with http.get(video.path()) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(HANG):
                await r.read()
    assert len(calls) == 2
