"""Churn (issue 6): kill 30% of 200 nodes abruptly; lookups still succeed >= 99%, without restart."""

from __future__ import annotations

import asyncio
import random

from dht.localnet import start_network, stop_all

from .test_node import batched, own_peer_record

N = 200


async def test_lookups_survive_30_percent_killed() -> None:
    nodes = await start_network(N, seed=61)
    try:
        assert min(await batched([n.publish_peer(own_peer_record(n)) for n in nodes])) >= 10
        rng = random.Random(62)  # seeded: the kill set can be replayed
        dead = set(rng.sample(range(N), int(0.3 * N)))
        for i in dead:
            nodes[i].stop()  # abrupt: no goodbye, the socket just goes away
        alive = [n for i, n in enumerate(nodes) if i not in dead]
        ok = total = 0
        for _ in range(30):
            pairs = [rng.sample(alive, 2) for _ in range(10)]
            found = await asyncio.gather(*(a.find_peer(b.node_id) for a, b in pairs))
            for (_, b), rec in zip(pairs, found, strict=True):
                total += 1
                ok += rec is not None and rec.node_id == b.node_id
        assert total == 300
        assert ok / total >= 0.99, f"{ok}/{total}"
        # Dead contacts were noticed and many evicted (no restart, no refresh needed).
        assert sum(n.stats()["timeouts"] for n in alive) > 0
    finally:
        stop_all(nodes)
