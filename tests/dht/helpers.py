"""Builders shared by the dht tests (records, identities, raw UDP clients)."""

from __future__ import annotations

import asyncio
import random
import socket

from dht.keys import common_prefix_bits
from dht.records import PeerRecord, ProviderRecord, Route
from peer.crypto.identity import Identity

NOW = 1_800_000_000.0


def identity(rng: random.Random) -> Identity:
    return Identity.generate(rng.randbytes)


def provider(
    ident: Identity, key: bytes, *, expiry: float = NOW + 600, route: Route | None = None
) -> ProviderRecord:
    return ProviderRecord(
        key,
        ident.public,
        bytes(range(32)),
        bytes(range(1, 33)),
        route or Route((("udp", "127.0.0.1:9"),)),
        int(expiry),
    ).sign(ident)


def peer(ident: Identity, *, expiry: float = NOW + 600, neighbours: tuple[bytes, ...] = ()) -> PeerRecord:
    return PeerRecord(
        ident.public,
        bytes(32),
        bytes(31) + b"\x01",
        Route((("webrtc", "peer"), ("tls", "127.0.0.1:443")), ("wss://bridge.example/ws",)),
        neighbours,
        True,
        int(expiry),
    ).sign(ident)


def identity_near(target: bytes, bits: int, rng: random.Random) -> Identity:
    """An identity whose NodeID shares at least ``bits`` leading bits with ``target`` (a Sybil)."""
    while True:
        ident = identity(rng)
        if common_prefix_bits(ident.node_id, target) >= bits:
            return ident


class RawClient(asyncio.DatagramProtocol):
    """A bare UDP socket that records every datagram it receives (an unverified stranger)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.event = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))
        self.event.set()

    async def exchange(self, datagram: bytes, addr: tuple[str, int], wait: float = 0.5) -> bytes | None:
        self.event.clear()
        self.received.clear()
        assert self.transport is not None
        self.transport.sendto(datagram, addr)
        try:
            await asyncio.wait_for(self.event.wait(), wait)
        except TimeoutError:
            return None
        return self.received[0][0]


async def raw_client(host: str) -> RawClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(RawClient, local_addr=(host, 0), family=socket.AF_INET)
    return proto
