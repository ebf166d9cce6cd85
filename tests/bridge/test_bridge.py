"""The bridge server (peer/roles/bridge.py) over a real WebSocket on 127.0.0.1: registration,
DB_FIND_PEER, blind relay of sealed blobs, the recorder, limits (DESIGN §4, §11)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from dht.keys import distance
from dht.records import ProviderRecord, Route
from peer.crypto.seal import SealError, SealKind, seal
from peer.errors import UsageError
from peer.net.bridgeclient import BridgeClient, BridgeError, open_introduction
from peer.roles.bridge import Bridge, BridgeLimits, TokenBucket, parse_listen
from peer.wire.cells import Cell
from peer.wire.linkcells import (
    FindPeer,
    FoundPeer,
    Introduce,
    Register,
    Registered,
    RegisterStatus,
)

from .helpers import (
    NOW,
    SDP_ADDRESS,
    SDP_OFFER,
    BridgePeer,
    frame,
    make_peer,
    make_record,
    raw_connect,
    raw_register,
    recv_msg,
    recv_until_closed,
    register_cell,
)


async def _client(bridge: Bridge, peer: BridgePeer, **kw: object) -> BridgeClient:
    client = BridgeClient(wall_clock=lambda: NOW, **kw)  # type: ignore[arg-type]
    await client.connect(bridge.url, peer.keys, lambda: peer.record, timeout=5)
    return client


# --------------------------------------------------------------------------- registration


async def test_good_registration_is_accepted(bridge: Bridge, rng: random.Random) -> None:
    assert bridge.url.startswith("ws://127.0.0.1:") and bridge.url.endswith("/peersm/v1")
    client = await _client(bridge, make_peer(rng))
    assert bridge.registered_count == 1
    await client.close()
    while bridge.connection_count:  # the bridge notices the close (bounded by the test timeout)
        await asyncio.sleep(0.01)
    assert bridge.registered_count == 0


async def _refused(
    bridge: Bridge, build: Callable[[bytes], Register], *, registered: int = 0
) -> list[object]:
    """Send ``build(nonce)`` on a fresh connection; every message until the bridge closes it."""
    link, nonce = await raw_connect(bridge.url)
    await link.send(frame(build(nonce)))
    got: list[object] = list(await recv_until_closed(link))
    assert bridge.registered_count == registered
    return got


def _one_refusal(got: Sequence[object], status: RegisterStatus) -> Registered:
    assert len(got) == 1, got
    reply = got[0]
    assert isinstance(reply, Registered)
    assert reply.status == status
    return reply


async def test_bad_signature_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer, other = make_peer(rng), make_peer(rng)
    # signed by another identity than the record's
    got = await _refused(
        bridge, lambda nonce: register_cell(other.keys, peer.record.encode(), nonce, bridge.url)
    )
    reply = _one_refusal(got, RegisterStatus.BAD_SIGNATURE)
    assert "signature" in reply.reason


async def test_wrong_nonce_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng)
    got = await _refused(
        bridge, lambda nonce: register_cell(peer.keys, peer.record.encode(), bytes(32), bridge.url)
    )
    _one_refusal(got, RegisterStatus.BAD_SIGNATURE)


async def test_registration_for_another_bridge_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng)
    other_url = bridge.url.replace("127.0.0.1", "127.0.0.2")
    got = await _refused(
        bridge, lambda nonce: register_cell(peer.keys, peer.record.encode(), nonce, other_url)
    )
    _one_refusal(got, RegisterStatus.BAD_SIGNATURE)


async def test_replayed_registration_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng)
    link, nonce = await raw_connect(bridge.url)
    captured = register_cell(peer.keys, peer.record.encode(), nonce, bridge.url)
    await link.send(frame(captured))
    assert isinstance(await recv_msg(link), Registered)
    # the same bytes on another connection (another nonce) do not register
    got = await _refused(bridge, lambda _nonce: captured, registered=1)
    _one_refusal(got, RegisterStatus.BAD_SIGNATURE)
    await link.close()


async def test_expired_record_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng, expiry=NOW - 1)
    got = await _refused(
        bridge, lambda nonce: register_cell(peer.keys, peer.record.encode(), nonce, bridge.url)
    )
    reply = _one_refusal(got, RegisterStatus.BAD_RECORD)
    assert "expired" in reply.reason


async def test_forged_record_is_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng)
    data = bytearray(peer.record.encode())
    data[-1] ^= 1  # the record's own signature
    got = await _refused(bridge, lambda nonce: register_cell(peer.keys, bytes(data), nonce, bridge.url))
    reply = _one_refusal(got, RegisterStatus.BAD_RECORD)
    assert "signature" in reply.reason


async def test_garbage_and_provider_records_are_refused(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng)
    got = await _refused(bridge, lambda nonce: register_cell(peer.keys, b"\x01\x02junk", nonce, bridge.url))
    _one_refusal(got, RegisterStatus.BAD_RECORD)
    provider = ProviderRecord(
        bytes(20), peer.keys.identity.public, bytes(32), bytes(32), Route(), int(NOW + 60)
    ).sign(peer.keys.identity)
    got = await _refused(bridge, lambda nonce: register_cell(peer.keys, provider.encode(), nonce, bridge.url))
    reply = _one_refusal(got, RegisterStatus.BAD_RECORD)
    assert "not a peer record" in reply.reason


async def test_client_raises_the_bridge_reason(bridge: Bridge, rng: random.Random) -> None:
    peer = make_peer(rng, expiry=NOW - 5)
    client = BridgeClient(wall_clock=lambda: NOW)
    with pytest.raises(BridgeError, match="expired") as info:
        await client.connect(bridge.url, peer.keys, lambda: peer.record, timeout=5)
    assert info.value.status == RegisterStatus.BAD_RECORD
    assert client.closed


async def test_reregistration_replaces_the_older_connection(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    first = await raw_register(bridge.url, a)
    second = await _client(bridge, a)
    got = await recv_until_closed(first)
    assert got and isinstance(got[-1], Registered) and got[-1].status == RegisterStatus.REPLACED
    assert bridge.registered_count == 1
    # introductions for A now reach the newer connection
    sender = await _client(bridge, b)
    await sender.introduce(a.node_id, b"sealed")
    assert await asyncio.wait_for(second.introductions.get(), 5) == (b.node_id, b"sealed")
    await second.close()
    await sender.close()


async def test_unregistered_connection_may_only_register(bridge: Bridge, rng: random.Random) -> None:
    link, _ = await raw_connect(bridge.url)
    await link.send(frame(FindPeer(bytes(20))))
    got = await recv_until_closed(link)
    reply = _one_refusal(got, RegisterStatus.PROTOCOL)
    assert "register first" in reply.reason


async def test_registration_timeout_closes_idle_connection(rng: random.Random) -> None:
    bridge = Bridge(wall_clock=lambda: NOW, limits=BridgeLimits(register_timeout=0.2))
    await bridge.start()
    try:
        link, _ = await raw_connect(bridge.url)
        got = await recv_until_closed(link)
        reply = _one_refusal(got, RegisterStatus.PROTOCOL)
        assert "in time" in reply.reason
    finally:
        await bridge.stop()


async def test_registry_cap(rng: random.Random) -> None:
    bridge = Bridge(wall_clock=lambda: NOW, limits=BridgeLimits(max_peers=2))
    await bridge.start()
    try:
        clients = [await _client(bridge, make_peer(rng)) for _ in range(2)]
        with pytest.raises(BridgeError, match="full"):
            await _client(bridge, make_peer(rng))
        assert bridge.registered_count == 2
        for c in clients:
            await c.close()
    finally:
        await bridge.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00\x00",
        Cell(1, 200, b"\x01" + bytes(20)).encode(),  # circuit id 1
        Cell(0, 200, b"\x01" + bytes(20)).encode() * 2,  # two cells in one message
        Cell(0, 201, b"\x01\x00").encode(),  # a bridge's cell sent by a peer
        Cell(0, 3, bytes(509)).encode(),  # RELAY
        Cell(0, 205, b"\x02" + bytes(70)).encode(),  # unknown version
        Cell(0, 205, b"\x01\x00").encode(),  # truncated
    ],
)
async def test_protocol_breakers_are_closed_with_a_reason(bridge: Bridge, raw: bytes) -> None:
    link, _ = await raw_connect(bridge.url)
    await link.send(raw)
    got = await recv_until_closed(link)
    reply = _one_refusal(got, RegisterStatus.PROTOCOL)
    assert reply.reason.startswith("protocol error:")


# --------------------------------------------------------------------------- find_peer


async def test_find_peer_returns_the_closest_never_the_asker(bridge: Bridge, rng: random.Random) -> None:
    peers = [make_peer(rng) for _ in range(14)]
    links = [await raw_register(bridge.url, p) for p in peers]
    asker = peers[0]
    for target in [rng.randbytes(20), asker.node_id, peers[5].node_id]:
        await links[0].send(frame(FindPeer(target)))
        found = await recv_msg(links[0])
        assert isinstance(found, FoundPeer)
        others = sorted(peers[1:], key=lambda p: distance(p.node_id, target))
        assert list(found.records) == [p.record.encode() for p in others[:8]]
        assert asker.record.encode() not in found.records
    for link in links:
        await link.close()


async def test_find_peer_with_few_peers(bridge: Bridge, rng: random.Random) -> None:
    alone = await _client(bridge, make_peer(rng))
    assert await alone.find_peers(rng.randbytes(20)) == []
    other = make_peer(rng)
    second = await _client(bridge, other)
    assert [r.node_id for r in await alone.find_peers(rng.randbytes(20))] == [other.node_id]
    await alone.close()
    await second.close()


# --------------------------------------------------------------------------- introductions


async def test_sealed_offer_and_answer_round_trip(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    got_b: list[tuple[bytes, bytes]] = []
    arrived = asyncio.Event()

    def on_b(source: bytes, blob: bytes) -> None:
        got_b.append((source, blob))
        arrived.set()

    ca = await _client(bridge, a)
    cb = await _client(bridge, b, on_introduced=on_b)
    offer = seal(
        a.keys.identity, b.record.seal_key, SealKind.OFFER, SDP_OFFER, now=NOW, randbytes=rng.randbytes
    )
    await ca.introduce(b.node_id, offer)
    await asyncio.wait_for(arrived.wait(), 5)
    [(source, blob)] = got_b
    assert source == a.node_id
    opened = open_introduction(b.keys, source, blob, now=NOW)
    assert opened.kind == SealKind.OFFER and opened.payload == SDP_OFFER
    assert opened.sender_node_id == a.node_id  # the sender is proven, not just claimed by the bridge

    answer_sdp = SDP_OFFER.replace(b"actpass", b"active")
    answer = seal(
        b.keys.identity, a.record.seal_key, SealKind.ANSWER, answer_sdp, now=NOW, randbytes=rng.randbytes
    )
    await cb.introduce(a.node_id, answer)
    source, blob = await asyncio.wait_for(ca.introductions.get(), 5)
    assert source == b.node_id
    opened = open_introduction(a.keys, source, blob, now=NOW)
    assert (opened.kind, opened.payload, opened.sender_node_id) == (SealKind.ANSWER, answer_sdp, b.node_id)
    await ca.close()
    await cb.close()


async def test_unknown_target_is_not_reachable(bridge: Bridge, rng: random.Random) -> None:
    a = make_peer(rng)
    ca = await _client(bridge, a)
    nobody = rng.randbytes(20)
    await ca.introduce(nobody, b"sealed offer")
    assert await asyncio.wait_for(ca.introductions.get(), 5) == (nobody, b"")
    await ca.introduce(a.node_id, b"to myself")
    assert await asyncio.wait_for(ca.introductions.get(), 5) == (a.node_id, b"")
    await ca.close()


class TamperingBridge(Bridge):
    """A malicious bridge: flips one byte of every relayed blob."""

    def _on_introduce(self, conn, msg: Introduce) -> None:  # type: ignore[no-untyped-def]
        blob = bytearray(msg.blob)
        blob[len(blob) // 2] ^= 0x01
        super()._on_introduce(conn, Introduce(msg.target, bytes(blob)))


class SwappingBridge(Bridge):
    """A malicious bridge: replaces the blob with its own offer, sealed to the same target."""

    def __init__(self, target_seal: bytes, rng: random.Random) -> None:
        super().__init__(wall_clock=lambda: NOW)
        self._own = make_peer(rng)
        self._target_seal = target_seal
        self._rng = rng

    def _on_introduce(self, conn, msg: Introduce) -> None:  # type: ignore[no-untyped-def]
        forged = seal(
            self._own.keys.identity,
            self._target_seal,
            SealKind.OFFER,
            SDP_OFFER,
            now=NOW,
            randbytes=self._rng.randbytes,
        )
        super()._on_introduce(conn, Introduce(msg.target, forged))


@pytest.mark.parametrize("kind", ["tamper", "swap"])
async def test_malicious_bridge_is_caught_at_the_target(kind: str, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    bad: Bridge = (
        TamperingBridge(wall_clock=lambda: NOW)
        if kind == "tamper"
        else SwappingBridge(b.record.seal_key, rng)
    )
    await bad.start()
    try:
        ca = await _client(bad, a)
        cb = await _client(bad, b)
        offer = seal(
            a.keys.identity, b.record.seal_key, SealKind.OFFER, SDP_OFFER, now=NOW, randbytes=rng.randbytes
        )
        await ca.introduce(b.node_id, offer)
        source, blob = await asyncio.wait_for(cb.introductions.get(), 5)
        assert source == a.node_id and blob != offer
        with pytest.raises(SealError):  # the link would be refused
            open_introduction(b.keys, source, blob, now=NOW)
        await ca.close()
        await cb.close()
    finally:
        await bad.stop()


# --------------------------------------------------------------------------- the recorder and logs


async def test_recorder_sees_every_message_and_no_candidate(
    rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, bytes]] = []
    bridge = Bridge(wall_clock=lambda: NOW, recorder=lambda kind, raw: seen.append((kind, raw)))
    await bridge.start()
    caplog.set_level(logging.DEBUG, logger="peer")
    a, b = make_peer(rng), make_peer(rng)
    try:
        ca = await _client(bridge, a)
        cb = await _client(bridge, b)
        offer = seal(
            a.keys.identity, b.record.seal_key, SealKind.OFFER, SDP_OFFER, now=NOW, randbytes=rng.randbytes
        )
        await ca.introduce(b.node_id, offer)
        await asyncio.wait_for(cb.introductions.get(), 5)
        answer = seal(
            b.keys.identity, a.record.seal_key, SealKind.ANSWER, SDP_OFFER, now=NOW, randbytes=rng.randbytes
        )
        await cb.introduce(a.node_id, answer)
        await asyncio.wait_for(ca.introductions.get(), 5)
        assert [r.node_id for r in await ca.find_peers(b.node_id)] == [b.node_id]
        await ca.close()
        await cb.close()
    finally:
        await bridge.stop()
    kinds = sorted(kind for kind, _ in seen)
    assert kinds == sorted(
        ["out:DB_HELLO"] * 2
        + ["in:DB_REGISTER"] * 2
        + ["out:DB_REGISTERED"] * 2
        + ["in:DB_INTRODUCE", "out:DB_INTRODUCED"] * 2
        + ["in:DB_FIND_PEER", "out:DB_FOUND_PEER"]
    )
    relayed = [raw for kind, raw in seen if kind.endswith("INTRODUCE") or kind.endswith("INTRODUCED")]
    assert any(offer in raw for raw in relayed)  # the recorder really saw the relayed blobs
    address = SDP_ADDRESS.encode()
    packed = bytes(int(x) for x in SDP_ADDRESS.split("."))
    for _, raw in seen:
        assert b"candidate" not in raw
        assert address not in raw and packed not in raw
        assert b"fingerprint" not in raw
    # logs at INFO and above name no NodeID, address or blob; not even DEBUG names a NodeID
    for rec in caplog.records:
        text = rec.getMessage()
        for peer in (a, b):
            assert peer.node_id.hex() not in text
        if rec.levelno >= logging.INFO:
            assert "127." not in text


async def test_recorder_is_off_by_default(rng: random.Random) -> None:
    assert Bridge()._recorder is None


# --------------------------------------------------------------------------- limits


async def test_oversized_blob_closes_only_that_connection(bridge: Bridge, rng: random.Random) -> None:
    a, b = make_peer(rng), make_peer(rng)
    bad = await raw_register(bridge.url, a)
    good = await _client(bridge, b)
    await bad.send(frame(Introduce(b.node_id, bytes(16 * 1024 + 1))))
    got = await recv_until_closed(bad)
    reply = _one_refusal(got, RegisterStatus.PROTOCOL)
    assert "16385 bytes" in reply.reason
    assert good.introductions.empty()  # nothing was relayed
    assert bridge.registered_count == 1
    assert await good.find_peers(a.node_id) == []
    await good.close()


async def test_introduction_flood_is_cut_off(rng: random.Random) -> None:
    frozen = 1000.0  # the limiter's clock stands still: exactly the burst is allowed
    limits = BridgeLimits(introduce_burst=50)
    bridge = Bridge(wall_clock=lambda: NOW, clock=lambda: frozen, limits=limits)
    await bridge.start()
    try:
        a, b, c = make_peer(rng), make_peer(rng), make_peer(rng)
        flooder = await raw_register(bridge.url, a)
        victim = await _client(bridge, b)
        bystander = await _client(bridge, c)
        for _ in range(60):  # ten past the burst, all written before the bridge answers
            await flooder.send(frame(Introduce(b.node_id, b"x" * 100)))
        got = await recv_until_closed(flooder)
        assert got[-1] == Registered(RegisterStatus.RATE_LIMITED, "too many DB_INTRODUCE requests")
        assert got[:-1] == []  # every relayed one reached the victim, nothing bounced
        # the other connections still work; the victim got exactly the burst, then the bystander's
        await bystander.introduce(b.node_id, b"hello")
        for _ in range(50):
            assert await asyncio.wait_for(victim.introductions.get(), 5) == (a.node_id, b"x" * 100)
        assert await asyncio.wait_for(victim.introductions.get(), 5) == (c.node_id, b"hello")
        assert bridge.registered_count == 2
        await victim.close()
        await bystander.close()
    finally:
        await bridge.stop()


async def test_find_peer_flood_is_cut_off(rng: random.Random) -> None:
    bridge = Bridge(wall_clock=lambda: NOW, clock=lambda: 5.0, limits=BridgeLimits(find_burst=20))
    await bridge.start()
    try:
        link = await raw_register(bridge.url, make_peer(rng))
        for _ in range(30):
            await link.send(frame(FindPeer(bytes(20))))
        got = await recv_until_closed(link)
        assert [type(m) for m in got] == [FoundPeer] * 20 + [Registered]
        assert got[-1] == Registered(RegisterStatus.RATE_LIMITED, "too many DB_FIND_PEER requests")
    finally:
        await bridge.stop()


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token per half second
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at the burst
    with pytest.raises(UsageError):
        TokenBucket(rate=0, burst=1, now=0)


async def test_stop_notifies_registered_peers(rng: random.Random) -> None:
    bridge = Bridge(wall_clock=lambda: NOW)
    await bridge.start()
    client = await _client(bridge, make_peer(rng))
    await bridge.stop()
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.close_reason is not None and "stopping" in client.close_reason
    with pytest.raises(BridgeError, match="stopping"):
        await client.find_peers(bytes(20))


# --------------------------------------------------------------------------- the command


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("127.0.0.1", ":80", "host:x", "h:70000"):
        with pytest.raises(UsageError):
            parse_listen(bad)


@pytest.fixture
async def bridge_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    code = "import asyncio, sys; from peer.roles.bridge import run_bridge; sys.exit(asyncio.run(run_bridge('127.0.0.1:0')))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    try:
        yield proc, line.decode().strip()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_bridge_prints_url_and_exits_0_on_sigterm(
    bridge_process: tuple[asyncio.subprocess.Process, str], rng: random.Random
) -> None:
    proc, url = bridge_process
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/peersm/v1")
    keys = make_peer(rng).keys
    record = make_record(keys, expiry=time.time() + 600)  # the real process uses the real clock
    client = BridgeClient()
    await client.connect(url, keys, lambda: record, timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    await asyncio.wait_for(client.wait_closed(), 10)
    await client.close()


async def test_a_target_that_stops_reading_costs_bounded_memory(rng: random.Random) -> None:
    limits = BridgeLimits(introduce_rate=1e6, introduce_burst=1e6, send_queue=8)
    bridge = Bridge(wall_clock=lambda: NOW, limits=limits)
    await bridge.start()
    try:
        a, b = make_peer(rng), make_peer(rng)
        sender = await _client(bridge, a)
        stuck = await raw_register(bridge.url, b)  # registered, then never reads again
        blob = bytes(16 * 1024)
        bounced = 0
        for _ in range(2000):  # ~32 MiB offered, far more than the socket buffers hold
            await sender.introduce(b.node_id, blob)
            while not sender.introductions.empty():
                assert sender.introductions.get_nowait() == (b.node_id, b"")
                bounced += 1
            if bounced >= 10:
                break
        assert bounced >= 10  # once the stuck peer's queue is full, introductions bounce
        [conn] = [c for c in bridge._conns if c.node_id == b.node_id]
        assert conn.outbox.qsize() <= limits.send_queue
        assert bridge.registered_count == 2  # someone else's flood does not unregister the victim
        await sender.close()
        await stuck.close()
    finally:
        await bridge.stop()
