"""Topology decisions (peer/net/topology.py) with a fake link manager and view: fast and exact.

The real thing runs over WebRTC and TLS in test_runtime.py, test_tls_links.py and the testnet
tests; here the clock is injected, so rate limits and periods are checked exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, cast

from peer.net.neighbours import LinkManager, LinkRefused
from peer.net.peerview import PeerView
from peer.net.topology import ROTATION, Topology, TopologyConfig


@dataclass
class Rec:
    node_id: bytes
    neighbours: tuple[bytes, ...] = ()
    route: Any = None


@dataclass
class FakeLinks:
    neighbours: dict[bytes, object] = field(default_factory=dict)
    dropped: list[tuple[bytes, str]] = field(default_factory=list)
    connected: list[tuple[bytes, int]] = field(default_factory=list)
    refuse: bool = False
    kept: set[bytes] = field(default_factory=set)

    def kept_ids(self) -> set[bytes]:
        return set(self.kept)

    @property
    def count(self) -> int:
        return len(self.neighbours)

    def neighbour_ids(self) -> list[bytes]:
        return list(self.neighbours)

    def may_try(self, node_id: bytes) -> bool:
        return True

    def drop(self, node_id: bytes, why: str) -> None:
        self.neighbours.pop(node_id, None)
        self.dropped.append((node_id, why))

    async def connect(self, rec: Rec, via: object, *, purpose: int = 0) -> object:
        if self.refuse:
            raise LinkRefused("full")
        self.connected.append((rec.node_id, purpose))
        self.neighbours[rec.node_id] = object()
        return self.neighbours[rec.node_id]


class FakeView:
    def __init__(self, recs: list[Rec]) -> None:
        self.recs = {r.node_id: r for r in recs}

    def get(self, node_id: bytes) -> Rec | None:
        return self.recs.get(node_id)

    def all(self) -> list[Rec]:
        return list(self.recs.values())


def nid(i: int) -> bytes:
    return bytes([i]) * 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    n_peers: int, linked: list[int], guards: list[int], *, k: int = 3, rotate: float = 100.0
) -> tuple[Topology, FakeLinks, Clock]:
    links = FakeLinks({nid(i): object() for i in linked})
    view = FakeView([Rec(nid(i)) for i in range(1, n_peers + 1)])
    clock = Clock()
    topo = Topology(
        cast(LinkManager, links),
        cast(PeerView, view),
        lambda: [nid(g) for g in guards],
        lambda rec: object(),  # type: ignore[arg-type,return-value]
        TopologyConfig(max_links=k, rewire_every=5.0, rotate_every=rotate),
        random.Random(1),
        clock=clock,
    )
    return topo, links, clock


def test_rotation_offers_evict_at_most_once_per_half_period_and_never_a_guard() -> None:
    topo, links, clock = make(6, [1, 2, 3], guards=[1, 2])
    assert topo.make_room(nid(9), 3, ROTATION)
    assert links.dropped == [(nid(3), "rotation: making room for a rotating peer")]
    links.neighbours[nid(4)] = object()
    clock.t += 49.0  # less than half of the 100 s period: the next rotation offer is refused
    assert not topo.make_room(nid(8), 3, ROTATION)
    clock.t += 1.0
    assert topo.make_room(nid(8), 3, ROTATION)
    assert [d for d, _ in links.dropped] == [nid(3), nid(4)]
    links.neighbours.pop(nid(4), None)
    clock.t += 100.0  # only guards left: nothing to evict
    assert not topo.make_room(nid(7), 3, ROTATION)


async def test_step_fills_guards_first_then_others() -> None:
    topo, links, _clock = make(6, [], guards=[5, 6], k=3)
    await topo.step()
    assert [c for c, _ in links.connected][:2] == [nid(5), nid(6)]
    assert links.count == 3


async def test_rotation_is_make_before_break_and_keeps_guards() -> None:
    topo, links, clock = make(6, [1, 2, 3], guards=[1, 2], k=3, rotate=10.0)
    await topo.step()  # not yet time to rotate
    assert links.connected == [] and links.dropped == []
    clock.t += 13.0  # past the longest jittered period (1.25 x 10 s)
    await topo.step()
    assert len(links.connected) == 1 and links.connected[0][1] == ROTATION
    assert links.dropped == [(nid(3), "rotation: links are replaced slowly")]
    assert nid(1) in links.neighbours and nid(2) in links.neighbours and links.count == 3


async def test_a_refused_rotation_drops_nothing() -> None:
    topo, links, clock = make(6, [1, 2, 3], guards=[1], k=3, rotate=10.0)
    links.refuse = True
    clock.t += 13.0
    await topo.step()
    assert links.dropped == [] and links.count == 3


async def test_links_kept_for_a_peer_whose_guard_we_are_never_rotate_or_make_room() -> None:
    topo, links, clock = make(6, [1, 2, 3], guards=[1], k=3, rotate=10.0)
    links.kept = {nid(2), nid(3)}  # peers 2 and 3 said DB_LINK_KEEP: we are their guard
    clock.t += 13.0
    await topo.step()
    assert links.dropped == [] and links.count == 3  # every link is protected: no victim
    assert not topo.make_room(nid(9), 0, ROTATION) and not topo.make_room(nid(8), 0)
    links.kept = {nid(2)}
    assert topo.make_room(nid(9), 3, ROTATION)
    assert links.dropped == [(nid(3), "rotation: making room for a rotating peer")]


async def test_a_full_peer_still_links_to_a_missing_guard_then_drops_another_link() -> None:
    topo, links, _clock = make(6, [2, 3, 4], guards=[1, 2], k=3)
    links.kept = {nid(3)}  # peer 3 uses us as its guard: that link stays too
    await topo.step()
    assert links.connected == [(nid(1), 0)]
    assert links.dropped == [(nid(4), "making room for a guard")]
    assert set(links.neighbours) == {nid(1), nid(2), nid(3)}
