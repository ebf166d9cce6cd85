"""The runtime's routes on the local API (DESIGN §10): shares and downloads.

POST /api/shares {"path", "encrypt", "seed"}        -> {"hash_name", "link"}
GET  /api/shares                                      -> {"shares": [...]}
POST /api/downloads {"link", "output"}                -> the download's summary (starts or attaches)
GET  /api/downloads                                   -> {"downloads": [...]}
GET  /api/downloads/{id}                              -> the summary
GET  /api/downloads/{id}/events                       -> server-sent events until complete or failed
POST /api/downloads/{id}/pause | resume               -> the summary (409 when it does not apply)
POST /api/downloads/{id}/cancel                       -> stops it, forgets it, drops its unfinished pieces
POST /api/downloads/{id}/remove                       -> forgets a download that is not running
POST /api/downloads/{id}/export {"name"}              -> {"path"}: a new file in the downloads folder
GET  /api/downloads/{id}/ranges                       -> the byte ranges held (for the player's bar)

A summary adds ``name`` and ``type`` (the MIME type, once the manifest is known) to
:meth:`peer.roles.downloads.DownloadTask.summary` (rate, ETA, circuits, ORDBs, what it
waits for).  The library, uploads and QR codes are in :mod:`webui.library`, the network
view in :mod:`webui.network`.  No GET changes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from peer.errors import PeerError
from peer.node import DownloadTask, Peer
from peer.roles.downloads import DownloadStateError
from storage.sharelink import ShareLink
from storage.types import DownloadState
from webui.exports import export_named
from webui.library import add_library_routes
from webui.network import add_network_routes
from webui.server import ApiServer, RequestRefused, json_body, sse_response

TERMINAL = ("complete", "failed")


def hash_of(request: web.Request, what: str = "download") -> bytes:
    """The 32-byte hash_name in the path's ``{id}``, or a 404."""
    try:
        h = bytes.fromhex(request.match_info["id"])
    except ValueError:
        raise RequestRefused(404, f"no such {what}") from None
    if len(h) != 32:
        raise RequestRefused(404, f"no such {what}")
    return h


def add_routes(api: ApiServer, peer: Peer) -> None:
    def summary(task: DownloadTask) -> dict[str, Any]:
        return task.summary()

    async def post_share(request: web.Request) -> Mapping[str, Any]:
        body = await json_body(request)
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise RequestRefused(400, "give the file's path")
        p = Path(path)
        if not p.is_absolute():
            raise RequestRefused(400, "the path must be absolute")
        if not p.is_file():
            raise RequestRefused(404, "no such file")
        link = await peer.share(
            p, encrypt=bool(body.get("encrypt")), seed=body.get("seed", True) is not False
        )
        return {"hash_name": ShareLink.parse(link).hash_name.hex(), "link": link}

    async def get_shares(request: web.Request) -> Mapping[str, Any]:
        assert peer.store is not None
        shares = await peer.store.list()
        return {
            "shares": [
                {
                    "hash_name": s.hash_name.hex() if s.hash_name else None,
                    "name": s.name,
                    "size": s.size,
                    "have": s.have_count,
                    "total": s.piece_count,
                    "state": s.state.name.lower(),
                    "seeding": s.seeding,
                }
                for s in shares
            ]
        }

    async def post_download(request: web.Request) -> Mapping[str, Any]:
        body = await json_body(request)
        text = body.get("link")
        if not isinstance(text, str):
            raise RequestRefused(400, "give a link")
        try:
            link = ShareLink.parse(text.strip())
        except PeerError as exc:
            raise RequestRefused(400, f"bad link: {exc}") from None
        out = body.get("output")
        if out is not None and (not isinstance(out, str) or not Path(out).is_absolute()):
            raise RequestRefused(400, "the output path must be absolute")
        return summary(peer.get(link, Path(out) if out else None))

    def find(request: web.Request) -> DownloadTask:
        task = peer.downloads.get(hash_of(request))
        if task is None:
            raise RequestRefused(404, "no such download")
        return task

    async def get_downloads(request: web.Request) -> Mapping[str, Any]:
        return {"downloads": [summary(d) for d in peer.downloads.values()]}

    async def get_download(request: web.Request) -> Mapping[str, Any]:
        return summary(find(request))

    async def control(request: web.Request) -> Mapping[str, Any]:
        task = find(request)
        await json_body(request)  # a JSON object, even if empty: the guard's CSRF rule needs the type
        h, action = task.link.hash_name, request.match_info["action"]
        try:
            if action == "pause":
                return summary(peer.downloads.pause(h))
            if action == "resume":
                return summary(peer.downloads.resume_one(h))
            if action == "cancel":
                await peer.downloads.cancel(h)
                assert peer.store is not None
                with contextlib.suppress(PeerError):  # never fetched anything: nothing stored
                    if (await peer.store.get_download_state(h)).state is not DownloadState.COMPLETE:
                        await peer.store.remove(h)
                return {"cancelled": h.hex()}
            peer.downloads.remove(h)
            return {"removed": h.hex()}
        except DownloadStateError as exc:
            raise RequestRefused(409, str(exc)) from None

    async def export(request: web.Request) -> Mapping[str, Any]:
        task = find(request)
        body = await json_body(request)
        assert peer.store is not None
        h = task.link.hash_name
        try:
            info = await peer.store.get_download_state(h)
        except PeerError:
            info = None
        if info is None or info.have < info.total or info.total == 0:
            raise RequestRefused(409, "the download is not complete yet: export it when it reaches 100%")
        path = await export_named(peer.store, h, task.link.key, peer.downloads_dir, body.get("name"))
        return {"path": str(path), "name": path.name}

    async def ranges(request: web.Request) -> Mapping[str, Any]:
        h = hash_of(request, "share")
        assert peer.store is not None
        try:
            m = await peer.store.manifest(h)
            have = await peer.store.have(h)
        except PeerError:
            if h in peer.downloads:  # the manifest is not here yet
                return {"size": 0, "piece_size": 0, "ranges": []}
            raise RequestRefused(404, "no such share") from None
        ps = m.piece_size
        spans = [[a * ps, min(b * ps, m.size)] for a, b in have.ranges()]
        return {"size": m.size, "piece_size": ps, "ranges": spans}

    async def events(request: web.Request) -> web.StreamResponse:
        task = find(request)

        async def gen() -> AsyncIterator[Mapping[str, Any]]:
            changed = asyncio.Event()

            def on_progress(_p: object) -> None:
                changed.set()

            task.download.listeners.append(on_progress)
            try:
                while True:
                    s = summary(task)
                    yield s
                    if s["state"] in TERMINAL and (task.task.done()):
                        return
                    if peer.downloads.get(task.link.hash_name) is not task:  # cancelled or removed
                        return
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), 1.0)
                    except TimeoutError:
                        pass
            finally:
                task.download.listeners.remove(on_progress)

        return await sse_response(request, gen())

    api.add_route("POST", "/api/shares", post_share)
    api.add_route("GET", "/api/shares", get_shares)
    api.add_route("POST", "/api/downloads", post_download)
    api.add_route("GET", "/api/downloads", get_downloads)
    api.add_route("GET", "/api/downloads/{id}", get_download)
    api.add_route("GET", "/api/downloads/{id}/events", events)
    api.add_route("POST", "/api/downloads/{id}/{action:pause|resume|cancel|remove}", control)
    api.add_route("POST", "/api/downloads/{id}/export", export)
    api.add_route("GET", "/api/downloads/{id}/ranges", ranges)
    add_library_routes(api, peer)
    add_network_routes(api, peer)
