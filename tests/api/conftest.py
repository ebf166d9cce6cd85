"""Fixtures for the local API tests: a real ApiServer on 127.0.0.1, port 0, with test routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from peer.errors import PeerError
from tests.api.rawhttp import RawResponse, raw_request
from webui.server import ApiServer, json_body, sse_response

#: A fixed token so tests can build wrong ones next to it (the server never sees anything else).
TOKEN = "T" * 20 + "0123456789abcdefghijklm"


@dataclass
class Counter:
    """State a refused request must not change (W3)."""

    count: int = 0
    events_closed: list[bool] = field(default_factory=list)


@dataclass
class Api:
    server: ApiServer
    counter: Counter

    @property
    def port(self) -> int:
        return self.server.port

    def host(self, name: str = "127.0.0.1") -> str:
        return f"{name}:{self.port}"

    def good_headers(self, **extra: str) -> list[tuple[str, str]]:
        headers = [("Host", self.host()), ("Authorization", f"Bearer {TOKEN}")]
        headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
        return headers

    async def request(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> RawResponse:
        return await raw_request("127.0.0.1", self.port, method, path, headers, body)

    async def get(self, path: str, **extra: str) -> RawResponse:
        return await self.request("GET", path, self.good_headers(**extra))


def add_test_routes(server: ApiServer, counter: Counter) -> None:
    async def bump(request: web.Request) -> Mapping[str, Any]:
        counter.count += 1
        return {"count": counter.count}

    async def read(request: web.Request) -> Mapping[str, Any]:
        return {"count": counter.count}

    async def echo(request: web.Request) -> Mapping[str, Any]:
        return {"echo": await json_body(request)}

    async def boom(request: web.Request) -> Mapping[str, Any]:
        raise RuntimeError("an internal detail that must not leak")

    async def refuse(request: web.Request) -> Mapping[str, Any]:
        raise PeerError("a peer error")

    async def moved(request: web.Request) -> Mapping[str, Any]:
        raise web.HTTPFound("/api/test/counter")

    async def events(request: web.Request) -> web.StreamResponse:
        count = int(request.query.get("n", "3"))

        async def gen() -> AsyncIterator[dict[str, Any]]:
            try:
                for i in range(count):
                    yield {"i": i, "text": "line\nbreak"}
                if request.query.get("fail") == "peer":
                    raise PeerError("download interrupted")
                if request.query.get("fail") == "bug":
                    raise RuntimeError("internal detail")
            finally:
                counter.events_closed.append(True)

        return await sse_response(request, gen())

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        server.add_route(method, "/api/test/counter", bump)
    server.add_route("GET", "/api/test/counter", read)
    server.add_route("POST", "/api/test/echo", echo)
    server.add_route("GET", "/api/test/boom", boom)
    server.add_route("GET", "/api/test/refuse", refuse)
    server.add_route("GET", "/api/test/moved", moved)
    server.add_route("GET", "/api/test/events", events)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = ApiServer(token=TOKEN)
    counter = Counter()
    add_test_routes(server, counter)
    await server.start("127.0.0.1", 0)
    try:
        yield Api(server, counter)
    finally:
        await server.stop()
