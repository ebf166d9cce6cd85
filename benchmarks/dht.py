"""DHT benchmark: our hardened Kademlia against the unmodified ``kademlia`` package (issue 6).

Workload, identical for both: N nodes on distinct loopback addresses in one process
join a few at a time; K values are published (ours: provider records for K
hash_names, each by a random node; reference: ``Server.set``); then L lookups of a
random key from a random live node run one after the other (ours:
``find_providers``; reference: ``Server.get``), except the reference after the kill,
whose lookups run 20 at a time to bound the run time: its latency there is its
fixed 5 s timeouts, not CPU (lookups of one process running together would only
measure the event loop's queue).  The same is repeated after 30% of
the nodes were killed abruptly (sockets closed, nothing said).  Reported per run:
lookup success, p50 and p95 latency, rounds and datagrams per lookup (all nodes'
datagrams during the phase, requests and replies, divided by L), and memory per
node (growth of the process's resident set while the nodes joined, divided by N).

    python -m benchmarks.dht [--quick] [--json] [--sizes 100,500,1000]

``--quick`` (CI): ours at 100 nodes and the reference at 100 nodes, fewer lookups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from dht.localnet import loopback_host, start_network, stop_all
from dht.node import DhtNode
from dht.records import ProviderFields, Route

KILL_FRACTION = 0.3


@dataclass
class Phase:
    system: str
    nodes: int
    state: str  # healthy | killed-30%
    lookups: int
    success: float
    p50_ms: float
    p95_ms: float
    rounds: float
    datagrams: float
    memory_kib_per_node: float
    publish_p50_ms: float
    seconds: float


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def waves(
    jobs: list[Callable[[], Awaitable[tuple[bool, float]]]], concurrency: int
) -> list[tuple[bool, float]]:
    out: list[tuple[bool, float]] = []
    for i in range(0, len(jobs), concurrency):
        out.extend(await asyncio.gather(*(job() for job in jobs[i : i + concurrency])))
    return out


async def timed(coro: Awaitable[bool]) -> tuple[bool, float]:
    t = time.perf_counter()
    ok = await coro
    return ok, time.perf_counter() - t


# -- ours -------------------------------------------------------------------------------------------


async def run_ours(n: int, keys: int, lookups: int, seed: int) -> list[Phase]:
    rng = random.Random(seed)
    rss0 = rss_kib()
    t0 = time.perf_counter()
    nodes = await start_network(n, seed=seed)
    mem = (rss_kib() - rss0) / n
    names = [rng.randbytes(32) for _ in range(keys)]
    publishers = {name: rng.choice(nodes) for name in names}

    async def publish(name: bytes) -> tuple[bool, float]:
        node = publishers[name]
        fields = ProviderFields(
            rng.randbytes(32), rng.randbytes(32), Route((("udp", f"{node.address[0]}:{node.address[1]}"),))
        )
        return await timed(_accepted(node.publish_provider(name, fields)))

    pub = await waves([lambda m=name: publish(m) for name in names], 1)  # type: ignore[misc]
    pub_p50 = statistics.median(t for _, t in pub) * 1000
    phases = []
    alive = list(nodes)
    for state in ("healthy", "killed-30%"):
        if state != "healthy":
            dead = set(rng.sample(range(n), int(KILL_FRACTION * n)))
            for i in dead:
                nodes[i].stop()
            alive = [x for i, x in enumerate(nodes) if i not in dead]
        before = _totals(nodes)
        t1 = time.perf_counter()

        async def find(querier: DhtNode, name: bytes) -> bool:
            found = await querier.find_providers(name)
            return any(r.node_id == publishers[name].node_id for r in found)

        pairs = [(rng.choice(alive), rng.choice(names)) for _ in range(lookups)]
        results = await waves([lambda q=q, m=m: timed(find(q, m)) for q, m in pairs], 1)  # type: ignore[misc]
        seconds = time.perf_counter() - t1
        await asyncio.sleep(0.3)  # let stragglers land in the counters
        after = _totals(nodes)
        lat = [t * 1000 for _, t in results]
        phases.append(
            Phase(
                "ours",
                n,
                state,
                lookups,
                sum(ok for ok, _ in results) / lookups,
                pct(lat, 0.5),
                pct(lat, 0.95),
                (after["lookup_rounds"] - before["lookup_rounds"])
                / max(1, after["lookups"] - before["lookups"]),
                (after["rpc_sent"] - before["rpc_sent"]) / lookups,
                mem,
                pub_p50,
                seconds,
            )
        )
    stop_all(nodes)
    del t0
    return phases


async def _accepted(coro: Awaitable[int]) -> bool:
    return await coro > 0


def _totals(nodes: list[DhtNode]) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in nodes:
        for k, v in node.stats().items():
            out[k] = out.get(k, 0) + v
    return out


# -- reference: the unmodified kademlia package -----------------------------------------------------


class _CountingTransport:
    """Wraps a transport to count datagrams; behaviour unchanged."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._counter[0] += 1
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def run_reference(n: int, keys: int, lookups: int, seed: int) -> list[Phase]:
    from kademlia import crawling
    from kademlia.network import Server

    rng = random.Random(seed)
    sent = [0]
    rounds = [0]
    original_find = crawling.SpiderCrawl._find

    async def counted_find(self: Any, rpcmethod: Any) -> Any:  # counts crawl rounds only
        rounds[0] += 1
        return await original_find(self, rpcmethod)

    crawling.SpiderCrawl._find = counted_find
    servers: list[Any] = []
    addrs: list[tuple[str, int]] = []
    sem = asyncio.Semaphore(16)
    rss0 = rss_kib()

    async def join(i: int) -> None:
        server = Server(ksize=20, alpha=3)
        async with sem:
            await server.listen(0, interface=loopback_host(i))
            server.protocol.transport = _CountingTransport(server.protocol.transport, sent)
            addr = server.transport.get_extra_info("sockname")[:2]
            if servers:
                await server.bootstrap([addrs[j] for j in rng.sample(range(len(addrs)), min(3, len(addrs)))])
            servers.append(server)
            addrs.append(addr)

    try:
        await join(0)
        await asyncio.gather(*(join(i) for i in range(1, n)))
        mem = (rss_kib() - rss0) / n
        names = [rng.randbytes(32).hex() for _ in range(keys)]
        values = {name: rng.randbytes(16) for name in names}

        async def set_one(name: str) -> bool:
            return bool(await rng.choice(servers).set(name, values[name]))

        pub = await waves([lambda m=name: timed(set_one(m)) for name in names], 1)  # type: ignore[misc]
        pub_p50 = statistics.median(t for _, t in pub) * 1000
        phases = []
        alive = list(servers)
        for state in ("healthy", "killed-30%"):
            if state != "healthy":
                dead = set(rng.sample(range(n), int(KILL_FRACTION * n)))
                for i in dead:
                    servers[i].stop()
                alive = [x for i, x in enumerate(servers) if i not in dead]
            s0, r0 = sent[0], rounds[0]
            t1 = time.perf_counter()

            async def get_one(server: Any, name: str) -> bool:
                return bool(await server.get(name) == values[name])

            pairs = [(rng.choice(alive), rng.choice(names)) for _ in range(lookups)]
            concurrency = 1 if state == "healthy" else 20
            results = await waves([lambda s=s, m=m: timed(get_one(s, m)) for s, m in pairs], concurrency)  # type: ignore[misc]
            seconds = time.perf_counter() - t1
            lat = [t * 1000 for _, t in results]
            phases.append(
                Phase(
                    "kademlia-2.2.3",
                    n,
                    state,
                    lookups,
                    sum(ok for ok, _ in results) / lookups,
                    pct(lat, 0.5),
                    pct(lat, 0.95),
                    (rounds[0] - r0) / lookups,
                    (sent[0] - s0) / lookups,
                    mem,
                    pub_p50,
                    seconds,
                )
            )
        return phases
    finally:
        for server in servers:
            server.stop()
        crawling.SpiderCrawl._find = original_find


# -- main -------------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    lookups = 40 if args.quick else args.lookups
    keys = 20 if args.quick else 50
    phases: list[Phase] = []
    for n in sizes:
        phases += await run_ours(n, keys, lookups, seed=n)
        if not args.json:
            for p in phases[-2:]:
                print(_line(p), flush=True)
    ref = await run_reference(100, keys, lookups, seed=100)
    phases += ref
    if not args.json:
        for p in ref:
            print(_line(p), flush=True)
    ours100 = {p.state: p for p in phases if p.system == "ours" and p.nodes == 100}
    ratios = {
        state: {
            "p50_speedup": r.p50_ms / ours100[state].p50_ms,
            "p95_speedup": r.p95_ms / ours100[state].p95_ms,
            "success_ours": ours100[state].success,
            "success_reference": r.success,
        }
        for state, r in ((p.state, p) for p in ref)
        if state in ours100
    }
    return {"phases": [asdict(p) for p in phases], "ratio_vs_reference_at_100": ratios}


def _line(p: Phase) -> str:
    return (
        f"{p.system:>15} n={p.nodes:<5} {p.state:<11} success {100 * p.success:6.2f}%  "
        f"p50 {p.p50_ms:8.1f} ms  p95 {p.p95_ms:8.1f} ms  rounds {p.rounds:5.2f}  "
        f"datagrams {p.datagrams:6.1f}  mem {p.memory_kib_per_node:7.1f} KiB/node  "
        f"publish p50 {p.publish_p50_ms:7.1f} ms  ({p.seconds:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 nodes only, fewer lookups (<= 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    _raise_fd_limit()
    t = time.perf_counter()
    result = asyncio.run(main_async(args))
    result["seconds"] = time.perf_counter() - t
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for state, r in result["ratio_vs_reference_at_100"].items():
            print(
                f"at 100 nodes, {state}: reference/ours latency p50 {r['p50_speedup']:.2f}, p95 {r['p95_speedup']:.2f}"
                f" (kademlia 2.2.3 vs ours); success {100 * r['success_ours']:.1f}% vs {100 * r['success_reference']:.1f}%"
            )
        print(f"total {result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
