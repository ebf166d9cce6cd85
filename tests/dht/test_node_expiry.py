"""Expiry and republishing with an injected clock (issue 6: expired records are dropped; publishers republish)."""

from __future__ import annotations

from dht.localnet import start_network, stop_all
from dht.records import RecordKind

from .helpers import NOW
from .test_node import fields, own_peer_record


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_records_expire_and_come_back_when_republished() -> None:
    clock = Clock(NOW)
    nodes = await start_network(24, seed=81, clock=clock)
    try:
        publisher, gone, querier = nodes[3], nodes[4], nodes[20]
        assert await publisher.publish_peer(own_peer_record(publisher)) >= 10
        assert await gone.publish_peer(own_peer_record(gone)) >= 10
        assert await publisher.publish_provider(b"name", fields(publisher)) >= 10
        assert (await querier.find_peer(publisher.node_id)) is not None
        ttl = publisher.config.record_ttl
        clock.now += ttl + 1  # every record is now past its expiry
        gone.stop()
        assert await querier.find_peer(gone.node_id) is None
        assert await querier.find_providers(b"name") == []
        dropped = sum(n.store.expire(clock.now) for n in nodes)
        assert sum(len(n.store) for n in nodes) == 0 and dropped >= 0
        assert await publisher.republish() >= 20  # peer record and provider record, fresh expiries
        rec = await querier.find_peer(publisher.node_id)
        assert rec is not None and rec.expiry > clock.now
        (prov,) = await querier.find_providers(b"name")
        assert prov.node_id == publisher.node_id and prov.expiry > clock.now
        assert await querier.find_peer(gone.node_id) is None  # its publisher is dead: nobody republishes
        assert any(n.store.get(RecordKind.PEER, publisher.node_id, clock.now) for n in nodes)
    finally:
        stop_all(nodes)


async def test_publish_peer_refuses_a_foreign_record_and_bootstrap_survives_silence() -> None:
    import random

    import pytest

    from dht.node import DhtConfig, DhtNode
    from peer.crypto.identity import Identity
    from peer.errors import UsageError

    nodes = await start_network(3, seed=82)
    lonely = DhtNode()
    try:
        with pytest.raises(UsageError):
            await nodes[0].publish_peer(own_peer_record(nodes[1]))
        rng = random.Random(83)
        cfg = DhtConfig(timeout_initial=0.05, bootstrap_attempts=2)
        await lonely.start(Identity.generate(rng.randbytes), "127.90.0.1", 0, config=cfg)
        assert await lonely.bootstrap([("127.90.0.2", 9)]) == 0  # nobody there: no crash, empty table
        assert await lonely.find_peer(nodes[0].node_id) is None
        assert await lonely.bootstrap([nodes[0].address]) >= 2
        assert await lonely.find_peer(nodes[0].node_id) is None  # nothing published yet
        with pytest.raises(UsageError):
            await lonely.start(Identity.generate(rng.randbytes), "127.90.0.1", 0)
    finally:
        lonely.stop()
        stop_all(nodes)
