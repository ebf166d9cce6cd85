"""The network view: links, circuits, the ORDB role, the DHT, bandwidth over time, anonymity health.

GET /api/network -> {"links", "circuits", "relayed_circuits", "ordb", "dht", "bandwidth", "anonymity"}

Bandwidth is sampled from the driver's link byte counters (every byte sent or received on a
link, relayed traffic included) by :class:`BandwidthMeter`, which is sans-I/O: it is fed the
counters and the time.  Sampling starts at the first GET /api/network and then runs every
``SAMPLE_EVERY`` seconds until the API stops; the meter keeps the last ``KEEP`` samples.
Node ids are cut to 16 hex digits, as in /api/status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from peer.node import Peer
from webui.server import ApiServer

SAMPLE_EVERY = 2.0
KEEP = 150  # 5 minutes at one sample every 2 s


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds (the clock the meter is fed)
    in_bps: float  # bytes per second received since the previous sample
    out_bps: float


class BandwidthMeter:
    """Rates from monotonically growing byte counters.  Feed ``(now, total_in, total_out)``."""

    def __init__(self, keep: int = KEEP) -> None:
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._last: tuple[float, int, int] | None = None

    def feed(self, now: float, total_in: int, total_out: int) -> Sample | None:
        """Record the rates since the last call; None on the first call or when no time passed.

        A counter that went down (a restarted driver) counts from zero again."""
        last, self._last = self._last, (now, total_in, total_out)
        if last is None or now <= last[0]:
            return None
        dt = now - last[0]
        din = total_in - last[1] if total_in >= last[1] else total_in
        dout = total_out - last[2] if total_out >= last[2] else total_out
        s = Sample(now, din / dt, dout / dt)
        self.samples.append(s)
        return s


def _short(node_id: bytes) -> str:
    return node_id.hex()[:16]


class NetworkView:
    """What GET /api/network reports, with the state that outlives one request."""

    def __init__(self, peer: Peer, every: float = SAMPLE_EVERY) -> None:
        self.peer = peer
        self.every = every
        self.meter = BandwidthMeter()
        self.ordbs_seen: set[bytes] = set()  # every ORDB a circuit of ours ended at, when sampled or reported
        self._task: asyncio.Task[None] | None = None

    def ordbs_now(self) -> set[bytes]:
        p = self.peer
        ids = set(p.holder.ordb_ids()) if p.holder is not None else set()
        for d in p.downloads.values():
            ids |= d.download.ordb_ids()
        return ids

    def sample(self) -> None:
        self.meter.feed(time.monotonic(), self.peer.driver.bytes_in, self.peer.driver.bytes_out)
        self.ordbs_seen |= self.ordbs_now()

    def ensure_sampling(self) -> None:
        if self._task is None or self._task.done():
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.sample()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def circuits(self) -> list[dict[str, Any]]:
        p = self.peer
        announce = set(p.holder.circuits) if p.holder is not None else set()
        download: set[int] = set()
        for d in p.downloads.values():
            download |= set(d.download.sched.circuits)
        out = []
        for circ, path in p.circuits.paths.items():
            if circ not in p.node.circuits:
                continue
            kind = "download" if circ in download else "announce" if circ in announce else "exit"
            out.append({"hops": len(path), "kind": kind, "first_hop": _short(path[0]) if path else None})
        return out

    def report(self) -> dict[str, Any]:
        p = self.peer
        now = time.time()
        guards = set(p.guards)
        links = [
            {
                "peer": _short(n.node_id),
                "transport": n.transport,
                "guard": n.node_id in guards,
                "initiator": n.initiator,
                "age_s": round(now - n.opened_at, 1),
            }
            for n in p.links.neighbours.values()
        ]
        circuits = self.circuits()
        ordbs_now = self.ordbs_now()
        self.ordbs_seen |= ordbs_now
        ordb = p.ordb.status()
        relaxed = []
        if not p.config.subnet_rule:
            relaxed.append("two hops may share a /16 (the subnet rule is off)")
        if p.config.one_hop_ordb:
            relaxed.append("ORDB circuits have one hop (test-only negative control)")
        if p.config.hops < 3:
            relaxed.append(f"circuits have {p.config.hops} hops instead of 3")
        stats = p.dht.stats()
        return {
            "links": links,
            "circuits": circuits,
            "relayed_circuits": max(0, len(p.node.circuits) - len(circuits)),
            "ordb": {
                "hash_names": ordb.get("hash_names", 0),
                "queries": ordb.get("queries", 0),
                "queries_served": ordb.get("answered", 0),
                "forwarded": ordb.get("forwarded", 0),
            },
            "dht": {"contacts": stats.get("contacts", 0), "records": stats.get("records", 0)},
            "bandwidth": {
                "every_s": self.every,
                "samples": [
                    {"t": round(s.t, 2), "in_bps": round(s.in_bps), "out_bps": round(s.out_bps)}
                    for s in self.meter.samples
                ],
            },
            "anonymity": {
                "guards": len(guards),
                "ordbs_now": len(ordbs_now),
                "ordbs_seen": len(self.ordbs_seen),
                "path_rules_relaxed": bool(relaxed),
                "relaxed": relaxed,
                "peer_view": len(p.view),
            },
        }


def add_network_routes(api: ApiServer, peer: Peer) -> None:
    view = NetworkView(peer)

    async def network(request: web.Request) -> Mapping[str, Any]:
        view.ensure_sampling()
        return view.report()

    async def stop(_app: web.Application) -> None:
        await view.stop()

    api.app.on_cleanup.append(stop)
    api.add_route("GET", "/api/network", network)
