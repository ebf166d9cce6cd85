"""Record sets larger than one datagram are paged (DESIGN §8: datagrams <= 1,200 bytes)."""

from __future__ import annotations

from dht.keys import provider_key
from dht.localnet import start_network, stop_all
from dht.records import RecordKind

from .test_node import fields


async def test_many_providers_come_back_over_several_pages() -> None:
    nodes = await start_network(30, seed=91)
    try:
        name = b"a popular hash_name"
        ordbs = nodes[:14]
        for o in ordbs:
            assert await o.publish_provider(name, fields(o)) >= 10
        holder = next(
            n for n in nodes if len(n.store.get(RecordKind.PROVIDER, provider_key(name), n._clock())) == 14
        )
        encoded = [e for _, e in holder.store.get(RecordKind.PROVIDER, provider_key(name), holder._clock())]
        assert sum(len(e) for e in encoded) > 1200  # more than one datagram's worth
        before = sum(n.stats()["rpc_sent"] for n in nodes)
        found = await nodes[-1].find_providers(name)
        assert sorted(r.node_id for r in found) == sorted(o.node_id for o in ordbs)
        sent = sum(n.stats()["rpc_sent"] for n in nodes) - before
        assert sent > 2 * nodes[-1].last_lookup.queries  # type: ignore[union-attr]  # extra pages were asked for
    finally:
        stop_all(nodes)
