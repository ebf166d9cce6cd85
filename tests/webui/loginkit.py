"""A real ApiServer with the UI pages, a fake clock and state to watch, for the login and guard tests.

Requests are written byte for byte (tests/api/rawhttp.py) so Host, Origin, Sec-Fetch-Site
and Cookie carry exactly what a test gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.api.rawhttp import RawResponse, raw_request
from webui.pages import STATIC_DIR, add_pages
from webui.server import ApiServer, sse_response

TOKEN = "K" * 20 + "0123456789ABCDEFGHIJKLM"
Headers = list[tuple[str, str]]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Watched:
    """What a refused request must not change."""

    count: int = 0  # state-changing test route
    streamed: int = 0  # stream handler runs
    evented: int = 0  # event stream handler runs
    uploaded: list[int] = field(default_factory=list)  # bytes received per upload


@dataclass
class Ui:
    server: ApiServer
    clock: Clock
    watched: Watched
    responses: list[RawResponse] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def host(self) -> tuple[str, str]:
        return ("Host", f"127.0.0.1:{self.port}")

    def token(self) -> tuple[str, str]:
        return ("X-Peersm-Token", TOKEN)

    def cookie(self, secret: str) -> tuple[str, str]:
        return ("Cookie", f"peersm_{self.port}={secret}")

    async def request(self, method: str, path: str, headers: Headers, body: bytes = b"") -> RawResponse:
        r = await raw_request("127.0.0.1", self.port, method, path, headers, body)
        self.responses.append(r)
        return r

    async def new_code_path(self) -> str:
        """A fresh login path (``/ui/login?code=...``) from POST /api/ui/code."""
        r = await self.request(
            "POST",
            "/api/ui/code",
            [self.host(), self.token(), ("Content-Type", "application/json")],
            b"{}",
        )
        assert r.status == 200, r.body
        parts = urlsplit(r.json()["url"])
        assert (parts.hostname, parts.port) == ("127.0.0.1", self.port)
        return f"{parts.path}?{parts.query}"

    async def login(self, path: str, *extra: tuple[str, str]) -> RawResponse:
        return await self.request("GET", path, [self.host(), ("Sec-Fetch-Site", "none"), *extra])

    async def session(self) -> str:
        """Log in and return the session cookie's value."""
        r = await self.login(await self.new_code_path())
        assert r.status == 200, r.body
        return session_secret(r, self.port)


def session_secret(r: RawResponse, port: int) -> str:
    (cookie,) = r.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == f"peersm_{port}"
    return rest.split(";")[0]


def add_watched_routes(server: ApiServer, watched: Watched) -> None:
    async def bump(request: web.Request) -> Mapping[str, Any]:
        watched.count += 1
        return {"count": watched.count}

    async def read(request: web.Request) -> Mapping[str, Any]:
        return {"count": watched.count}

    async def stream(request: web.Request) -> web.StreamResponse:
        watched.streamed += 1
        return web.Response(body=b"media bytes", content_type="video/mp4")

    async def events(request: web.Request) -> web.StreamResponse:
        watched.evented += 1

        async def gen() -> AsyncIterator[dict[str, Any]]:
            yield {"count": watched.count}

        return await sse_response(request, gen())

    async def upload(request: web.Request) -> Mapping[str, Any]:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
        watched.uploaded.append(size)
        return {"size": size}

    async def with_csp(request: web.Request) -> web.StreamResponse:
        return web.Response(text="x", headers={"Content-Security-Policy": request.query["csp"]})

    server.add_route("GET", "/api/test/csp", with_csp)
    server.add_route("POST", "/api/test/counter", bump)
    server.add_upload_route("/api/test/upload", upload)
    server.add_route("GET", "/api/test/counter", read)
    server.add_route("GET", "/api/test/events", events)
    server.add_route("POST", "/api/test/events", bump)  # same path, not GET: the cookie must not open it
    server.add_route("GET", "/api/test/eventsx", read)  # does not end in /events
    server.add_stream_route("/stream/{hash_name}", stream)


@pytest.fixture
async def ui() -> AsyncIterator[Ui]:
    async with started(STATIC_DIR) as u:
        yield u


class started:
    """``async with started(static_dir) as ui``: a started server with pages from ``static_dir``."""

    def __init__(self, static_dir: Path) -> None:
        self.clock = Clock()
        self.server = ApiServer(token=TOKEN, clock=self.clock)
        self.watched = Watched()
        add_watched_routes(self.server, self.watched)
        add_pages(self.server, static_dir)

    async def __aenter__(self) -> Ui:
        await self.server.start("127.0.0.1", 0)
        return Ui(self.server, self.clock, self.watched)

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
