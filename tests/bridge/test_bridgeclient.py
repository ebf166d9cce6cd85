"""The bridge client (peer/net/bridgeclient.py): record validation, re-registration, delivery,
and what it does when the bridge misbehaves."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from dht.records import ProviderRecord, Route
from peer.crypto.seal import SealError, SealKind, seal
from peer.errors import UsageError
from peer.net.bridgeclient import BridgeClient, BridgeError, open_introduction
from peer.roles.bridge import Bridge
from peer.wire.linkcells import FindPeer, Introduce

from .helpers import NOW, BridgePeer, make_peer, make_record


async def _client(bridge: Bridge, peer: BridgePeer) -> BridgeClient:
    client = BridgeClient(wall_clock=lambda: NOW)
    await client.connect(bridge.url, peer.keys, lambda: peer.record, timeout=5)
    return client


class LyingBridge(Bridge):
    """Answers DB_FIND_PEER with forged, expired, foreign-kind and duplicate records around one good one."""

    def __init__(self, good: bytes, bad: list[bytes]) -> None:
        super().__init__(wall_clock=lambda: NOW)
        self.answer = [*bad, good, good]

    def closest(self, target: bytes, *, exclude: bytes | None = None, count: int = 8) -> list[bytes]:
        return self.answer


async def test_find_peers_drops_invalid_records(rng: random.Random) -> None:
    asker, good, other = make_peer(rng), make_peer(rng), make_peer(rng)
    forged = bytearray(other.record.encode())
    forged[40] ^= 1  # the ntor key, under the signature
    expired = make_record(other.keys, expiry=NOW - 1).encode()
    provider = ProviderRecord(
        bytes(20), other.keys.identity.public, bytes(32), bytes(32), Route(), int(NOW + 60)
    ).sign(other.keys.identity)
    bad = [bytes(forged), expired, provider.encode(), b"junk", asker.record.encode()]
    bridge = LyingBridge(good.record.encode(), bad)
    await bridge.start()
    try:
        client = await _client(bridge, asker)
        records = await client.find_peers(bytes(20))
        assert records == [good.record]  # one copy; the asker's own record is dropped too
        await client.close()
    finally:
        await bridge.stop()


async def test_reregister_publishes_the_new_record(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    current = [a.record]
    ca = BridgeClient(wall_clock=lambda: NOW)
    await ca.connect(bridge.url, a.keys, lambda: current[0], timeout=5)
    cb = await _client(bridge, b)
    assert [r.neighbours for r in await cb.find_peers(a.node_id)] == [()]
    current[0] = make_record(a.keys, neighbours=(b.node_id,))
    await ca.reregister()
    assert [r.neighbours for r in await cb.find_peers(a.node_id)] == [(b.node_id,)]
    assert bridge.registered_count == 2
    await ca.close()
    await cb.close()


async def test_reregister_with_another_identity_is_refused(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    current = [a.record]
    ca = BridgeClient(wall_clock=lambda: NOW)
    await ca.connect(bridge.url, a.keys, lambda: current[0], timeout=5)
    current[0] = b.record
    with pytest.raises(UsageError):  # refused locally: not our identity
        await ca.reregister()
    current[0] = make_record(a.keys, neighbours=(b.node_id,))
    await ca.reregister()  # the refused attempt left nothing behind
    await ca.close()


async def test_client_refuses_bad_blobs_locally(bridge: Bridge, rng: random.Random) -> None:
    ca = await _client(bridge, make_peer(rng))
    with pytest.raises(UsageError):
        await ca.introduce(bytes(20), b"")
    with pytest.raises(UsageError):
        await ca.introduce(bytes(20), bytes(16 * 1024 + 1))
    await ca.close()
    with pytest.raises(BridgeError):
        await ca.introduce(bytes(20), b"x")


def test_open_introduction_checks_the_named_sender(rng: random.Random) -> None:
    a, b, c = make_peer(rng), make_peer(rng), make_peer(rng)
    blob = seal(a.keys.identity, b.record.seal_key, SealKind.OFFER, b"sdp", now=NOW, randbytes=rng.randbytes)
    assert open_introduction(b.keys, a.node_id, blob, now=NOW).payload == b"sdp"
    with pytest.raises(SealError):  # a relay that names the wrong sender
        open_introduction(b.keys, c.node_id, blob, now=NOW)
    with pytest.raises(SealError):  # not sealed to us
        open_introduction(c.keys, a.node_id, blob, now=NOW)


class SilentBridge(Bridge):
    """Never answers DB_FIND_PEER (a stuck or malicious bridge)."""

    def _on_find_peer(self, conn, msg: FindPeer) -> None:  # type: ignore[no-untyped-def]
        return


async def test_find_peers_times_out_on_a_silent_bridge(rng: random.Random) -> None:
    bridge = SilentBridge(wall_clock=lambda: NOW)
    await bridge.start()
    try:
        client = await _client(bridge, make_peer(rng))
        with pytest.raises(TimeoutError):
            await client.find_peers(bytes(20), timeout=0.2)
        await client.close()
    finally:
        await bridge.stop()


class EchoBridge(Bridge):
    """Sends the asker a DB_FIND_PEER of its own: a message no bridge sends."""

    def _on_introduce(self, conn, msg: Introduce) -> None:  # type: ignore[no-untyped-def]
        self._send(conn, FindPeer(msg.target))


async def test_client_drops_a_bridge_that_breaks_the_protocol(rng: random.Random) -> None:
    bridge = EchoBridge(wall_clock=lambda: NOW)
    await bridge.start()
    try:
        client = await _client(bridge, make_peer(rng))
        await client.introduce(bytes(20), b"x")
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_reason is not None and "protocol" in client.close_reason
        with pytest.raises(BridgeError):
            await client.find_peers(bytes(20))
    finally:
        await bridge.stop()


async def test_connect_refuses_a_record_of_another_identity(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    client = BridgeClient()
    with pytest.raises(UsageError):
        await client.connect(bridge.url, a.keys, lambda: b.record, timeout=5)
    assert client.closed


async def test_connect_once_only(bridge: Bridge, rng: random.Random) -> None:
    a = make_peer(rng)
    client = await _client(bridge, a)
    with pytest.raises(UsageError):
        await client.connect(bridge.url, a.keys, lambda: a.record)
    await client.close()


async def test_unreachable_bridge_is_a_bridge_error(rng: random.Random) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = make_peer(rng)
    client = BridgeClient()
    with pytest.raises(BridgeError, match="cannot reach"):
        await client.connect(f"ws://127.0.0.1:{port}/peersm/v1", a.keys, lambda: a.record, timeout=5)
    assert client.closed
