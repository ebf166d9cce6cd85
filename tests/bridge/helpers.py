"""Builders shared by the bridge tests: peers with keys and records, raw bridge connections."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from dht.records import PeerRecord, Route
from peer.errors import LinkClosed
from peer.net.handshake import PeerKeys
from peer.transport.websocket import WebSocketLink, connect_websocket
from peer.wire.cells import decode_message, encode_message, pull_cell
from peer.wire.linkcells import (
    REGISTER_CONTEXT,
    Hello,
    LinkCellMessage,
    Register,
    Registered,
    register_message,
)

NOW = 1_800_000_000.0

# A realistic SDP offer as aiortc writes it; the addresses must never reach the bridge's view.
SDP_ADDRESS = "127.31.7.9"
SDP_OFFER = (
    "v=0\r\n"
    "o=- 3915473211 3915473211 IN IP4 0.0.0.0\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\n"
    "m=application 41234 DTLS/SCTP 5000\r\n"
    f"c=IN IP4 {SDP_ADDRESS}\r\n"
    "a=mid:0\r\n"
    "a=sctpmap:5000 webrtc-datachannel 65535\r\n"
    "a=max-message-size:65536\r\n"
    f"a=candidate:7d3c1f0b2b1e6f33b8a1c0e4f2d9a7c1 1 udp 2130706431 {SDP_ADDRESS} 41234 typ host\r\n"
    f"a=candidate:1f0b2b1e6f33b8a1c0e4f2d9a7c17d3c 1 udp 1694498815 {SDP_ADDRESS} 41235 typ srflx "
    f"raddr {SDP_ADDRESS} rport 41234\r\n"
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:Jx2c\r\n"
    "a=ice-pwd:h0T5hNQKx0m1p3y8w3mJ9q\r\n"
    "a=fingerprint:sha-256 4C:1B:8E:54:27:9A:11:3F:CE:9B:20:F5:5A:77:0C:1E:"
    "38:42:AB:9D:6E:0F:7A:23:C4:55:91:08:BD:E3:6F:12\r\n"
    "a=setup:actpass\r\n"
).encode("ascii")


@dataclass(frozen=True, slots=True)
class BridgePeer:
    keys: PeerKeys
    record: PeerRecord

    @property
    def node_id(self) -> bytes:
        return self.keys.node_id


def make_record(
    keys: PeerKeys, *, expiry: float = NOW + 600, neighbours: tuple[bytes, ...] = ()
) -> PeerRecord:
    return PeerRecord(
        keys.identity.public,
        keys.ntor.public,
        keys.seal.public,
        Route((("webrtc", "peer"),), ("ws://bridge.test/peersm/v1",)),
        neighbours,
        False,
        int(expiry),
    ).sign(keys.identity)


def make_peer(rng: random.Random, *, expiry: float = NOW + 600) -> BridgePeer:
    keys = PeerKeys.generate(rng.randbytes)
    return BridgePeer(keys, make_record(keys, expiry=expiry))


def frame(msg: LinkCellMessage) -> bytes:
    return encode_message(msg, 0).encode()


def unframe(raw: bytes) -> LinkCellMessage:
    got = pull_cell(raw)
    assert got is not None and got[1] == len(raw)
    msg = decode_message(got[0])
    assert isinstance(msg, LinkCellMessage)
    return msg


async def recv_msg(link: WebSocketLink) -> LinkCellMessage:
    return unframe(await link.recv())


async def recv_until_closed(link: WebSocketLink) -> list[LinkCellMessage]:
    """Every message until the bridge closes the link (a bridge that never closes fails the test)."""
    out: list[LinkCellMessage] = []
    try:
        async with asyncio.timeout(15):
            while True:
                out.append(await recv_msg(link))
    except LinkClosed:
        return out


async def raw_connect(url: str) -> tuple[WebSocketLink, bytes]:
    """A bare WebSocket to the bridge and the nonce of its DB_HELLO."""
    link = await connect_websocket(url, timeout=5)
    hello = await recv_msg(link)
    assert isinstance(hello, Hello)
    return link, hello.nonce


def register_cell(keys: PeerKeys, record: bytes, nonce: bytes, url: str) -> Register:
    sig = keys.identity.sign(REGISTER_CONTEXT, register_message(nonce, url, record))
    return Register(record, sig)


async def raw_register(url: str, peer: BridgePeer) -> WebSocketLink:
    """A raw connection registered as ``peer``."""
    link, nonce = await raw_connect(url)
    await link.send(frame(register_cell(peer.keys, peer.record.encode(), nonce, url)))
    reply = await recv_msg(link)
    assert isinstance(reply, Registered) and reply.ok, reply
    return link
