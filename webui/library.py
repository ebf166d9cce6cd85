"""The library (everything in the store), uploads from the browser, and QR codes of links.

GET  /api/library                               -> {"shares": [...]}: name, size, type, seeding, times served, link
POST /api/library/{id}/seeding {"seeding"}      -> the share's entry
POST /api/library/{id}/remove  (or DELETE /api/library/{id})  -> {"removed": id}
POST /api/library/{id}/export {"name"}          -> {"path"}: a new file in the downloads folder
POST /api/uploads  (application/octet-stream)   -> {"hash_name", "link", "name"}
GET  /api/qr?text=...                           -> image/svg+xml

"Times served" counts the piece queries this peer's holder answered for the share since the
peer started (in memory, not persisted).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import segno
from aiohttp import web

from peer.errors import PeerError
from peer.node import Peer
from storage.names import sanitize_name
from storage.sharelink import ShareLink
from storage.types import ShareInfo
from webui.exports import export_named
from webui.server import ApiServer, RequestRefused, json_body

#: Bytes gathered from the request before each write to the temporary file.
UPLOAD_WRITE = 1 << 20
#: Bytes asked of the request body at a time (aiohttp pauses the socket beyond its own small buffer).
UPLOAD_READ = 64 << 10
#: Longest text turned into a QR code (a share link is far shorter).
QR_MAX = 1500
#: Headers of the QR code response: an image that can do nothing even if opened on its own.
QR_HEADERS = {"Content-Security-Policy": "sandbox; default-src 'none'", "X-Content-Type-Options": "nosniff"}
UPLOADS_DIR = "uploads"


def _hash(request: web.Request) -> bytes:
    try:
        h = bytes.fromhex(request.match_info["id"])
    except ValueError:
        raise RequestRefused(404, "no such share") from None
    if len(h) != 32:
        raise RequestRefused(404, "no such share")
    return h


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def upload_name(header: str | None) -> str:
    """The file name sent in ``X-Peersm-Filename`` (percent-encoded UTF-8), made a harmless file name."""
    return sanitize_name(unquote(header or "", errors="replace"), "upload")


async def receive_upload(request: web.Request, folder: Path, name: str) -> tuple[Path, int]:
    """Stream the request body into a new file ``folder/name``; return it and its size.

    The body is read in small chunks and written in runs of at most ``UPLOAD_WRITE`` bytes, so
    memory stays bounded whatever the size of the upload."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as f:
        buf = bytearray()
        async for chunk in request.content.iter_chunked(UPLOAD_READ):
            buf += chunk
            size += len(chunk)
            if len(buf) >= UPLOAD_WRITE:
                await asyncio.to_thread(f.write, bytes(buf))
                buf.clear()
        if buf:
            await asyncio.to_thread(f.write, bytes(buf))
    return path, size


def add_library_routes(api: ApiServer, peer: Peer) -> None:
    async def entry(info: ShareInfo) -> dict[str, Any]:
        assert peer.store is not None
        h = info.hash_name
        link = None
        if h is not None:
            with contextlib.suppress(PeerError):
                link = (await peer.store.link(h)).format()
        served = peer.holder.served_queries.get(h, 0) if peer.holder is not None and h else 0
        task = peer.downloads.get(h) if h is not None else None
        return {
            "hash_name": h.hex() if h else None,
            "name": info.name,
            "size": info.size,
            "type": info.mime,
            "encrypted": info.encrypted,
            "seeding": info.seeding,
            "have": info.have_count,
            "total": info.piece_count,
            "state": "importing" if h is None else info.state.name.lower(),
            "origin": info.origin.name.lower(),
            "served": served,
            "downloading": task is not None and task.running,
            "link": link,
        }

    async def find(h: bytes) -> ShareInfo:
        assert peer.store is not None
        for info in await peer.store.list():
            if info.hash_name == h:
                return info
        raise RequestRefused(404, "no such share")

    async def library(request: web.Request) -> Mapping[str, Any]:
        assert peer.store is not None
        return {"shares": [await entry(info) for info in await peer.store.list()]}

    async def seeding(request: web.Request) -> Mapping[str, Any]:
        h = _hash(request)
        body = await json_body(request)
        on = body.get("seeding")
        if not isinstance(on, bool):
            raise RequestRefused(400, 'give {"seeding": true} or {"seeding": false}')
        await find(h)
        assert peer.store is not None
        await peer.store.set_seeding(h, on)
        if on and peer.holder is not None:
            peer.holder.announce_soon(h)
        return await entry(await find(h))

    async def remove(request: web.Request) -> Mapping[str, Any]:
        h = _hash(request)
        if request.method == "POST":
            await json_body(request)
        await find(h)
        task = peer.downloads.get(h)
        if task is not None and task.running:
            raise RequestRefused(409, "this share is still downloading: cancel the download first")
        if task is not None:
            peer.downloads.remove(h)
        assert peer.store is not None
        await peer.store.remove(h)
        if peer.holder is not None:
            peer.holder.held.discard(h)
        return {"removed": h.hex()}

    async def export(request: web.Request) -> Mapping[str, Any]:
        h = _hash(request)
        body = await json_body(request)
        info = await find(h)
        if info.have_count < info.piece_count or info.piece_count == 0:
            raise RequestRefused(409, "this share is not complete yet: export it when it reaches 100%")
        assert peer.store is not None
        key = (await peer.store.link(h)).key
        path = await export_named(peer.store, h, key, peer.downloads_dir, body.get("name"))
        return {"path": str(path), "name": path.name}

    async def upload(request: web.Request) -> Mapping[str, Any]:
        """Share a file sent as the raw request body (``application/octet-stream``).

        This is the one route whose body is not JSON, and that keeps CSRF out all the same:
        a cross-site HTML form can only send ``application/x-www-form-urlencoded``,
        ``multipart/form-data`` or ``text/plain``, and a cross-site ``fetch`` with any other
        type, or with the ``X-Peersm-Token`` header, needs a CORS preflight that this server
        never grants; the token is still required, and the guard's Host, Origin and
        ``Sec-Fetch-Site`` checks run first (:meth:`ApiServer.add_upload_route`: the guard
        requires this type here, and JSON everywhere else).  The body streams into a private temporary file
        under DATA/uploads (never wholly in memory), is imported into the store, and the
        temporary file is deleted.  Options come in headers: ``X-Peersm-Filename``
        (percent-encoded UTF-8, sanitised), ``X-Peersm-Encrypt`` and ``X-Peersm-Seed``
        (``1``/``0``)."""
        name = upload_name(request.headers.get("X-Peersm-Filename"))
        encrypt = _flag(request.headers.get("X-Peersm-Encrypt"), False)
        seed = _flag(request.headers.get("X-Peersm-Seed"), True)
        root = peer.config.data_dir / UPLOADS_DIR
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root, prefix=".upload-"))
        try:
            try:
                path, size = await receive_upload(request, work, name)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise RequestRefused(507, "no space left for the upload: free some disk space") from None
                raise
            if size == 0:
                raise RequestRefused(400, "the upload is empty: choose a file with some content")
            link = await peer.share(path, encrypt=encrypt, seed=seed)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return {"hash_name": link_hash(link), "link": link, "name": name, "size": size}

    async def qr(request: web.Request) -> web.StreamResponse:
        text = request.query.get("text", "")
        if not text or len(text) > QR_MAX:
            raise RequestRefused(400, f"give the text to encode (1 to {QR_MAX} characters)")
        out = io.BytesIO()
        segno.make(text, error="m", micro=False).save(out, kind="svg", scale=4, border=2, xmldecl=False)
        return web.Response(body=out.getvalue(), content_type="image/svg+xml", headers=QR_HEADERS)

    api.add_route("GET", "/api/library", library)
    api.add_route("POST", "/api/library/{id}/seeding", seeding)
    api.add_route("POST", "/api/library/{id}/remove", remove)
    api.add_route("DELETE", "/api/library/{id}", remove)
    api.add_route("POST", "/api/library/{id}/export", export)
    api.add_upload_route("/api/uploads", upload)
    api.add_route("GET", "/api/qr", qr)


def link_hash(link: str) -> str:
    return ShareLink.parse(link).hash_name.hex()
