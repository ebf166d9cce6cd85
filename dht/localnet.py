"""A DHT of many nodes in one process on loopback, for tests, benchmarks and demos (DESIGN §12).

Node ``i`` binds ``127.<a>.<b>.1`` with a distinct /16 (``a``) for the first 254
nodes, so the per-/16 limits can stay on; larger networks reuse /16s (``b`` grows).
Nodes join a few at a time, each from up to three nodes already in, as a real
network grows; a whole population joining one node in the same millisecond only
measures UDP buffer overflow.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from peer.crypto.identity import Identity

from .node import DhtConfig, DhtNode


def loopback_host(i: int) -> str:
    """The address of node ``i``: 127.<1 + i mod 254>.<i div 254>.1."""
    return f"127.{1 + i % 254}.{i // 254}.1"


async def start_network(
    n: int,
    *,
    seed: int,
    config: DhtConfig | None = None,
    join_concurrency: int = 16,
    make_node: Callable[[int], DhtNode] | None = None,
    clock: Callable[[], float] | None = None,
    identities: list[Identity] | None = None,
) -> list[DhtNode]:
    """Start ``n`` full nodes (deterministic identities from ``seed``) and join them together."""
    rng = random.Random(seed)
    ids = identities or [Identity.generate(rng.randbytes) for _ in range(n)]
    nodes: list[DhtNode] = []
    sem = asyncio.Semaphore(join_concurrency)
    now = clock or time.time

    async def join(i: int) -> None:
        node = make_node(i) if make_node else DhtNode()
        async with sem:
            boot = [x.address for x in rng.sample(nodes, min(3, len(nodes)))]
            await node.start(
                ids[i],
                loopback_host(i),
                0,
                rng=random.Random(seed * 7919 + i),
                config=config,
                bootstrap=boot,
                clock=now,
            )
            nodes.append(node)

    await join(0)
    await asyncio.gather(*(join(i) for i in range(1, n)))
    return nodes


def stop_all(nodes: list[DhtNode]) -> None:
    for node in nodes:
        node.stop()
