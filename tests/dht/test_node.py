"""dht.node acceptance (issue 6): 200 nodes on distinct 127.x.y.z, lookups, validation, providers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio

from dht.keys import provider_key
from dht.localnet import start_network, stop_all
from dht.messages import Contact, MsgType, Ping, Reply, Request, Store, StoreAck, StoreStatus, Values
from dht.node import DhtNode
from dht.protocol import REQUEST
from dht.records import (
    RECORD_CONTEXT,
    PeerRecord,
    ProviderFields,
    ProviderRecord,
    RecordKind,
    Route,
    decode_valid,
)
from dht.responder import Responder
from peer.crypto.identity import Identity

from .helpers import identity_near, raw_client
from .test_records import oversized_peer_record

pytestmark = pytest.mark.asyncio(loop_scope="module")

N = 200
SEED = 6


def own_peer_record(node: DhtNode) -> PeerRecord:
    ident = node.identity
    return PeerRecord(
        ident.public,
        bytes(32),
        bytes(31) + b"\x02",
        Route((("udp", f"{node.address[0]}:{node.address[1]}"),)),
        (),
        False,
        0,
    )


def fields(node: DhtNode) -> ProviderFields:
    return ProviderFields(bytes(32), bytes(32), Route((("udp", f"{node.address[0]}:{node.address[1]}"),)))


async def batched(coros: list, size: int = 16) -> list:
    out = []
    for i in range(0, len(coros), size):
        out.extend(await asyncio.gather(*coros[i : i + size]))
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net() -> AsyncIterator[list[DhtNode]]:
    nodes = await start_network(N, seed=SEED)
    accepted = await batched([n.publish_peer(own_peer_record(n)) for n in nodes])
    assert min(accepted) >= 10
    yield nodes
    stop_all(nodes)


async def test_addresses_are_distinct_16s(net: list[DhtNode]) -> None:
    prefixes = {".".join(n.address[0].split(".")[:2]) for n in net}
    assert len(prefixes) == N and all(n.address[0].startswith("127.") for n in net)
    assert all(len(n.table) >= 10 for n in net)


async def test_500_lookups_all_succeed(net: list[DhtNode]) -> None:
    rng = random.Random(1)
    names = [rng.randbytes(32) for _ in range(10)]
    ordbs = {name: rng.choice(net) for name in names}
    for name, node in ordbs.items():
        assert await node.publish_provider(name, fields(node)) >= 10
    ok = 0
    for i in range(500):
        querier = rng.choice(net)
        if i % 5 == 0:
            name = rng.choice(names)
            found = await querier.find_providers(name)
            ok += [r.node_id for r in found] == [ordbs[name].node_id]
        else:
            target = rng.choice([n for n in net if n is not querier])
            rec = await querier.find_peer(target.node_id)
            ok += (
                rec is not None
                and rec.node_id == target.node_id
                and rec.route == own_peer_record(target).route
            )
    assert ok == 500


async def test_key_with_three_ordbs_returns_all_three(net: list[DhtNode]) -> None:
    rng = random.Random(2)
    name = b"a hash_name served by three ORDBs"
    ordbs = rng.sample(net, 3)
    for node in ordbs:
        assert await node.publish_provider(name, fields(node)) >= 10
    for querier in rng.sample(net, 20):
        found = await querier.find_providers(name)
        assert sorted(r.node_id for r in found) == sorted(n.node_id for n in ordbs)
        assert {r.route for r in found} == {fields(n).route for n in ordbs}


def bad_records(key: bytes, rng: random.Random, now: float) -> dict[str, bytes]:
    """Forged, expired, far-future, wrong-signer and oversized records for ``key``."""
    alice, mallory = Identity.generate(rng.randbytes), Identity.generate(rng.randbytes)
    route = Route((("udp", "127.66.66.66:6666"),))
    good = ProviderRecord(key, alice.public, bytes(32), bytes(32), route, int(now + 600)).sign(alice)
    unsigned = replace(good, signature=b"")
    return {
        "forged": replace(good, route=Route((("udp", "127.66.0.1:1"),))).encode(),
        "expired": replace(good, expiry=int(now - 10)).sign(alice).encode(),
        "far-future": replace(good, expiry=int(now + 30 * 24 * 3600)).sign(alice).encode(),
        "wrong-signer": replace(
            unsigned, signature=mallory.sign(RECORD_CONTEXT, unsigned.signed_part())
        ).encode(),
        "oversized": oversized_peer_record(),
    }


async def test_bad_records_never_stored(net: list[DhtNode]) -> None:
    import umsgpack  # type: ignore[import-untyped]

    rng = random.Random(3)
    key = provider_key(b"target of the attacker")
    bad = bad_records(key, rng, net[0]._clock())
    client = await raw_client("127.250.1.1")
    sender = rng.randbytes(20)
    assert client.transport is not None
    sent = 0
    for node in net:
        for data in bad.values():
            payload = Request(sender, Store(data)).padded_to(200).encode()
            dgram = bytes([REQUEST]) + rng.randbytes(20) + umsgpack.packb(["store", [payload]])
            if len(dgram) <= 1200:
                client.transport.sendto(dgram, node.address)
                sent += 1
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.5)
    assert sent == 5 * N
    refusals = [Reply.decode(umsgpack.unpackb(d[21:]), MsgType.STORE) for d, _ in client.received]
    # every node refused the four decodable records; the oversized one is malformed: no answer
    assert len(refusals) == 4 * N
    assert all(r.body == StoreAck(StoreStatus.INVALID) for r in refusals)
    for node in net:
        assert node.store.get(RecordKind.PROVIDER, key, node._clock()) == []
        assert node.store.get(RecordKind.PEER, node_id_of_oversized(), node._clock()) == []
    client.transport.close()


def node_id_of_oversized() -> bytes:
    from peer.crypto.identity import node_id_of

    return node_id_of(oversized_peer_record()[2:34])


class ServesBadRecords(Responder):
    """A full node that answers FIND_VALUE for one key with invalid records (and valid contacts)."""

    key: bytes = b""
    bad: tuple[bytes, ...] = ()

    def _answer(self, req, addr, now, budget):  # type: ignore[no-untyped-def]
        body = super()._answer(req, addr, now, budget)
        if isinstance(body, Values) and req.body.key == self.key:
            return Values(body.contacts[:8], self.bad, 0)
        return body


async def test_bad_records_never_returned(net: list[DhtNode]) -> None:
    rng = random.Random(4)
    name = b"hash_name near the liar"
    key = provider_key(name)
    liar = DhtNode()
    await liar.start(identity_near(key, 10, rng), "127.251.1.1", 0, bootstrap=[n.address for n in net[:3]])
    bad = bad_records(key, rng, liar._clock())
    served = tuple(v for k, v in bad.items() if k != "oversized")  # an oversized one would not fit a reply
    evil = ServesBadRecords(liar.identity, liar.table, liar.store, liar.verified, liar._challenge, 20)
    evil.key, evil.bad = key, served
    liar.responder = evil
    honest = rng.choice(net)
    assert await honest.publish_provider(name, fields(honest)) >= 10
    asked_liar = 0
    for querier in rng.sample(net, 40):
        found = await querier.find_providers(name)
        assert [r.node_id for r in found] == [honest.node_id]
        for r in found:
            decode_valid(r.encode(), querier._clock(), key=key)
        asked_liar += (
            querier.last_lookup is not None and querier.last_lookup.state_of(liar.node_id) is not None
        )
    assert asked_liar > 0  # the liar was on the lookups' paths
    assert sum(n.lookup_stats.invalid_records for n in net) > 0
    liar.stop()


async def test_random_walk_gathers_peer_records(net: list[DhtNode]) -> None:
    walker = net[17]
    got = await walker.random_walk(30)
    assert len(got) == 30
    assert len({r.node_id for r in got}) == 30 and walker.node_id not in {r.node_id for r in got}
    for r in got:
        decode_valid(r.encode(), walker._clock())


async def test_client_queries_but_never_enters_tables(net: list[DhtNode]) -> None:
    rng = random.Random(5)
    client = DhtNode()
    await client.start(
        Identity.generate(rng.randbytes), "127.252.1.1", 0, full_node=False, bootstrap=[net[0].address]
    )
    target = net[42]
    rec = await client.find_peer(target.node_id)
    assert rec is not None and rec.node_id == target.node_id
    await asyncio.sleep(0.3)
    assert all(n.table.get(client.node_id) is None for n in net)
    # A client does not answer queries either.
    reply = await net[0]._rpc(Contact(client.node_id, *client.address), Ping())
    assert reply is None
    client.stop()


async def test_stats_have_no_addresses(net: list[DhtNode]) -> None:
    stats = net[0].stats()
    assert stats["contacts"] == len(net[0].table) and stats["rpc_sent"] > 0
    assert not any("127." in str(v) for v in stats.values())
    assert MsgType.PING in MsgType and isinstance(Reply, type)
