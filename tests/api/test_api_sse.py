"""Server-sent events (webui.server.sse_response): framing, end and error events, keep-alives, cleanup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from tests.api.conftest import TOKEN, Api
from webui.server import ApiServer, sse_response

#: Safety net against a hang (not a speed assertion).
WAIT = 20.0


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """(event type, decoded data) per event; comments become ("comment", text)."""
    out: list[tuple[str, Any]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        kind, data = "message", None
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append(("comment", line[1:].strip()))
            elif line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        if data is not None:
            out.append((kind, data))
    return out


async def test_events_then_end(api: Api) -> None:
    r = await api.get("/api/test/events?n=4")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/event-stream")
    assert r.header("Cache-Control") == "no-store"
    events = parse_sse(r.body.decode())
    assert events == [("message", {"i": i, "text": "line\nbreak"}) for i in range(4)] + [("end", {})]
    assert api.counter.events_closed == [True]


async def test_empty_stream_is_just_end(api: Api) -> None:
    assert parse_sse((await api.get("/api/test/events?n=0")).body.decode()) == [("end", {})]


async def test_errors_become_an_error_event(api: Api) -> None:
    events = parse_sse((await api.get("/api/test/events?n=1&fail=peer")).body.decode())
    assert events == [
        ("message", {"i": 0, "text": "line\nbreak"}),
        ("error", {"error": "download interrupted"}),
    ]
    events = parse_sse((await api.get("/api/test/events?n=0&fail=bug")).body.decode())
    assert events == [("error", {"error": "internal error (see the peer's log)"})]
    assert api.counter.events_closed == [True, True]


class StreamRig:
    """An ApiServer with one event route whose generator the test drives."""

    def __init__(self, heartbeat: float) -> None:
        self.server = ApiServer(token=TOKEN)
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.heartbeat = heartbeat
        self.server.add_route("GET", "/api/test/live", self._live)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        async def gen() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"step": 1}
                await self.release.wait()
                yield {"step": 2}
                await asyncio.Event().wait()  # then nothing more, ever
            finally:
                self.closed.set()

        return await sse_response(request, gen(), heartbeat=self.heartbeat)

    async def open(self, session: aiohttp.ClientSession) -> aiohttp.ClientResponse:
        url = await self.server.start()
        return await session.get(f"{url}/api/test/live", headers={"Authorization": f"Bearer {TOKEN}"})


async def next_block(response: aiohttp.ClientResponse) -> str:
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(response.content.readline(), WAIT)
        assert raw, "the stream ended"
        line = raw.decode().rstrip("\n")
        if not line:
            return "\n".join(lines)
        lines.append(line)


async def test_keepalive_while_waiting_then_shutdown_error() -> None:
    rig = StreamRig(heartbeat=0.01)
    async with aiohttp.ClientSession() as session:
        response = await rig.open(session)
        try:
            assert response.status == 200
            assert await next_block(response) == 'data: {"step":1}'
            assert await next_block(response) == ": keepalive"
            rig.release.set()
            block = await next_block(response)
            while block == ": keepalive":
                block = await next_block(response)
            assert block == 'data: {"step":2}'
            stopping = asyncio.ensure_future(rig.server.stop())
            block = await next_block(response)
            while block == ": keepalive":
                block = await next_block(response)
            assert block == 'event: error\ndata: {"error":"the peer is shutting down"}'
            await asyncio.wait_for(stopping, WAIT)
            await asyncio.wait_for(rig.closed.wait(), WAIT)
        finally:
            response.close()
            await rig.server.stop()


async def test_client_leaving_closes_the_event_source() -> None:
    rig = StreamRig(heartbeat=0.01)
    async with aiohttp.ClientSession() as session:
        response = await rig.open(session)
        try:
            assert await next_block(response) == 'data: {"step":1}'
            assert not rig.closed.is_set()
            response.close()  # the client goes away; the next keep-alive write notices
            await asyncio.wait_for(rig.closed.wait(), WAIT)
        finally:
            await rig.server.stop()
