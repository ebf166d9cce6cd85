"""Admission and anti-amplification (issue 6, DESIGN §8): the responder and the node's challenges."""

from __future__ import annotations

import asyncio
import random

import umsgpack  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from dht.keys import random_id
from dht.localnet import start_network, stop_all
from dht.messages import (
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    RPC_NAMES,
    Contact,
    FindNode,
    FindValue,
    MsgType,
    Nodes,
    Ping,
    Reply,
    Request,
    Sample,
)
from dht.node import DhtNode
from dht.protocol import REQUEST
from dht.records import RecordKind
from dht.recordstore import RecordStore
from dht.responder import Responder, VerifiedCache
from dht.routing import DhtRoutingTable

from .helpers import NOW, identity, peer, raw_client

RNG = random.Random(21)
ME = identity(RNG)
STRANGER = identity(RNG)
ADDR = ("127.9.9.9", 4242)


def make_responder() -> tuple[Responder, list[tuple[tuple[str, int], bytes]]]:
    challenged: list[tuple[tuple[str, int], bytes]] = []
    table = DhtRoutingTable(ME.node_id, 20, 0, lambda: 0.0)
    rng = random.Random(1)
    for i in range(60):
        table.add(Contact(random_id(rng), "127.0.0.1", 1000 + i))
    store = RecordStore(random.Random(2))
    for i in range(30):
        rec = peer(identity(rng))
        store.put(rec, rec.encode(), f"127.{i}", NOW)
    responder = Responder(ME, table, store, VerifiedCache(100), lambda a, n: challenged.append((a, n)), 20)
    return responder, challenged


def datagram_size(req: Request) -> int:
    return 21 + len(umsgpack.packb([RPC_NAMES[req.type], [req.encode()]]))


bodies = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, st.binary(min_size=20, max_size=20)),
    st.builds(Sample, st.binary(min_size=20, max_size=20)),
    st.builds(lambda k: FindValue(RecordKind.PEER, k), st.binary(min_size=20, max_size=20)),
)


SHARED, _ = make_responder()  # only read by the property below (unverified requests change nothing)


@given(bodies, st.booleans(), st.booleans(), st.integers(0, 1100))
def test_unverified_reply_never_larger_than_request(body, full, proof, pad) -> None:  # type: ignore[no-untyped-def]
    responder = SHARED
    req = Request(STRANGER.node_id, body, full, bytes(16) if proof else None, pad)
    if datagram_size(req) > MAX_DATAGRAM or len(req.encode()) > MAX_PAYLOAD:
        return  # not a legal request (tested in test_messages)
    out = responder.handle(req.encode(), ADDR, datagram_size(req), NOW)
    assert out is not None
    assert 21 + len(umsgpack.packb(out)) <= datagram_size(req)


def test_verified_requester_gets_full_reply_and_no_challenge() -> None:
    responder, challenged = make_responder()
    req = Request(STRANGER.node_id, FindNode(random_id(RNG)), True)
    small = Reply.decode(
        responder.handle(req.encode(), ADDR, datagram_size(req), NOW) or b"", MsgType.FIND_NODE
    )
    assert small.truncated and isinstance(small.body, Nodes) and small.body.contacts == ()
    assert challenged == [(ADDR, STRANGER.node_id)]  # a claim is checked, never trusted
    assert responder.table.get(STRANGER.node_id) is None
    responder.verified.add(ADDR, STRANGER.node_id)  # as after a successful challenge
    full = Reply.decode(
        responder.handle(req.encode(), ADDR, datagram_size(req), NOW) or b"", MsgType.FIND_NODE
    )
    assert full.verified_you and not full.truncated and isinstance(full.body, Nodes)
    assert len(full.body.contacts) == 20
    assert len(challenged) == 1


def test_verified_at_another_address_is_not_verified() -> None:
    responder, challenged = make_responder()
    responder.verified.add(ADDR, STRANGER.node_id)
    req = Request(STRANGER.node_id, FindNode(random_id(RNG)), True)
    other = ("127.9.9.10", 4242)
    reply = Reply.decode(
        responder.handle(req.encode(), other, datagram_size(req), NOW) or b"", MsgType.FIND_NODE
    )
    assert not reply.verified_you and reply.truncated
    assert challenged == [(other, STRANGER.node_id)]


def test_padded_request_gets_full_reply() -> None:
    responder, _ = make_responder()
    req = Request(STRANGER.node_id, FindNode(random_id(RNG)), False, bytes(16)).padded_to(1150)
    reply = Reply.decode(
        responder.handle(req.encode(), ADDR, datagram_size(req), NOW) or b"", MsgType.FIND_NODE
    )
    assert not reply.truncated and reply.proof is not None
    assert isinstance(reply.body, Nodes) and len(reply.body.contacts) == 20


def test_client_mode_stays_silent() -> None:
    responder, _ = make_responder()
    responder.full_node = False
    req = Request(STRANGER.node_id, Ping()).padded_to(200)
    assert responder.handle(req.encode(), ADDR, datagram_size(req), NOW) is None


class Gossip(Responder):
    """Puts a made-up NodeID at an honest node's address at the head of every NODES reply."""

    claim: Contact | None = None

    def _answer(self, req, addr, now, budget):  # type: ignore[no-untyped-def]
        body = super()._answer(req, addr, now, budget)
        if isinstance(body, Nodes) and self.claim is not None:
            return Nodes((self.claim, *body.contacts[:10]))
        return body


def raw_request(req: Request, rng: random.Random) -> bytes:
    return bytes([REQUEST]) + rng.randbytes(20) + umsgpack.packb([RPC_NAMES[req.type], [req.encode()]])


async def test_admission_over_the_network() -> None:
    rng = random.Random(22)
    nodes = await start_network(30, seed=23)
    try:
        # 1. An address that does not receive: a request from a socket that is gone by the challenge.
        ghost_id = random_id(rng)
        ghost = await raw_client("127.200.0.1")
        assert ghost.transport is not None
        for n in nodes:
            ghost.transport.sendto(raw_request(Request(ghost_id, FindNode(ghost_id), True), rng), n.address)
        await asyncio.sleep(0.05)
        ghost.transport.close()

        # 2. A NodeID its key does not sign: proofs signed by another (valid) key.
        liar = DhtNode()
        await liar.start(identity(rng), "127.201.0.1", 0)
        liar.responder.identity = other = identity(rng)
        liar.responder.public = other.public
        await liar.bootstrap([nodes[0].address])
        for _ in range(3):
            await liar.find_node(random_id(rng))

        # 3. A third party's claim: contacts naming an honest node's address with a made-up NodeID.
        fake_id = random_id(rng)
        honest = nodes[5]
        gossip = DhtNode()
        await gossip.start(identity(rng), "127.202.0.1", 0, bootstrap=[n.address for n in nodes[:3]])
        liar_resp = Gossip(
            gossip.identity, gossip.table, gossip.store, gossip.verified, gossip._challenge, 20
        )
        liar_resp.claim = Contact(fake_id, *honest.address)
        gossip.responder = liar_resp
        for n in nodes[10:20]:
            n._admit(gossip.contact)  # make sure lookups go through it
            await n.find_node(fake_id)
        await asyncio.sleep(1.0)  # challenges time out

        for n in nodes:
            assert n.table.get(ghost_id) is None
            assert n.table.get(liar.node_id) is None
            assert n.table.get(fake_id) is None
            known = n.table.get(honest.node_id)
            assert known is None or known.addr == honest.address
        assert sum(n.responder.stats.challenges for n in nodes) >= len(nodes)
        liar.stop()
        gossip.stop()
    finally:
        stop_all(nodes)


async def test_unverified_stranger_gets_no_amplification() -> None:
    rng = random.Random(24)
    nodes = await start_network(25, seed=25)
    client = await raw_client("127.203.0.1")
    try:
        target = nodes[3]
        for req in (
            Request(STRANGER.node_id, FindNode(random_id(rng))),
            Request(STRANGER.node_id, FindNode(random_id(rng)), True, bytes(16)),
            Request(STRANGER.node_id, Sample(random_id(rng))),
            Request(STRANGER.node_id, Ping(), False, bytes(16)),
        ):
            dgram = raw_request(req, rng)
            reply = await client.exchange(dgram, target.address)
            assert reply is not None and len(reply) <= len(dgram)
        padded = raw_request(Request(STRANGER.node_id, FindNode(random_id(rng))).padded_to(1150), rng)
        reply = await client.exchange(padded, target.address)
        assert reply is not None
        body = Reply.decode(umsgpack.unpackb(reply[21:]), MsgType.FIND_NODE).body
        assert isinstance(body, Nodes) and len(body.contacts) >= 10
    finally:
        assert client.transport is not None
        client.transport.close()
        stop_all(nodes)
