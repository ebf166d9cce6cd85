"""The runtime's routes on the local API (DESIGN §10): shares and downloads.

POST /api/shares {"path", "encrypt", "seed"}        -> {"hash_name", "link"}
GET  /api/shares                                      -> {"shares": [...]}
POST /api/downloads {"link", "output"}                -> the download's summary (starts or attaches)
GET  /api/downloads                                   -> {"downloads": [...]}
GET  /api/downloads/{id}                              -> the summary
GET  /api/downloads/{id}/events                       -> server-sent events until complete or failed
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from peer.errors import PeerError
from peer.node import DownloadTask, Peer
from storage.sharelink import ShareLink
from webui.server import ApiServer, RequestRefused, json_body, sse_response

TERMINAL = ("complete", "failed")


def add_routes(api: ApiServer, peer: Peer) -> None:
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
        return peer.get(link, Path(out) if out else None).summary()

    def find(request: web.Request) -> DownloadTask:
        try:
            h = bytes.fromhex(request.match_info["id"])
        except ValueError:
            raise RequestRefused(404, "no such download") from None
        task = peer.downloads.get(h)
        if task is None:
            raise RequestRefused(404, "no such download")
        return task

    async def get_downloads(request: web.Request) -> Mapping[str, Any]:
        return {"downloads": [d.summary() for d in peer.downloads.values()]}

    async def get_download(request: web.Request) -> Mapping[str, Any]:
        return find(request).summary()

    async def events(request: web.Request) -> web.StreamResponse:
        task = find(request)

        async def gen() -> AsyncIterator[Mapping[str, Any]]:
            changed = asyncio.Event()

            def on_progress(_p: object) -> None:
                changed.set()

            task.download.listeners.append(on_progress)
            try:
                while True:
                    s = task.summary()
                    yield s
                    if s["state"] in TERMINAL and (task.task.done()):
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
