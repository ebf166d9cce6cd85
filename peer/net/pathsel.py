"""Path selection over existing links (DESIGN §5), pure: a view, the links, an rng.

Rules for one circuit: the first hop is one of our guards that we are linked to (stable
peers only); every further hop is a neighbour of the previous one, as its signed peer
record says (an OR extends only over links it has); no peer twice, never ourselves; no two
hops in one /16 (switchable for tests on one address); the last hop is an exit when the
circuit is for a TCP destination.  When no path satisfies the rules, a PathError names the
rule that failed; a weaker path is never built quietly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection

from dht.records import PeerRecord
from peer.errors import PathError
from peer.net.peerview import PeerView, record_hosts, subnet16


def _subnets(record: PeerRecord) -> set[str]:
    return {subnet16(h) for h in record_hosts(record)}


NO_GUARD = "no guard: no linked stable peer with a valid record (rule: first hop is a guard)"


def _search(
    view: PeerView,
    guards: list[PeerRecord],
    *,
    length: int,
    finish: Callable[[list[PeerRecord]], list[PeerRecord] | None],
    banned: Collection[bytes],
    twice: str,
    base_nets: set[str],
    subnet_rule: bool,
    rng: random.Random,
    reasons: set[str],
) -> list[PeerRecord] | None:
    """Depth-first over the links records list: from a guard, ``length`` hops with no peer twice,
    none in ``banned`` and no two in one /16 (nor in ``base_nets``); ``finish`` has the last word
    on a full-length path.  Why each branch failed is added to ``reasons``."""

    def extend(path: list[PeerRecord], used: set[bytes], nets: set[str]) -> list[PeerRecord] | None:
        if len(path) == length:
            return finish(path)
        cands = [r for n in path[-1].neighbours if (r := view.get(n)) is not None]
        if not cands:
            reasons.add("no known neighbour to extend to (rule: each hop is a neighbour of the previous one)")
        rng.shuffle(cands)
        for rec in cands:
            nid = rec.node_id
            if nid in used or nid in banned:
                reasons.add(twice)
                continue
            rnets = _subnets(rec)
            if subnet_rule and rnets & nets:
                reasons.add("two hops would share a /16 (rule: no two hops in one /16)")
                continue
            got = extend([*path, rec], used | {nid}, nets | rnets)
            if got is not None:
                return got
        return None

    rng.shuffle(guards)
    for g in guards:
        gnets = _subnets(g)
        if subnet_rule and gnets & base_nets:
            reasons.add("the guard shares a /16 with the ORDB (rule: no two hops in one /16)")
            continue
        found = extend([g], {g.node_id}, gnets | base_nets)
        if found is not None:
            return found
    return None


def select_path(
    view: PeerView,
    *,
    own_node_id: bytes,
    first_hops: Collection[bytes],
    hops: int,
    rng: random.Random,
    want_exit: bool = False,
    subnet_rule: bool = True,
    avoid: Collection[bytes] = (),
) -> list[PeerRecord]:
    """Choose ``hops`` peers; ``first_hops`` are the guards we hold links to."""
    if not 1 <= hops <= 8:
        raise PathError("a circuit has 1 to 8 hops")
    starts = [view.get(n) for n in first_hops if n not in avoid and n != own_node_id]
    guards = [r for r in starts if r is not None and r.stable]
    if not guards:
        raise PathError(NO_GUARD)
    reasons: set[str] = set()

    def finish(path: list[PeerRecord]) -> list[PeerRecord] | None:
        if want_exit and not path[-1].exit:
            reasons.add("no exit peer at the end of a valid path (rule: the last hop allows exits)")
            return None
        return path

    found = _search(
        view,
        guards,
        length=hops,
        finish=finish,
        banned={own_node_id, *avoid},
        twice="not enough distinct peers (rule: no peer twice)",
        base_nets=set(),
        subnet_rule=subnet_rule,
        rng=rng,
        reasons=reasons,
    )
    if found is None:
        raise PathError("no path: " + "; ".join(sorted(reasons or {"no candidates"})))
    return found


def eligible_ordbs(
    view: PeerView,
    *,
    own_node_id: bytes,
    guards: Collection[bytes],
    neighbours: Collection[bytes],
    exclude: Collection[bytes] = (),
) -> list[PeerRecord]:
    """ORDBs a download may use (DESIGN §5): never ourselves, disjoint from our guards and the
    peers we are linked to (such a peer as ORDB would see both our address and the hash_name)."""
    banned = {own_node_id, *guards, *neighbours, *exclude}
    return [r for r in view.all() if r.node_id not in banned]


def select_path_to(
    view: PeerView,
    target: PeerRecord,
    *,
    own_node_id: bytes,
    first_hops: Collection[bytes],
    rng: random.Random,
    before: int = 2,
    subnet_rule: bool = True,
) -> list[PeerRecord]:
    """A path of ``before`` hops then ``target`` (an ORDB): guard first, each hop a neighbour of the
    previous one, the hop before the target one of the target's neighbours."""
    if before < 2:
        raise PathError("at least 2 hops before an ORDB (rule: the ORDB must not see our address)")
    guards = [
        r
        for n in first_hops
        if (r := view.get(n)) is not None and r.stable and n not in (own_node_id, target.node_id)
    ]
    if not guards:
        raise PathError(NO_GUARD)
    reasons: set[str] = set()

    def finish(path: list[PeerRecord]) -> list[PeerRecord] | None:
        if target.node_id in path[-1].neighbours:
            return [*path, target]
        reasons.add("the hop before the ORDB is not linked to it (rule: extend only over links)")
        return None

    found = _search(
        view,
        guards,
        length=before,
        finish=finish,
        banned={own_node_id, target.node_id},
        twice="not enough distinct peers (rule: no peer twice, never ourselves or the ORDB)",
        base_nets=_subnets(target),
        subnet_rule=subnet_rule,
        rng=rng,
        reasons=reasons,
    )
    if found is None:
        raise PathError("no path to the ORDB: " + "; ".join(sorted(reasons or {"no candidates"})))
    return found
