"""Which neighbours a peer keeps (DESIGN §4 "Links are long-lived"): K links, guards first.

One maintenance :meth:`Topology.step` at a time, driven by the runtime:

* **fill**: links to our guards first, then to peers of the view, growing outward (peers our
  neighbours are not already linked to first, so that small networks do not split into
  cliques; then peers with spare capacity);
* **rewire**: when full, a redundant link (a triangle edge) gives way to a peer outside our
  reach, so the link graph stays an expander;
* **rotate**: about every ``rotate_every`` seconds a random link gives way to a random peer of
  the view (make before break), so the neighbour set never settles; never a link to one of our
  guards, nor one a peer keeps to us as its guard;
* **make room** (:meth:`Topology.make_room`): what a full peer does when an offer arrives.

The link manager owns the links; this module only decides which ones to open and drop.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dht.records import PeerRecord
from peer.net.neighbours import LinkManager, LinkRefused, Signaller, tls_endpoint
from peer.net.peerview import PeerView

#: The offer purpose a rotation uses (docs/formats.md): a full target may rotate a link for it.
ROTATION = 2


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    max_links: int = 8
    rewire_every: float = 5.0  # seconds between attempts to replace a redundant link
    rotate_every: float = 600.0  # replace one random non-guard link this often (0: never)


class Topology:
    def __init__(
        self,
        links: LinkManager,
        view: PeerView,
        guards: Callable[[], Sequence[bytes]],
        signaller_for: Callable[[PeerRecord], Sequence[Signaller]],
        config: TopologyConfig,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.links = links
        self.view = view
        self._guards = guards
        self._signaller_for = signaller_for
        self.config = config
        self.rng = rng
        self.clock = clock
        self._last_rewire = float("-inf")
        self._last_eviction = float("-inf")
        self._next_rotation = clock() + self._rotation_period()

    def _rotation_period(self) -> float:
        return self.config.rotate_every * self.rng.uniform(0.75, 1.25)

    @property
    def full(self) -> bool:
        return self.links.count >= self.config.max_links

    def near(self) -> set[bytes]:
        """Peers within two links of us (our neighbours' neighbours, as their records say)."""
        return {
            n
            for nb in self.links.neighbour_ids()
            if (r := self.view.get(nb)) is not None
            for n in r.neighbours
        }

    async def step(self) -> None:
        """One maintenance round: rewire or rotate when full, then fill up to K (a missing guard
        link is opened even when full, and another link gives way to it)."""
        guards = self._guards()
        want = [g for g in guards if g not in self.links.neighbours]
        recs = [r for r in self.view.all() if r.node_id not in self.links.neighbours]
        self.rng.shuffle(recs)
        near = self.near()
        recs.sort(key=lambda r: (r.node_id in near, len(r.neighbours)))
        if self.full:
            await self._rewire()
        if self.config.rotate_every > 0 and self.clock() >= self._next_rotation:
            self._next_rotation = self.clock() + self._rotation_period()
            if self.full:
                await self._rotate()
        for nid in [*want, *(r.node_id for r in recs)]:
            if not self.links.may_try(nid):
                continue
            guard = nid in want
            if self.full and not guard:
                break
            rec = self.view.get(nid)
            if rec is None:
                continue
            via = self._signaller_for(rec)
            if not via and tls_endpoint(rec) is None:
                continue
            with contextlib.suppress(LinkRefused):
                await self.links.connect(rec, via)
            if guard and self.links.count > self.config.max_links:
                # K always includes our guards (DESIGN §4): a full peer links to a guard first,
                # then lets one of its other links go
                victims = self._droppable()
                if victims:
                    self.links.drop(self.rng.choice(victims), "making room for a guard")

    def _keep(self) -> set[bytes]:
        """Links never dropped to rotate or make room: to our guards, and to peers whose guard we
        are (they said so with DB_LINK_KEEP; their circuits start on this link)."""
        return set(self._guards()) | self.links.kept_ids()

    def _droppable(self) -> list[bytes]:
        """Neighbours we may drop to rotate or make room (not kept by :meth:`_keep`)."""
        keep = self._keep()
        return [n for n in self.links.neighbour_ids() if n not in keep]

    def _redundant_neighbour(self) -> bytes | None:
        """A non-guard neighbour also linked to another of our neighbours (a triangle edge)."""
        nbs = self.links.neighbour_ids()
        keep = self._keep()
        for n in self.rng.sample(nbs, len(nbs)):
            if n in keep:
                continue
            for m in nbs:
                rec = self.view.get(m)
                if m != n and rec is not None and n in rec.neighbours:
                    return n
        return None

    def make_room(self, source: bytes, degree: int, purpose: int = 0) -> bool:
        """A full peer gets an offer.  Swap a redundant link for one to a peer outside our reach;
        or, for a peer with fewer than 2 links, drop a neighbour that has links to spare; or, for
        a peer rotating its links, rotate one of ours (at most once per half rotation period, so
        that nobody can churn our neighbours faster than rotation itself does)."""
        if purpose == ROTATION and self.config.rotate_every > 0:
            now = self.clock()
            victims = self._droppable()
            if victims and now - self._last_eviction >= self.config.rotate_every / 2:
                self._last_eviction = now
                self.links.drop(self.rng.choice(victims), "rotation: making room for a rotating peer")
                return True
        if degree < 2:
            spare = [
                n
                for n in self._droppable()
                if (r := self.view.get(n)) is not None and len(r.neighbours) >= self.config.max_links
            ]
            if spare:
                self.links.drop(self.rng.choice(spare), "rewiring: making room for a peer with too few links")
                return True
        if source in self.near():
            return False
        victim = self._redundant_neighbour()
        if victim is None:
            return False
        self.links.drop(victim, "rewiring: a redundant link gives way to a distant peer")
        return True

    async def _rewire(self) -> None:
        now = self.clock()
        if now - self._last_rewire < self.config.rewire_every:
            return
        self._last_rewire = now
        victim = self._redundant_neighbour()
        if victim is None:
            return
        near = self.near()
        far = [
            r
            for r in self.view.all()
            if r.node_id not in self.links.neighbours
            and r.node_id not in near
            and self.links.may_try(r.node_id)
        ]
        if far:
            await self._replace(victim, far, "rewiring: a redundant link gives way to a distant peer")

    async def _rotate(self) -> None:
        victims = self._droppable()
        cands = [
            r
            for r in self.view.all()
            if r.node_id not in self.links.neighbours and self.links.may_try(r.node_id)
        ]
        if victims and cands:
            await self._replace(
                self.rng.choice(victims), cands, "rotation: links are replaced slowly", purpose=ROTATION
            )

    async def _replace(self, victim: bytes, cands: list[PeerRecord], why: str, purpose: int = 0) -> None:
        """Make before break: link to one of ``cands`` first, then drop ``victim`` if over K."""
        rec = self.rng.choice(cands)
        via = self._signaller_for(rec)
        if not via and tls_endpoint(rec) is None:
            return
        try:
            await self.links.connect(rec, via, purpose=purpose)
        except LinkRefused:
            return
        if victim in self.links.neighbours and self.links.count > self.config.max_links:
            self.links.drop(victim, why)
