"""TLS links (peer/transport/tls.py): loopback round trip, certificate fingerprints seen from both
sides, back-pressure-aware send, close semantics.  (Lives in tests/tor/: the tor helper owns it.)"""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import pytest

from peer.errors import LinkClosed
from peer.transport.base import Link
from peer.transport.tls import TlsConnectError, TlsLink, TlsServer, connect_tls, make_self_signed, serve_tls


async def echo_pair() -> tuple[TlsLink, TlsLink, TlsServer]:
    accepted: asyncio.Queue[TlsLink] = asyncio.Queue()

    async def on_link(link: TlsLink) -> None:
        await accepted.put(link)

    server = await serve_tls("127.0.0.1", 0, on_link)
    host, port = server.address
    client = await connect_tls(host, port, timeout=10)
    srv_link = await asyncio.wait_for(accepted.get(), 10)
    return client, srv_link, server


async def test_round_trip_and_fingerprints() -> None:
    client, srv, server = await echo_pair()
    try:
        assert isinstance(client, Link) and isinstance(srv, Link)
        assert client.initiator and not srv.initiator and not client.framed
        assert client.peer_cert_fingerprint == server.local_cert_fingerprint == srv.local_cert_fingerprint
        assert client.peer_cert_fingerprint is not None and len(client.peer_cert_fingerprint) == 32
        assert srv.peer_cert_fingerprint is None  # the client presents no certificate
        assert client.remote_address is not None and client.remote_address[0] == "127.0.0.1"
        payload = bytes(range(256)) * 1024
        sender = asyncio.create_task(client.send(payload))
        got = bytearray()
        while len(got) < len(payload):
            got += await srv.recv()
        await sender
        assert bytes(got) == payload
        await srv.send(b"pong")
        assert await client.recv() == b"pong"
    finally:
        await client.close()
        await srv.close()
        await server.close()


async def test_close_semantics() -> None:
    client, srv, server = await echo_pair()
    try:
        await client.close()
        assert client.closed
        with pytest.raises(LinkClosed):
            await srv.recv()
        with pytest.raises(LinkClosed):
            await client.recv()
        with pytest.raises(LinkClosed):
            await client.send(b"x")
        await client.close()  # idempotent
    finally:
        await srv.close()
        await server.close()


async def test_connect_failure_is_typed() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(TlsConnectError):
        await connect_tls("127.0.0.1", port, timeout=5)


def test_self_signed_certificate() -> None:
    a, b = make_self_signed(), make_self_signed()
    assert a.fingerprint == hashlib.sha256(a.der).digest() and a.fingerprint != b.fingerprint
    assert ssl.DER_cert_to_PEM_cert(a.der).strip() == a.cert_pem.decode().strip()
