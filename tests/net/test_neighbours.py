"""LinkManager over WebRTC and sealed signalling (peer/net/neighbours.py, DESIGN §4).

Real LinkManagers, drivers and WebRTC links on loopback; the signalling relay is an in-memory
perfect bridge (tests/net/neighbours_support.py), or a hand-made blob when a test plays a
misbehaving peer.  TLS links, closing and keeping links are in test_neighbours_tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.crypto.seal import SealKind, seal
from peer.net.neighbours import LinkRefused
from peer.transport.iceconfig import WebRtcConfig
from peer.transport.webrtc import WebRtcLink, accept_offer, create_offer
from tests.links.support import wait_for
from tests.net.neighbours_support import (
    GUARD,
    JUNK,
    Lab,
    LinkPeer,
    MakeRoom,
    Relay,
    RelayEnd,
    offer_blob,
    opened,
    settle,
)

A_HOST, B_HOST, C_HOST = "127.61.0.1", "127.62.0.1", "127.63.0.1"


async def link_over_relay(a: LinkPeer, b: LinkPeer, relay: Relay) -> None:
    await a.links.connect(b.record(), relay.via(a))
    assert await wait_for(lambda: b.linked_to(a), GUARD)


async def test_a_webrtc_link_forms_on_both_sides_and_the_relay_sees_only_sealed_blobs() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST)
        relay = Relay(a, b)
        n = await a.links.connect(b.record(), relay.via(a))
        assert (n.node_id, n.initiator, n.transport) == (b.node_id, True, "webrtc")
        assert await wait_for(lambda: b.linked_to(a), GUARD)
        nb = b.links.neighbours[a.node_id]
        assert (nb.initiator, nb.transport) == (False, "webrtc")
        assert a.links.neighbour_ids() == [b.node_id] and b.links.neighbour_ids() == [a.node_id]
        assert a.links.chan_of(b.node_id) == n.chan and a.links.chan_of(os.urandom(20)) is None
        assert a.changes == [1] and b.changes == [1]

        # one offer, one answer; both sealed: the relay learns neither SDP nor addresses
        assert [(s, t) for s, t, _ in relay.carried] == [(a.node_id, b.node_id), (b.node_id, a.node_id)]
        for _, _, blob in relay.carried:
            for secret in (A_HOST.encode(), B_HOST.encode(), b"candidate", b"v=0"):
                assert secret not in blob
        offer = opened(b, relay.carried[0][2])
        assert (offer.sender_node_id, offer.kind) == (a.node_id, SealKind.OFFER)
        assert offer.payload[:2] == bytes([0, 0])  # a neighbour link; we had no link yet
        assert offer.payload[2:34] == a.keys.seal.public  # where the answer is sealed to
        assert A_HOST.encode() in offer.payload[34:]  # the SDP, with its candidates, is inside
        answer = opened(a, relay.carried[1][2])
        assert (answer.sender_node_id, answer.kind) == (b.node_id, SealKind.ANSWER)
        assert B_HOST.encode() in answer.payload

        # asking again for a peer we are linked to opens nothing new
        assert await a.links.connect(b.record(), relay.via(a)) is n
        assert len(relay.carried) == 2 and a.links.count == 1


async def test_a_link_to_ourselves_or_with_no_route_is_refused_before_anything_is_sent() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST)
        relay = Relay(a, b)
        with pytest.raises(LinkRefused, match="ourselves"):
            await a.links.connect(a.record(), relay.via(a))
        no_route: list[list[RelayEnd] | None] = [None, []]
        for via in no_route:
            with pytest.raises(LinkRefused, match="no way to reach"):
                await a.links.connect(b.record(), via)
        assert relay.carried == [] and a.links.count == 0
        assert a.links.may_try(b.node_id)  # nothing was tried: no back-off


async def test_a_full_peer_answers_at_once_with_a_sealed_empty_answer() -> None:
    async with Lab() as lab:
        a, b, c = lab.peer(A_HOST), lab.peer(B_HOST, max_links=1), lab.peer(C_HOST)
        relay = Relay(a, b, c)
        await link_over_relay(c, b, relay)
        b.links.make_room = room = MakeRoom(answer=False)
        relay.carried.clear()
        with pytest.raises(LinkRefused, match="holds its maximum of links"):
            await a.links.connect(b.record(), relay.via(a))
        assert room.asked == [(a.node_id, 0, 0)]  # the runtime was asked to make room, and said no
        answer = opened(a, relay.carried[-1][2])
        assert (answer.sender_node_id, answer.kind, answer.payload) == (b.node_id, SealKind.ANSWER, b"")
        assert b.links.neighbour_ids() == [c.node_id]
        assert a.links.count == 0 and "holds its maximum of links" in a.links.refused[-1]
        assert not a.links.may_try(b.node_id)  # backs off
        a.clock.t += a.links.config.failure_backoff + 1
        assert a.links.may_try(b.node_id)


async def test_a_full_peer_is_asked_again_after_the_short_full_backoff() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST, full_backoff=5.0, failure_backoff=30.0), lab.peer(B_HOST, max_links=0)
        with pytest.raises(LinkRefused, match="holds its maximum of links"):
            await a.links.connect(b.record(), Relay(a, b).via(a))
        a.clock.t += 6.0
        assert a.links.may_try(b.node_id)


async def test_a_full_peer_that_makes_room_drops_another_link_for_the_newcomer() -> None:
    async with Lab() as lab:
        a, b, c = lab.peer(A_HOST), lab.peer(B_HOST, max_links=1), lab.peer(C_HOST)
        relay = Relay(a, b, c)
        await link_over_relay(c, b, relay)
        b.links.make_room = room = MakeRoom(answer=True, then=lambda: b.links.drop(c.node_id, "making room"))
        await a.links.connect(b.record(), relay.via(a), purpose=2)  # a rotation
        assert room.asked == [(a.node_id, 0, 2)]
        assert await wait_for(lambda: b.linked_to(a), GUARD)
        assert b.links.neighbour_ids() == [a.node_id] and b.links.dropped == ["making room"]
        # c was told why before its link went (DB_LINK_CLOSING "rotated"), and may ask again at once
        assert await wait_for(lambda: c.links.count == 0, GUARD)
        assert c.links.dropped == ["the peer rotates its links"] and c.links.may_try(b.node_id)


async def test_a_full_peer_still_links_to_its_guard_and_asks_it_to_keep_the_link() -> None:
    async with Lab() as lab:
        a, b, c = lab.peer(A_HOST), lab.peer(B_HOST, max_links=1), lab.peer(C_HOST)
        relay = Relay(a, b, c)
        await link_over_relay(c, b, relay)
        b.links.set_guards({a.node_id})  # not linked yet: nothing to say
        await a.links.connect(b.record(), relay.via(a))
        assert await wait_for(lambda: b.linked_to(a), GUARD)
        assert set(b.links.neighbour_ids()) == {a.node_id, c.node_id}
        # b's circuits start at its guard a: a is asked (DB_LINK_KEEP) not to rotate the link away
        assert await wait_for(lambda: a.links.kept_ids() == {b.node_id}, GUARD)
        assert c.links.kept_ids() == set()


async def test_an_ordb_link_is_outside_k_and_bounded_by_max_ordb_links() -> None:
    async with Lab() as lab:
        a, c, d = lab.peer(A_HOST), lab.peer(C_HOST), lab.peer("127.64.0.1")
        b = lab.peer(B_HOST, max_links=1, max_ordb_links=1)
        relay = Relay(a, b, c, d)
        await link_over_relay(c, b, relay)  # b is full
        tls = await b.links.listen_tls("127.0.0.1", 0)  # an ORDB link never takes the TLS endpoint
        n = await a.links.connect(b.record(tls=tls), relay.via(a), purpose=1)
        assert n.transport == "webrtc" and opened(b, relay.carried[-2][2]).payload[0] == 1
        assert await wait_for(lambda: a.node_id in b.links.ordb_links, GUARD)
        assert b.links.neighbour_ids() == [c.node_id] and b.links.count == 1
        assert a.links.neighbour_ids() == [] and a.changes == []  # not a neighbour: no change
        assert a.links.chan_of(b.node_id) is None and a.links.chan_of(b.node_id, ordb=True) == n.chan
        # a second ORDB link is one too many: a sealed empty answer
        with pytest.raises(LinkRefused, match="holds its maximum of links"):
            await d.links.connect(b.record(), relay.via(d), purpose=1)
        assert list(b.links.ordb_links) == [a.node_id]
        # the ORDB link ends: it leaves the ORDB table, never the neighbours
        await a.links.ordb_links[b.node_id].link.close()
        assert await wait_for(lambda: not b.links.ordb_links, GUARD)
        assert b.links.neighbour_ids() == [c.node_id] and b.changes == [1]


async def test_a_relay_that_never_answers_ends_in_a_timeout_and_a_back_off() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST, connect_timeout=0.3), lab.peer(B_HOST)
        relay = Relay(a, b)
        relay.deliver = False
        attempt = asyncio.ensure_future(a.links.connect(b.record(), relay.via(a)))
        assert await wait_for(lambda: relay.carried, GUARD)
        assert a.links.count == 1 and not a.links.may_try(b.node_id)  # in progress: counted in K
        with pytest.raises(LinkRefused, match="TimeoutError"):
            await attempt
        assert a.links.count == 0 and "TimeoutError" in a.links.refused[-1]
        assert not a.links.may_try(b.node_id)
        a.clock.t += a.links.config.failure_backoff + 1
        assert a.links.may_try(b.node_id)


class Forger:
    """A relay that answers every offer itself, with a blob of its making."""

    name = "a forging relay"

    def __init__(self, asker: LinkPeer, answer: bytes) -> None:
        self.asker = asker
        self.answer = answer

    async def introduce(self, target: bytes, blob: bytes) -> None:
        self.asker.links.on_introduced(target, self.answer, self)


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        ("sealed by another peer", "not sealed by the peer we asked"),
        # glare: the peer's own offer is taken as an offer (this one is malformed), not as the answer
        ("an offer, not an answer", "TimeoutError"),
        ("junk", "SealError"),
    ],
)
async def test_an_answer_not_sealed_by_the_peer_we_asked_is_refused(forged: str, why: str) -> None:
    async with Lab() as lab:
        a, b, mallory = lab.peer(A_HOST, connect_timeout=1.0), lab.peer(B_HOST), lab.peer(C_HOST)
        answer = {
            "sealed by another peer": offer_blob(b, a, b"v=0", signer=mallory, kind=SealKind.ANSWER),
            "an offer, not an answer": offer_blob(b, a, b"v=0"),
            "junk": JUNK,
        }[forged]
        with pytest.raises(LinkRefused, match=why):
            await a.links.connect(b.record(), Forger(a, answer))
        assert a.links.count == 0 and any(why in r for r in a.links.refused)
        assert not a.links.may_try(b.node_id)
        if forged == "an offer, not an answer" and b.node_id < a.node_id:
            # glare: the higher NodeID takes the lower one's offer as an offer (a malformed one here);
            # the lower NodeID ignores it (its own offer wins), so only its wait times out
            assert await wait_for(
                lambda: any(r.startswith("an inbound link failed: SdpError") for r in a.links.refused), GUARD
            ), a.links.refused


async def test_empty_answers_move_on_to_the_next_signaller_and_all_empty_is_unreachable() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST)
        nowhere1, nowhere2, good = Relay(a), Relay(a), Relay(a, b)  # the first two do not know b
        with pytest.raises(LinkRefused, match="not reachable through relay one or relay two"):
            await a.links.connect(b.record(), [nowhere1.via(a, "relay one"), nowhere2.via(a, "relay two")])
        assert len(nowhere1.carried) == len(nowhere2.carried) == 1
        a.clock.t += a.links.config.failure_backoff + 1
        n = await a.links.connect(b.record(), [nowhere1.via(a, "relay one"), good.via(a, "relay two")])
        assert n.node_id == b.node_id and len(nowhere1.carried) == 2
        assert [(s, t) for s, t, _ in good.carried] == [(a.node_id, b.node_id), (b.node_id, a.node_id)]


# ---- inbound offers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "why"),
    [
        ("junk", "an offer that does not open"),
        ("sealed by another peer", "an offer whose sender is not who the relay says"),
        ("an answer", "an offer whose sender is not who the relay says"),
        ("too short", "a malformed offer"),
        ("unknown purpose", "a malformed offer"),
    ],
)
async def test_an_offer_that_does_not_hold_is_refused_and_gets_no_answer(offer: str, why: str) -> None:
    async with Lab() as lab:
        a, b, mallory = lab.peer(A_HOST), lab.peer(B_HOST), lab.peer(C_HOST)
        relay = Relay(a, b)
        blob = {
            "junk": JUNK,
            "sealed by another peer": offer_blob(a, b, signer=mallory),
            "an answer": offer_blob(a, b, kind=SealKind.ANSWER),
            "too short": seal(
                a.keys.identity,
                b.keys.seal.public,
                SealKind.OFFER,
                bytes(34),
                now=b.clock(),
                randbytes=os.urandom,
            ),
            "unknown purpose": offer_blob(a, b, purpose=3),
        }[offer]
        b.links.on_introduced(a.node_id, blob, relay.via(b))
        assert await wait_for(lambda: b.links.refused, GUARD)
        assert len(b.links.refused) == 1 and b.links.refused[0].startswith(why)
        assert relay.carried == [] and b.links.count == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=120))
async def test_any_sealed_offer_payload_is_refused_cleanly_or_tried(payload: bytes) -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST)
        relay = Relay(a, b)
        blob = seal(
            a.keys.identity, b.keys.seal.public, SealKind.OFFER, payload, now=b.clock(), randbytes=os.urandom
        )
        b.links.on_introduced(a.node_id, blob, relay.via(b))
        assert await wait_for(lambda: b.links.refused, GUARD)
        malformed = len(payload) < 35 or payload[0] not in (0, 1, 2)
        if malformed:
            assert b.links.refused == ["a malformed offer"]
        else:  # parsed; the SDP inside is no offer, so the link fails (no answer was ever sent)
            assert b.links.refused[0].startswith("an inbound link failed")
        assert relay.carried == [] and b.links.count == 0


async def test_a_second_offer_from_a_neighbour_and_an_empty_blob_are_ignored() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST)
        relay = Relay(a, b)
        await link_over_relay(a, b, relay)
        carried = len(relay.carried)
        b.links.on_introduced(a.node_id, offer_blob(a, b), relay.via(b))
        b.links.on_introduced(os.urandom(20), b"", relay.via(b))  # an empty blob nobody waits for
        await settle(b)
        assert len(b.links.refused) == 1  # the probe's only
        assert len(relay.carried) == carried and b.links.count == 1


class AnsweringForHi:
    """A relay that answers lo's offer in hi's name (the test holds hi's keys) with a real SDP answer
    from a stand-in WebRTC end that never speaks: lo then waits in its link handshake, still
    connecting, with its answer already in hand."""

    name = "a relay"

    def __init__(self, lo: LinkPeer, hi: LinkPeer) -> None:
        self.lo, self.hi = lo, hi
        self.stand_in: WebRtcLink | None = None

    async def introduce(self, target: bytes, blob: bytes) -> None:
        sdp = opened(self.hi, blob).payload[34:].decode()
        self.stand_in, answer = await accept_offer(sdp, WebRtcConfig.loopback(B_HOST))
        reply = seal(
            self.hi.keys.identity,
            self.lo.keys.seal.public,
            SealKind.ANSWER,
            answer.encode(),
            now=self.lo.clock(),
            randbytes=os.urandom,
        )
        self.lo.links.on_introduced(self.hi.node_id, reply, self)


async def test_glare_the_lower_nodeid_ignores_the_offer_of_a_peer_it_is_connecting_to() -> None:
    async with Lab() as lab:
        lo, hi = sorted((lab.peer(A_HOST), lab.peer(B_HOST)), key=lambda p: p.node_id)
        signaller = AnsweringForHi(lo, hi)
        attempt = asyncio.ensure_future(lo.links.connect(hi.record(), signaller))
        try:
            assert await wait_for(lambda: signaller.stand_in is not None, GUARD)
            relay = Relay(lo, hi)
            pending, sdp = await create_offer(WebRtcConfig.loopback(B_HOST))
            try:
                lo.links.on_introduced(hi.node_id, offer_blob(hi, lo, sdp.encode()), relay.via(lo))
                await settle(lo)
                assert relay.carried == []  # no answer: our own outbound link wins
                assert lo.links.count == 1 and not attempt.done()  # only our attempt in progress
            finally:
                await pending.cancel()
        finally:
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, LinkRefused):
                await attempt
            if signaller.stand_in is not None:
                await signaller.stand_in.close()


async def test_glare_over_webrtc_ends_with_the_link_opened_by_the_lower_nodeid() -> None:
    async with Lab() as lab:
        lo, hi = sorted(
            (lab.peer(A_HOST, connect_timeout=3.0), lab.peer(B_HOST, connect_timeout=3.0)),
            key=lambda p: p.node_id,
        )
        relay = Relay(lo, hi)
        await asyncio.gather(
            lo.links.connect(hi.record(), relay.via(lo)),
            hi.links.connect(lo.record(), relay.via(hi)),
            return_exceptions=True,
        )
        assert lo.linked_to(hi) and hi.linked_to(lo)
        assert lo.links.neighbours[hi.node_id].initiator and not hi.links.neighbours[lo.node_id].initiator


async def test_an_inbound_link_that_never_opens_is_refused_and_frees_its_place() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST, connect_timeout=0.5)
        relay = Relay(a, b)
        relay.deliver = False  # b's answer never reaches a
        pending, sdp = await create_offer(WebRtcConfig.loopback(A_HOST))
        try:
            b.links.on_introduced(a.node_id, offer_blob(a, b, sdp.encode()), relay.via(b))
            assert await wait_for(lambda: relay.carried, GUARD)
            answer = opened(a, relay.carried[0][2])
            assert answer.kind == SealKind.ANSWER and B_HOST.encode() in answer.payload
            assert b.links.count == 1  # accepting: counted in K
            assert await wait_for(lambda: b.links.refused, GUARD)
            assert b.links.refused[0].startswith("an inbound link failed")
            assert b.links.count == 0 and b.links.neighbour_ids() == []
        finally:
            await pending.cancel()


async def test_a_full_peer_with_no_usable_seal_key_in_the_offer_stays_silent() -> None:
    async with Lab() as lab:
        a, b = lab.peer(A_HOST), lab.peer(B_HOST, max_links=0)
        relay = Relay(a, b)
        payload = bytes([0, 0]) + bytes(32) + b"v=0"  # an all-zero X25519 key: nothing can be sealed to it
        blob = seal(
            a.keys.identity, b.keys.seal.public, SealKind.OFFER, payload, now=b.clock(), randbytes=os.urandom
        )
        b.links.on_introduced(a.node_id, blob, relay.via(b))
        await settle(b)
        assert relay.carried == [] and b.links.count == 0
