"""An ORDB of ours never holds a direct link to us (DESIGN §5), ORDB-to-ORDB links included.

Every peer is also an ORDB, so a peer we chose as the ORDB of a download (or of our announces) may
want an ORDB-to-ORDB link to us, to forward a query to us as an ORDB; and a peer linked to us that
way must not be chosen as our ORDB.  Either would let one peer hold our address and the hash_name
we ask for or serve at the same time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dht.records import PeerRecord, Route
from peer.crypto.seal import SealKind, open_sealed, seal
from peer.net import neighbours as neighbours_mod
from peer.net.circuits import CircuitManager, CircuitRules
from peer.net.handshake import PeerKeys
from peer.net.neighbours import LinkManager, LinkRefused, Neighbour
from peer.net.peerview import PeerView
from peer.net.routing import EventRoutes
from peer.testing.swarm import Swarm
from peer.transport.iceconfig import WebRtcConfig

ORDB_PURPOSE = 1


def record_of(keys: PeerKeys, host: str) -> PeerRecord:
    return PeerRecord(
        identity_key=keys.identity.public,
        ntor_key=keys.ntor.public,
        seal_key=keys.seal.public,
        route=Route((("webrtc", host),)),
        neighbours=(),
        stable=True,
        expiry=int(time.time() + 600),
    ).sign(keys.identity)


class RecordingSignaller:
    name = "a test signaller"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def introduce(self, target: bytes, blob: bytes) -> None:
        self.sent.append((target, blob))


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(3, seed=7, mesh=False)
    try:
        yield s
    finally:
        await s.close()


def link_manager(swarm: Swarm, i: int) -> LinkManager:
    p = swarm.peers[i]
    return LinkManager(
        keys=p.keys, driver=p.driver, webrtc=WebRtcConfig(ice_allow=("127.0.0.1",)), rng=random.Random(i)
    )


def ordb_offer(sender: PeerKeys, target: PeerKeys) -> bytes:
    payload = bytes([ORDB_PURPOSE, 0]) + sender.seal.public + b"v=0 (an SDP offer)"
    return seal(
        sender.identity,
        target.seal.public,
        SealKind.OFFER,
        payload,
        now=time.time(),
        randbytes=random.Random(1).randbytes,
    )


@pytest.mark.parametrize("ours", [True, False])
async def test_an_ordb_link_offer_from_our_own_ordb_is_refused_like_a_full_peer(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch, ours: bool
) -> None:
    me, them = swarm.peers[0].keys, swarm.peers[1].keys
    links = link_manager(swarm, 0)
    links.is_our_ordb = lambda nid: ours and nid == them.node_id
    accepted: list[str] = []

    async def fake_accept(sdp: str, _cfg: Any) -> Any:
        accepted.append(sdp)
        raise LinkRefused("test: no WebRTC here")

    monkeypatch.setattr(neighbours_mod, "accept_offer", fake_accept)
    via = RecordingSignaller()
    links.on_introduced(them.node_id, ordb_offer(them, me), via)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if via.sent or accepted:
            break
    if ours:
        assert accepted == [], "an ORDB-to-ORDB link with our own ORDB was set up"
        assert len(via.sent) == 1 and via.sent[0][0] == them.node_id
        answer = open_sealed(them.seal, via.sent[0][1], now=time.time())
        # the empty answer of a full peer: the ORDB cannot tell why it was refused
        assert answer.kind == SealKind.ANSWER and answer.payload == b""
    else:
        assert accepted, "an ordinary ORDB-to-ORDB offer was not even tried"
    await links.close()


async def test_we_open_no_ordb_link_to_our_own_ordb(swarm: Swarm) -> None:
    them = swarm.peers[1].keys
    links = link_manager(swarm, 0)
    links.is_our_ordb = lambda nid: nid == them.node_id
    via = RecordingSignaller()
    with pytest.raises(LinkRefused, match="our own ORDBs"):
        await links.connect(record_of(them, "127.0.1.2"), via, purpose=ORDB_PURPOSE)
    assert via.sent == []
    await links.close()


async def test_an_ordb_link_up_is_reported(swarm: Swarm) -> None:
    links = link_manager(swarm, 0)
    seen: list[bytes] = []
    links.on_ordb_link = seen.append
    them = swarm.peers[1].keys.node_id
    links._register(_NoLink(), 5, them, initiator=False, ordb=True)  # type: ignore[arg-type]
    assert seen == [them]
    assert them in links.linked_ids() and them not in links.neighbour_ids()


class _NoLink:
    server_cert_only = False

    async def close(self) -> None:
        return None


async def test_a_peer_we_hold_an_ordb_link_with_is_no_eligible_ordb(swarm: Swarm) -> None:
    me = swarm.peers[0]
    view = PeerView(me.keys.node_id)
    recs = [record_of(p.keys, f"127.{i}.0.1") for i, p in enumerate(swarm.peers[1:], start=1)]
    for r in recs:
        assert view.add(r, time.time())
    links = link_manager(swarm, 0)

    async def no_refresh() -> None:
        return None

    circuits = CircuitManager(
        node=me.node,
        driver=me.driver,
        view=view,
        links=links,
        guards=list,
        refresh_view=no_refresh,
        routes=EventRoutes(default=lambda _e: None),
        rules=CircuitRules(),
        rng=random.Random(3),
    )
    assert {r.node_id for r in circuits.eligible_ordbs()} == {r.node_id for r in recs}
    linked = recs[0].node_id
    links.ordb_links[linked] = Neighbour(linked, 9, _NoLink(), False, 0.0)  # type: ignore[arg-type]
    assert {r.node_id for r in circuits.eligible_ordbs()} == {recs[1].node_id}
    await links.close()
