"""Carrying sealed offers (peer/net/signalling.py, DESIGN §4): introducers first, then bridges.

Real LinkManagers, Signalling and drivers; introducers are linked over TLS on 127.0.0.1, the links
they help open are WebRTC on loopback, and the bridge is the real one on 127.0.0.1.
"""

from __future__ import annotations

import os

import pytest

from dht.records import ProviderRecord, Route
from peer.net.bridgeclient import BridgeClient
from peer.net.neighbours import LinkRefused
from peer.net.signalling import BridgeSignaller, NeighbourSignaller
from peer.roles.bridge import Bridge
from peer.wire.linkcells import Introduce, Introduced
from tests.links.support import Seen, wait_for
from tests.net.neighbours_support import GUARD, Lab, LinkPeer, Relay

A_HOST, B_HOST = "127.71.0.1", "127.72.0.1"


async def tls_link(a: LinkPeer, b: LinkPeer) -> None:
    addr = b.links.tls_server.address if b.links.tls_server else await b.links.listen_tls("127.0.0.1", 0)
    await a.links.connect(b.record(tls=addr), None)
    assert await wait_for(lambda: b.linked_to(a), GUARD)


async def test_signallers_are_the_first_linked_introducer_then_each_shared_bridge() -> None:
    async with Lab() as lab:
        p, i1, i2, t = lab.peer(), lab.peer(), lab.peer(), lab.peer()
        await tls_link(p, i1)
        await tls_link(p, i2)
        p.bridges.update({"ws://one/peersm/v1": BridgeClient(), "ws://two/peersm/v1": BridgeClient()})
        stranger = os.urandom(20)  # listed by t, not linked to p
        rec = t.record(
            neighbours=(stranger, i2.node_id, i1.node_id),
            bridges=("ws://one/peersm/v1", "ws://unknown/peersm/v1", "ws://two/peersm/v1"),
        )
        vias = p.signalling.signallers_for(rec)
        assert [type(v) for v in vias] == [NeighbourSignaller, BridgeSignaller, BridgeSignaller]
        assert [v.name for v in vias] == ["a neighbour", "a bridge", "a bridge"]
        assert [v.url for v in vias[1:]] == ["ws://one/peersm/v1", "ws://two/peersm/v1"]  # type: ignore[attr-defined]
        # the introducer is i2 (the first one we are linked to, in the record's order), and only i2
        await vias[0].introduce(t.node_id, b"sealed")
        assert await wait_for(lambda: i2.asked_to_introduce, GUARD)
        assert i2.asked_to_introduce == [Introduce(t.node_id, b"sealed")] and i1.asked_to_introduce == []
        # an ORDB's provider record lists no neighbours: bridges only
        prov = ProviderRecord(
            os.urandom(20),
            t.keys.identity.public,
            t.keys.ntor.public,
            t.keys.seal.public,
            Route((), ("ws://two/peersm/v1",)),
            int(t.clock() + 600),
        ).sign(t.keys.identity)
        assert [v.url for v in p.signalling.signallers_for(prov)] == ["ws://two/peersm/v1"]  # type: ignore[attr-defined]
        assert p.signalling.signallers_for(t.record()) == []


async def test_an_introducer_carries_the_offer_and_the_answer_and_learns_neither() -> None:
    async with Lab() as lab:
        a, i, b = lab.peer(A_HOST), lab.peer(), lab.peer(B_HOST)
        await tls_link(a, i)
        await tls_link(b, i)
        vias = a.signalling.signallers_for(b.record(neighbours=(i.node_id,)))
        n = await a.links.connect(b.record(), vias)
        assert n.transport == "webrtc" and await wait_for(lambda: b.linked_to(a), GUARD)
        # b got the offer from a, a the answer from b: the introducer names the sender it is linked to
        assert [m.source for m in b.introduced] == [a.node_id]
        assert [m.source for m in a.introduced] == [b.node_id]
        assert [m.target for m in i.asked_to_introduce] == [b.node_id, a.node_id]
        for m in i.asked_to_introduce:
            for secret in (A_HOST.encode(), B_HOST.encode(), b"candidate"):
                assert secret not in m.blob


async def test_an_introducer_not_linked_to_the_target_answers_empty_and_the_bridge_is_tried_next() -> None:
    async with Lab() as lab:
        a, i, b = lab.peer(A_HOST), lab.peer(), lab.peer(B_HOST)
        await tls_link(a, i)  # b is not linked to i (a's view of b's neighbours is out of date)
        via_i = a.signalling.signallers_for(b.record(neighbours=(i.node_id,)))
        with pytest.raises(LinkRefused, match="not reachable through a neighbour"):
            await a.links.connect(b.record(), via_i)
        assert a.introduced == [Introduced(b.node_id, b"")]  # said at once: no waiting for a timeout
        assert b.introduced == [] and b.links.count == 0
        a.clock.t += a.links.config.failure_backoff + 1
        relay = Relay(a, b)
        await a.links.connect(b.record(), [*via_i, relay.via(a, "a bridge")])
        assert len(a.introduced) == 2 and len(relay.carried) == 2  # i first (empty again), then the bridge
        assert await wait_for(lambda: b.linked_to(a), GUARD)


async def test_an_introduce_on_a_channel_that_is_no_link_of_ours_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Lab() as lab:
        a, i, b = lab.peer(), lab.peer(), lab.peer()
        await tls_link(b, i)
        sent: list[tuple[int, int, bytes]] = []
        monkeypatch.setattr(
            i.node, "send_link_message", lambda chan, cmd, payload: sent.append((chan, cmd, payload))
        )
        i.signalling.introduce_for(12345, Introduce(b.node_id, b"sealed"))  # no link on 12345
        i.signalling.introduce_for(12345, Introduce(a.node_id, b"sealed"))
        assert sent == []


async def register(p: LinkPeer, url: str) -> None:
    """Register ``p`` with the bridge at ``url``, its blobs going to its LinkManager (as the runtime does)."""
    client = BridgeClient()
    signaller = BridgeSignaller(url, client)
    client.on_introduced = lambda source, blob: p.links.on_introduced(source, blob, signaller)
    await client.connect(url, p.keys, lambda: p.record(bridges=(url,)))
    p.bridges[url] = client


async def test_offers_through_a_real_bridge() -> None:
    seen: Seen = []
    bridge = Bridge(recorder=lambda kind, raw: seen.append((kind, raw)))
    await bridge.start("127.0.0.1", 0)
    try:
        async with Lab() as lab:
            a, b = lab.peer(A_HOST), lab.peer(B_HOST)
            for p in (a, b):
                await register(p, bridge.url)
            vias = a.signalling.signallers_for(b.record(bridges=(bridge.url,)))
            assert [type(v) for v in vias] == [BridgeSignaller]
            n = await a.links.connect(b.record(), vias)
            assert n.transport == "webrtc" and await wait_for(lambda: b.linked_to(a), GUARD)
            relayed = [raw for kind, raw in seen if "INTRODUCE" in kind]
            assert len(relayed) >= 2  # an offer and an answer, at least
            for raw in relayed:
                for secret in (A_HOST.encode(), B_HOST.encode(), b"candidate"):
                    assert secret not in raw
    finally:
        await bridge.stop()
