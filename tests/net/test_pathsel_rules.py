"""Path selection rules (DESIGN §5, peer/net/pathsel.py) as hypothesis properties over random views.

Each drawn view holds signed peer records with random /16s (127.x.y.z), stable and exit flags
and neighbour lists.  Every path returned is checked against the rules, written out again here
(``violations``); every PathError is checked against a brute-force search over the same view
that finds no path obeying them, so neither a bad path nor a refusal of a good one passes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.records import PeerRecord, Route
from peer.crypto.identity import Identity
from peer.errors import PathError
from peer.net.pathsel import eligible_ordbs, select_path, select_path_to
from peer.net.peerview import PeerView

NOW = 1_800_000_000.0
_RNG = random.Random(20240611)
#: signing keys are made once per module; records are signed per example (fast with cryptography)
ME = Identity.generate(_RNG.randbytes)
POOL = [Identity.generate(_RNG.randbytes) for _ in range(9)]
STRANGER = Identity.generate(_RNG.randbytes).node_id  # listed as a neighbour, never in the view
#: index -1 is ourselves: our record sits in some views (a view built by another node), so
#: "never ourselves" is checked in pathsel itself and not only by PeerView refusing our record
IDENT = {i: ident for i, ident in enumerate(POOL)} | {-1: ME}
NEIGHBOUR_CHOICES = [*IDENT, -2]  # -2: a NodeID without a record

EXAMPLES = max(60, settings().max_examples // 8)  # 250 in the ci profile, 12,500 in fuzz


def node_id(index: int) -> bytes:
    return STRANGER if index == -2 else IDENT[index].node_id


@dataclass(frozen=True)
class PeerSpec:
    index: int
    hosts: tuple[str, ...]  # 127.a.b.c, a in 0..3: few /16s, so the subnet rule bites often; or none
    stable: bool
    exit: bool
    neighbours: tuple[int, ...]


@dataclass(frozen=True)
class Scene:
    view: PeerView
    records: dict[bytes, PeerRecord]
    first_hops: tuple[bytes, ...]


def record_of(spec: PeerSpec) -> PeerRecord:
    ident = IDENT[spec.index]
    endpoints = tuple(("tls", f"{h}:443") for h in spec.hosts) or (("webrtc", "peer"),)
    return PeerRecord(
        ident.public,
        bytes(32),
        bytes(31) + b"\x01",
        Route(endpoints),
        tuple(node_id(n) for n in spec.neighbours),
        spec.stable,
        int(NOW + 600),
        exit=spec.exit,
    ).sign(ident)


HOSTS = st.builds("127.{}.{}.{}".format, st.integers(0, 3), st.integers(0, 255), st.integers(1, 254))


@st.composite
def peer_specs(draw: st.DrawFn, index: int) -> PeerSpec:
    others = [n for n in NEIGHBOUR_CHOICES if n != index]
    return PeerSpec(
        index,
        tuple(draw(st.lists(HOSTS, min_size=1, max_size=2, unique=True))) if draw(st.integers(0, 4)) else (),
        draw(st.sampled_from([True, True, True, False])),  # mostly stable: guards exist often
        draw(st.booleans()),
        tuple(draw(st.lists(st.sampled_from(others), min_size=1, max_size=8, unique=True))),
    )


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    members = draw(st.lists(st.sampled_from(sorted(IDENT)), min_size=3, max_size=len(IDENT), unique=True))
    view = PeerView(bytes(20))  # a view that can hold our own record (see IDENT)
    records: dict[bytes, PeerRecord] = {}
    for index in members:
        rec = record_of(draw(peer_specs(index)))
        assert view.add(rec, NOW)
        records[rec.node_id] = rec
    first = draw(
        st.lists(st.sampled_from([m for m in members if m != -1]), min_size=1, max_size=3, unique=True)
    )
    first += draw(st.lists(st.sampled_from([-1, -2]), max_size=1))  # ourselves, or a peer without a record
    return Scene(view, records, tuple(node_id(i) for i in first))


# ---- the rules, written out independently of pathsel ----------------------------------------------
def slash16s(rec: PeerRecord) -> set[str]:
    """The /16s a record's route names (only 127.a.b.c:port endpoints carry an address here)."""
    return {".".join(addr.split(".")[:2]) for t, addr in rec.route.endpoints if t == "tls"}


def link_and_set_violations(
    path: list[PeerRecord], *, own: bytes, first_hops: Collection[bytes], subnet_rule: bool
) -> list[str]:
    bad = []
    ids = [r.node_id for r in path]
    if ids[0] not in first_hops:
        bad.append("first hop is not one of the given first hops")
    if not path[0].stable:
        bad.append("first hop is not stable")
    for prev, nxt in itertools.pairwise(path):
        if nxt.node_id not in prev.neighbours:
            bad.append("a hop is not a neighbour of the one before it")
    if len(set(ids)) != len(ids):
        bad.append("a peer twice")
    if own in ids:
        bad.append("ourselves on the path")
    if subnet_rule:
        for a, b in itertools.combinations(path, 2):
            if slash16s(a) & slash16s(b):
                bad.append("two hops in one /16")
    return bad


def violations(
    path: list[PeerRecord],
    *,
    view: PeerView,
    own: bytes,
    first_hops: Collection[bytes],
    hops: int,
    want_exit: bool,
    subnet_rule: bool,
    avoid: Collection[bytes],
) -> list[str]:
    if len(path) != hops:
        return [f"{len(path)} hops, not {hops}"]
    bad = link_and_set_violations(path, own=own, first_hops=first_hops, subnet_rule=subnet_rule)
    if any(view.get(r.node_id) != r for r in path):
        bad.append("a hop not from the verified view")
    if any(r.node_id in avoid for r in path):
        bad.append("an avoided peer on the path")
    if want_exit and not path[-1].exit:
        bad.append("the last hop is not an exit")
    return bad


def ordb_violations(
    path: list[PeerRecord],
    target: PeerRecord,
    *,
    view: PeerView,
    own: bytes,
    first_hops: Collection[bytes],
    before: int,
    subnet_rule: bool,
) -> list[str]:
    if len(path) != before + 1 or path[-1] != target:
        return ["not `before` hops then the ORDB"]
    bad = link_and_set_violations(path, own=own, first_hops=first_hops, subnet_rule=subnet_rule)
    if len(path) < 3:
        bad.append("fewer than 2 hops before the ORDB")
    if any(view.get(r.node_id) != r for r in path[:-1]):
        bad.append("a hop not from the verified view")
    return bad


def walks(view: PeerView, length: int, start: PeerRecord | None = None) -> Iterator[list[PeerRecord]]:
    """Every sequence of distinct view records of ``length``, each a listed neighbour of the one before
    (the brute-force search; the rules are then checked on each whole sequence)."""

    def go(path: list[PeerRecord]) -> Iterator[list[PeerRecord]]:
        if len(path) == length:
            yield path
            return
        for n in path[-1].neighbours:
            rec = view.get(n)
            if rec is not None and rec not in path:
                yield from go([*path, rec])

    for first in [start] if start is not None else view.all():
        yield from go([first])


# ---- properties -----------------------------------------------------------------------------------
@settings(max_examples=EXAMPLES)
@given(
    scene=scenes(),
    hops=st.integers(1, 4),
    want_exit=st.booleans(),
    subnet_rule=st.booleans(),
    avoid=st.lists(st.sampled_from(sorted(IDENT)), max_size=2),
    seed=st.integers(0, 2**32),
)
def test_select_path_obeys_every_rule_or_raises(
    scene: Scene, hops: int, want_exit: bool, subnet_rule: bool, avoid: list[int], seed: int
) -> None:
    avoid_ids = {node_id(i) for i in avoid}
    rules: dict[str, Any] = {
        "view": scene.view,
        "own": ME.node_id,
        "first_hops": scene.first_hops,
        "hops": hops,
        "want_exit": want_exit,
        "subnet_rule": subnet_rule,
        "avoid": avoid_ids,
    }
    try:
        path = select_path(
            scene.view,
            own_node_id=ME.node_id,
            first_hops=scene.first_hops,
            hops=hops,
            rng=random.Random(seed),
            want_exit=want_exit,
            subnet_rule=subnet_rule,
            avoid=avoid_ids,
        )
    except PathError as exc:
        assert "rule" in str(exc), f"a PathError names the rule that failed: {exc}"
        good = [p for p in walks(scene.view, hops) if not violations(p, **rules)]
        assert not good, f"PathError ({exc}) although a valid path exists"
        return
    assert violations(path, **rules) == []


@settings(max_examples=EXAMPLES)
@given(
    scene=scenes(),
    more_guards=st.lists(st.sampled_from(sorted(IDENT)), max_size=2),
    neighbours=st.lists(st.sampled_from(sorted(IDENT)), max_size=4),
    exclude=st.lists(st.sampled_from(sorted(IDENT)), max_size=2),
    pick=st.integers(0, 100),
    before=st.sampled_from([2, 3]),
    subnet_rule=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_ordb_paths_obey_every_rule_or_raise(
    scene: Scene,
    more_guards: list[int],
    neighbours: list[int],
    exclude: list[int],
    pick: int,
    before: int,
    subnet_rule: bool,
    seed: int,
) -> None:
    own = ME.node_id
    guards = {*scene.first_hops, *(node_id(i) for i in more_guards)}  # linked guards and the others
    nbrs = {node_id(i) for i in neighbours}
    excl = {node_id(i) for i in exclude}
    cands = eligible_ordbs(scene.view, own_node_id=own, guards=guards, neighbours=nbrs, exclude=excl)
    ids = [r.node_id for r in cands]
    assert len(set(ids)) == len(ids)
    for rec in cands:
        assert rec.node_id != own, "our own node as ORDB"
        assert rec.node_id not in guards, "our guard as ORDB"
        assert rec.node_id not in nbrs, "our neighbour as ORDB"
        assert rec.node_id not in excl
        assert scene.view.get(rec.node_id) == rec
    banned = {own, *guards, *nbrs, *excl}
    assert set(ids) == {n for n in scene.records if n not in banned}, "an allowed ORDB left out"
    if not cands:
        return
    target = cands[pick % len(cands)]
    try:
        path = select_path_to(
            scene.view,
            target,
            own_node_id=own,
            first_hops=scene.first_hops,
            rng=random.Random(seed),
            before=before,
            subnet_rule=subnet_rule,
        )
    except PathError as exc:
        assert "rule" in str(exc), f"a PathError names the rule that failed: {exc}"
        good = [
            p
            for g in scene.records.values()
            for p in walks(scene.view, before, start=g)
            if target.node_id in p[-1].neighbours
            and not ordb_violations(
                [*p, target],
                target,
                view=scene.view,
                own=own,
                first_hops=scene.first_hops,
                before=before,
                subnet_rule=subnet_rule,
            )
        ]
        assert not good, f"PathError ({exc}) although a valid path to the ORDB exists"
        return
    bad = ordb_violations(
        path,
        target,
        view=scene.view,
        own=own,
        first_hops=scene.first_hops,
        before=before,
        subnet_rule=subnet_rule,
    )
    assert bad == []


# ---- fixed cases --------------------------------------------------------------------------------
def full_mesh(n: int, *, stable: bool = True, exit_: bool = True) -> tuple[PeerView, list[PeerRecord]]:
    """``n`` pool peers, each in its own /16, all linked to each other."""
    specs = [
        PeerSpec(i, (f"127.{10 + i}.0.1",), stable, exit_, tuple(j for j in range(n) if j != i))
        for i in range(n)
    ]
    view = PeerView(ME.node_id)
    recs = [record_of(s) for s in specs]
    assert view.add_all(recs, NOW) == n
    return view, recs


def test_our_own_record_never_enters_our_view() -> None:
    view = PeerView(ME.node_id)
    assert not view.add(record_of(PeerSpec(-1, ("127.1.0.1",), True, True, ())), NOW)
    assert len(view) == 0


@pytest.mark.parametrize("before", [-1, 0, 1])
def test_fewer_than_two_hops_before_an_ordb_is_refused(before: int) -> None:
    view, recs = full_mesh(6)
    with pytest.raises(PathError, match="at least 2 hops"):
        select_path_to(
            view, recs[5], own_node_id=ME.node_id, first_hops=[recs[0].node_id], rng=_RNG, before=before
        )


@pytest.mark.parametrize("hops", [0, 9])
def test_hop_count_out_of_range_is_refused(hops: int) -> None:
    view, recs = full_mesh(4)
    with pytest.raises(PathError):
        select_path(view, own_node_id=ME.node_id, first_hops=[recs[0].node_id], hops=hops, rng=_RNG)


def test_no_stable_guard_raises_even_when_a_path_would_exist() -> None:
    view, recs = full_mesh(5, stable=False)
    with pytest.raises(PathError, match="guard"):
        select_path(view, own_node_id=ME.node_id, first_hops=[r.node_id for r in recs], hops=3, rng=_RNG)
    with pytest.raises(PathError, match="guard"):
        select_path_to(view, recs[4], own_node_id=ME.node_id, first_hops=[recs[0].node_id], rng=_RNG)


def test_one_shared_slash16_blocks_the_path_only_with_the_subnet_rule() -> None:
    """A chain a -> b -> c where b and c share a /16: refused with the rule, built without it."""
    specs = [
        PeerSpec(0, ("127.20.0.1",), True, False, (1,)),
        PeerSpec(1, ("127.21.0.1",), True, False, (2,)),
        PeerSpec(2, ("127.21.9.9",), True, True, ()),
    ]
    view = PeerView(ME.node_id)
    view.add_all([record_of(s) for s in specs], NOW)
    args: dict[str, Any] = {
        "own_node_id": ME.node_id,
        "first_hops": [node_id(0)],
        "hops": 3,
        "rng": _RNG,
        "want_exit": True,
    }
    with pytest.raises(PathError, match="/16"):
        select_path(view, **args)
    path = select_path(view, subnet_rule=False, **args)
    assert [r.node_id for r in path] == [node_id(0), node_id(1), node_id(2)]


def test_no_hop_before_an_ordb_shares_its_slash16() -> None:
    """guard -> m -> ORDB and guard -> m2 -> ORDB exist; m shares the ORDB's /16, so only m2 may serve."""
    specs = [
        PeerSpec(0, ("127.30.0.1",), True, False, (1, 2)),  # the guard
        PeerSpec(1, ("127.31.0.1",), True, False, (3,)),  # m: same /16 as the ORDB
        PeerSpec(2, ("127.32.0.1",), True, False, (3,)),  # m2
        PeerSpec(3, ("127.31.7.7",), True, False, ()),  # the ORDB
    ]
    view = PeerView(ME.node_id)
    recs = [record_of(s) for s in specs]
    view.add_all(recs, NOW)
    for seed in range(16):
        path = select_path_to(
            view, recs[3], own_node_id=ME.node_id, first_hops=[node_id(0)], rng=random.Random(seed)
        )
        assert [r.node_id for r in path] == [node_id(0), node_id(2), node_id(3)]
    view.forget(node_id(2))
    with pytest.raises(PathError, match="/16"):
        select_path_to(view, recs[3], own_node_id=ME.node_id, first_hops=[node_id(0)], rng=_RNG)


def test_the_guard_never_shares_the_ordbs_slash16() -> None:
    """Two guards reach the ORDB over m; g shares the ORDB's /16, so only g2 may start the path."""
    specs = [
        PeerSpec(0, ("127.41.0.1",), True, False, (2,)),  # g: same /16 as the ORDB
        PeerSpec(1, ("127.42.0.1",), True, False, (2,)),  # g2
        PeerSpec(2, ("127.43.0.1",), True, False, (3,)),  # m
        PeerSpec(3, ("127.41.7.7",), True, False, ()),  # the ORDB
    ]
    view = PeerView(ME.node_id)
    recs = [record_of(s) for s in specs]
    view.add_all(recs, NOW)
    for seed in range(16):
        path = select_path_to(
            view,
            recs[3],
            own_node_id=ME.node_id,
            first_hops=[node_id(0), node_id(1)],
            rng=random.Random(seed),
        )
        assert [r.node_id for r in path] == [node_id(1), node_id(2), node_id(3)]
    with pytest.raises(PathError, match="/16"):
        select_path_to(view, recs[3], own_node_id=ME.node_id, first_hops=[node_id(0)], rng=_RNG)
    path = select_path_to(
        view, recs[3], own_node_id=ME.node_id, first_hops=[node_id(0)], rng=_RNG, subnet_rule=False
    )
    assert [r.node_id for r in path] == [node_id(0), node_id(2), node_id(3)]
