"""The streaming endpoint (DESIGN §10): a share's verified bytes over HTTP Range, while it downloads.

``GET /stream/{hash_name}`` answers 200, 206 (one range; :mod:`webui.ranges`) or 416, with
``Accept-Ranges``, ``Content-Range`` and ``Content-Length``.  ``/stream/{hash_name}/{file}`` is for
shares with several files; no manifest lists files yet, so it answers 404 saying so.

What a response may carry is decided here, not by the publisher (:func:`content_policy`):
``audio/*``, ``video/*`` and ``image/*`` other than SVG (or any XML) go inline with that type;
everything else goes as ``application/octet-stream`` with ``Content-Disposition: attachment``.
Every response on /stream/ carries ``Content-Security-Policy: sandbox; default-src 'none'``,
``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store`` (a decrypted share must not
reach the browser's disk cache either).

Only verified bytes are sent (``ChunkStore.read_range``, decrypted in the peer for an encrypted
share; nothing decrypted is written to disk).  Bytes not stored yet are waited for: the response
tells the share's download the playhead (a window of :data:`WINDOW` bytes from the position being
written, plus the file's last :data:`TAIL` bytes for audio and video, where an MP4 keeps its index
when it is not at the front), sleeps until the download reports progress, and writes in chunks of
:data:`CHUNK` bytes, each write waiting for the client to take the previous ones.  A seek is a new
request: its window goes first, and if its first piece is missing the download ends the queries
that would share the holder's upload with it (:mod:`peer.roles.schedule`'s rush).  When the
client leaves, or no download can bring the bytes (paused, failed, none), the window is released;
a response whose headers are already out then ends short (the connection is closed), one whose
first bytes are missing gets 503.

The handler reaches the peer only through :class:`StreamSource` (:class:`PeerSource` adapts a
:class:`~peer.node.Peer`), so that it is tested against a real store without a running peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from aiohttp import web

from peer.errors import PeerError
from peer.node import Peer
from peer.roles.downloads import Downloads
from peer.roles.fetch import INDEX_TAIL, Download, Progress
from storage.chunkstore import ChunkStore
from storage.encryption import decrypt_metadata
from storage.errors import ShareNotFound
from storage.types import ByteRange
from webui.ranges import ByteSpan, Unsatisfiable, parse_range
from webui.server import ApiServer, RequestRefused, cancel_and_wait

log = logging.getLogger(__name__)

CHUNK = 256 << 10  # bytes read from the store and written per step
WINDOW = 8 << 20  # bytes from the position being written that the download fetches first
TAIL = INDEX_TAIL  # the file's last bytes fetched early for audio and video (the download does too)
LIVENESS = 1.0  # seconds between checks that a client still waits, while nothing arrives
STREAM_CSP = "sandbox; default-src 'none'"
ROUTES = ("/stream/{hash_name}", "/stream/{hash_name}/{file}")

_HASH_NAME = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"  # RFC 9110 token characters (lower case: matched after lower())
_MIME = re.compile(rf"({_TOKEN})/({_TOKEN})")
_MEDIA = ("audio", "video")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- what the handler needs of the peer ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Media:
    """A share as the stream sees it: its size, piece size, and the name and MIME type its
    publisher gave (decrypted for an encrypted share)."""

    size: int
    piece_size: int
    mime: str
    name: str


class Follower(Protocol):
    """One response's hold on a share's download."""

    def want(self, first: int, last: int, tail: int) -> None:
        """Fetch pieces ``first..last`` first, and the file's last ``tail`` pieces early."""

    async def wait_progress(self) -> bool:
        """Return once the download may have stored more pieces; False at once when none runs."""

    def close(self) -> None:
        """Release the window; nothing more is waited for."""


class StreamSource(Protocol):
    async def media(self, hash_name: bytes) -> Media | None:
        """The share, or None while its manifest is not in the store."""

    async def read_range(self, hash_name: bytes, start: int, end: int) -> ByteRange:
        """Verified, decrypted bytes of [start, end), up to the first missing piece."""

    def follow(self, hash_name: bytes) -> Follower: ...


# ---- the MIME policy (sans-I/O) -----------------------------------------------------------------
def content_policy(mime: str) -> tuple[str, bool]:
    """(Content-Type, inline) for a share whose publisher says ``mime``: only audio, video and
    non-SVG, non-XML images go inline; anything else is an ``application/octet-stream`` download."""
    essence = mime.split(";", 1)[0].strip(" \t").lower()
    m = _MIME.fullmatch(essence)
    if m is not None:
        top, sub = m.groups()
        if (top in _MEDIA or top == "image") and "svg" not in sub and "xml" not in sub:
            return essence, True
    return "application/octet-stream", False


def stream_headers(media: Media) -> dict[str, str]:
    """The headers of every stream response for this share (status and range aside)."""
    ctype, inline = content_policy(media.mime)
    disposition = "inline" if inline else "attachment"
    if media.name:
        disposition += "; filename*=UTF-8''" + quote(media.name, safe="")
    return {
        "Content-Type": ctype,
        "Content-Disposition": disposition,
        "Accept-Ranges": "bytes",
        "Content-Security-Policy": STREAM_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def window(pos: int, stop: int, media: Media) -> tuple[int, int, int]:
    """(first piece, last piece, tail pieces) a response writing at ``pos`` (up to ``stop``) wants."""
    ps = media.piece_size
    end = min(stop, pos + WINDOW)
    tail = -(-TAIL // ps) if content_policy(media.mime)[0].split("/")[0] in _MEDIA else 0
    return pos // ps, max(pos, end - 1) // ps, tail


# ---- the handler --------------------------------------------------------------------------------
class StreamHandler:
    """GET (and HEAD) of a share's bytes; see the module docstring."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info.get("hash_name", "")
        if not _HASH_NAME.fullmatch(text):
            raise RequestRefused(404, "no such share: /stream/ takes a share's 64-hex-digit hash_name")
        hash_name = bytes.fromhex(text)
        follower = self.source.follow(hash_name)
        try:
            return await self._serve(request, hash_name, follower)
        finally:
            follower.close()

    async def _serve(self, request: web.Request, hash_name: bytes, follower: Follower) -> web.StreamResponse:
        media = await self._media(request, hash_name, follower)
        if "file" in request.match_info:
            raise RequestRefused(
                404,
                "this share is one file, not a list of files: open /stream/<hash_name> without a file name",
            )
        headers = stream_headers(media)
        ranges = request.headers.getall("Range", [])
        answer = parse_range(", ".join(ranges) if ranges else None, media.size)
        if isinstance(answer, Unsatisfiable):
            return web.Response(status=416, headers={**headers, "Content-Range": answer.content_range})
        span = answer if answer is not None else ByteSpan(0, media.size, media.size)
        response = web.StreamResponse(status=200 if answer is None else 206, headers=headers)
        if answer is not None:
            response.headers["Content-Range"] = answer.content_range
        response.content_length = span.length if media.size else 0
        if request.method == "HEAD" or not media.size:
            await response.prepare(request)
            await response.write_eof()
            return response
        pos = span.start
        data = await self._next(request, hash_name, follower, media, pos, span.stop)
        if data is None:
            raise RequestRefused(
                503, "these bytes are not stored yet and no download of this share is running: resume it"
            )
        await response.prepare(request)
        try:
            while data is not None:
                await response.write(data)  # waits while the client does not read
                pos += len(data)
                if pos >= span.stop:
                    await response.write_eof()
                    return response
                data = await self._next(request, hash_name, follower, media, pos, span.stop)
        except ConnectionError:
            log.debug("a stream client left")
            return response
        except PeerError as exc:  # the headers are out: no error answer can follow them
            log.warning("a stream ends short: %s", exc.kind)
        else:
            log.debug("a stream ends short: its bytes cannot come now")
        if request.transport is not None:
            request.transport.close()  # the client sees a short body, not a complete one
        return response

    async def _media(self, request: web.Request, hash_name: bytes, follower: Follower) -> Media:
        while True:
            media = await self.source.media(hash_name)
            if media is not None:
                return media
            if not await self._wait(request, follower):
                raise RequestRefused(404, "no such share in the store: start its download first")

    async def _next(
        self, request: web.Request, hash_name: bytes, follower: Follower, media: Media, pos: int, stop: int
    ) -> bytes | None:
        """The next verified bytes at ``pos``, waited for; None when they cannot come (or nobody waits)."""
        follower.want(*window(pos, stop, media))
        while True:
            got = await self.source.read_range(hash_name, pos, min(stop, pos + CHUNK))
            if got.data:
                return got.data
            if not await self._wait(request, follower):
                return None

    async def _wait(self, request: web.Request, follower: Follower) -> bool:
        """Until the download reports progress; False if none runs or the client has gone."""
        waiter = asyncio.ensure_future(follower.wait_progress())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=LIVENESS)
                if done:
                    return waiter.result()
                if request.transport is None or request.transport.is_closing():
                    return False
        finally:
            await cancel_and_wait(waiter)


async def _keep_stream_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response under /stream/ (refusals included) keeps the stream's CSP and no-store."""
    if request.path.startswith("/stream/"):
        response.headers["Content-Security-Policy"] = STREAM_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"


def serve_streams(api: ApiServer, source: StreamSource) -> None:
    """Register the stream routes on ``api`` (before it starts), reading from ``source``.

    GET goes through ``ApiServer.add_stream_route`` (the session cookie or the token); HEAD is a
    plain route, which the guard checks like any other (the token)."""
    serve = StreamHandler(source)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(request)

    for path in ROUTES:
        api.add_stream_route(path, handler)
        api.app.router.add_route("HEAD", path, handler)
    api.app.on_response_prepare.append(_keep_stream_headers)  # runs after the API's own headers


def add_stream_routes(api: ApiServer, peer: Peer) -> None:
    """GET /stream/{hash_name} and /stream/{hash_name}/{file} for the running ``peer``."""
    serve_streams(api, PeerSource(lambda: peer.store, peer.downloads))


# ---- the peer as a stream source ----------------------------------------------------------------
class PeerSource:
    """:class:`StreamSource` over a running peer's store and downloads.

    The key of an encrypted share is the one of the link its download was started with, else
    the one the store keeps (a share this peer imported, or downloaded before)."""

    def __init__(self, store: Callable[[], ChunkStore | None], downloads: Downloads) -> None:
        self._get_store = store
        self._downloads = downloads

    @property
    def _store(self) -> ChunkStore:
        store = self._get_store()
        if store is None:
            raise RequestRefused(503, "the peer is starting: try again in a moment")
        return store

    def _key(self, hash_name: bytes) -> bytes | None:
        task = self._downloads.get(hash_name)
        return task.link.key if task is not None else None

    async def media(self, hash_name: bytes) -> Media | None:
        store = self._store
        try:
            m = await store.manifest(hash_name)
        except ShareNotFound:
            return None
        if m.live:
            raise RequestRefused(404, "a live stream is not served here")
        name, mime = m.name, m.mime
        if m.encrypted:
            key = self._key(hash_name) or (await store.link(hash_name)).key
            if key is None:
                raise RequestRefused(
                    403, "this share is encrypted and its key is unknown: download it by its link"
                )
            meta = decrypt_metadata(key, m.salt, m.meta)
            name, mime = meta.name, meta.mime
        return Media(m.size, m.piece_size, mime, name)

    async def read_range(self, hash_name: bytes, start: int, end: int) -> ByteRange:
        return await self._store.read_range(hash_name, start, end, key=self._key(hash_name))

    def follow(self, hash_name: bytes) -> Follower:
        return PeerFollower(self._downloads, hash_name)


class PeerFollower:
    """A response's hold on the download of one share: a progress listener and a playhead window,
    moved to a new download if the share's download is restarted (paused, then resumed)."""

    def __init__(self, downloads: Downloads, hash_name: bytes) -> None:
        self._downloads = downloads
        self._hash_name = hash_name
        self._changed = asyncio.Event()
        self._on: Download | None = None
        self._window: tuple[int, int, int] | None = None
        self._attach()

    def _current(self) -> Download | None:
        task = self._downloads.get(self._hash_name)
        return task.download if task is not None and not task.task.done() else None

    def _attach(self) -> None:
        d = self._current()
        if d is self._on:
            return
        self._detach()
        if d is not None:
            d.listeners.append(self._progress)
            if self._window is not None:
                first, last, tail = self._window
                d.want(id(self), first, last, tail=tail)
        self._on = d

    def _detach(self) -> None:
        d, self._on = self._on, None
        if d is not None:
            with contextlib.suppress(ValueError):
                d.listeners.remove(self._progress)
            d.unwant(id(self))

    def _progress(self, _p: Progress) -> None:
        self._changed.set()

    def want(self, first: int, last: int, tail: int) -> None:
        if self._window == (first, last, tail):
            return
        self._window = (first, last, tail)
        self._attach()
        if self._on is not None:
            self._on.want(id(self), first, last, tail=tail)

    async def wait_progress(self) -> bool:
        before = self._on
        self._attach()
        if self._on is None:
            return False
        if self._on is not before:
            return True  # another download now: look again before waiting
        await self._changed.wait()
        self._changed.clear()
        return True

    def close(self) -> None:
        self._detach()
        self._window = None
