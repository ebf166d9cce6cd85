"""WebSocket links on loopback (peer/transport/websocket.py): framing, close, back-pressure."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from peer.errors import LinkClosed, UsageError
from peer.transport.base import Link
from peer.transport.websocket import WebSocketError, WebSocketLink, connect_websocket, websocket_handler

GUARD = 20.0


class Server:
    """An aiohttp app on 127.0.0.1, port 0, that hands every accepted link to a queue."""

    def __init__(self) -> None:
        self.links: asyncio.Queue[WebSocketLink] = asyncio.Queue()
        self.url = ""

    async def on_link(self, link: WebSocketLink) -> None:
        await self.links.put(link)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/link", websocket_handler(srv.on_link, max_message_size=256 * 1024))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"ws://127.0.0.1:{port}/link"
    yield srv
    await runner.cleanup()


async def open_pair(server: Server) -> tuple[WebSocketLink, WebSocketLink]:
    client = await connect_websocket(server.url, max_message_size=256 * 1024)
    accepted = await asyncio.wait_for(server.links.get(), GUARD)
    return client, accepted


async def test_messages_arrive_whole_and_in_order(server: Server) -> None:
    client, accepted = await open_pair(server)
    assert isinstance(client, Link) and isinstance(accepted, Link)
    assert client.framed and client.initiator and not accepted.initiator
    assert client.remote_address is not None and client.remote_address[0] == "127.0.0.1"
    assert accepted.remote_address is not None and accepted.remote_address[0] == "127.0.0.1"
    assert client.peer_cert_fingerprint is None  # ws:// has no certificate
    rng = random.Random(7)
    sizes = [rng.choice([1, 514, 15934, 100_000]) for _ in range(300)]

    async def send() -> None:
        for seq, size in enumerate(sizes):
            body = rng.randbytes(size)
            await client.send(struct.pack(">I", seq) + hashlib.sha256(body).digest() + body)

    async def receive() -> None:
        for seq, size in enumerate(sizes):
            data = await accepted.recv()
            assert struct.unpack(">I", data[:4])[0] == seq
            assert len(data) == size + 36
            assert hashlib.sha256(data[36:]).digest() == data[4:36]

    await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
    await accepted.send(b"reply")
    assert await client.recv() == b"reply"
    await asyncio.gather(client.close(), accepted.close())


async def test_close_raises_link_closed_on_the_other_side(server: Server) -> None:
    client, accepted = await open_pair(server)
    await client.close()
    await client.close()  # idempotent
    assert client.closed
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(accepted.recv(), GUARD)
    with pytest.raises(LinkClosed):
        await accepted.send(b"x")
    with pytest.raises(LinkClosed):
        await client.recv()


async def test_server_close_reaches_the_client(server: Server) -> None:
    client, accepted = await open_pair(server)
    await accepted.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(client.recv(), GUARD)
    await client.close()


async def test_reader_that_stops_reading_blocks_the_sender(server: Server) -> None:
    """TCP back-pressure: with nobody reading, send stops completing instead of buffering forever."""
    client, accepted = await open_pair(server)
    chunk = bytes(64 * 1024)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await client.send(chunk)
            sent += len(chunk)

    task = asyncio.ensure_future(flood())
    previous = -1
    async with asyncio.timeout(GUARD):
        while sent != previous:  # until a whole 0.5 s passes with no send completing
            previous = sent
            await asyncio.sleep(0.5)
    assert not task.done()
    assert sent < 256 * 1024 * 1024, "the sender buffered without bound"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Reading again drains what was accepted.
    got = 0
    async with asyncio.timeout(GUARD):
        while got < sent - len(chunk):
            got += len(await accepted.recv())
    await asyncio.gather(client.close(), accepted.close())


async def test_text_message_closes_the_link(server: Server) -> None:
    client, accepted = await open_pair(server)
    await client._ws.send_str("text")
    with pytest.raises(LinkClosed, match="text message"):
        await asyncio.wait_for(accepted.recv(), GUARD)
    await client.close()


async def test_oversized_message_is_refused(server: Server) -> None:
    client, accepted = await open_pair(server)
    with pytest.raises(UsageError):
        await client.send(bytes(256 * 1024 + 1))
    await asyncio.gather(client.close(), accepted.close())


async def test_connect_failure_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a port that was just free, so nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WebSocketError):
        await connect_websocket(f"ws://127.0.0.1:{port}/none", timeout=5.0)
    with pytest.raises(UsageError):
        await connect_websocket("http://127.0.0.1:1/none")
