"""The fetch scheduler's rules against churn: UNAVAILABLE answers are paced and their ORDB avoided,
and a circuit is not replaced as slow on too little evidence (fed events and a fake ``now``)."""

from __future__ import annotations

import random

import pytest

from peer.roles import schedule
from peer.roles.schedule import (
    MIN_AGE_FOR_SLOW,
    SLOTS_PER_CIRCUIT,
    UNAVAILABLE_COOLDOWN,
    UNAVAILABLE_LIMIT,
    UNAVAILABLE_PAUSE,
    FetchScheduler,
    ReplaceCircuit,
    Request,
)
from peer.wire.ordb import DbEndReason

PS = 1024
A, B, C = 1, 2, 3
ORDB = {A: b"ordb-a", B: b"ordb-b", C: b"ordb-c"}


def scheduler(circuits: list[int], pieces: int) -> FetchScheduler:
    s = FetchScheduler(random.Random(11))
    for c in circuits:
        s.add_circuit(c, ORDB[c], 0.0)
    s.set_pieces(pieces, PS, set())
    return s


def requests(s: FetchScheduler, now: float) -> list[Request]:
    return [a for a in s.schedule(now) if isinstance(a, Request)]


def finish(s: FetchScheduler, r: Request, start: float, seconds: float) -> None:
    s.connected(r.query, start)
    s.received(r.query, r.count * PS, start + seconds)
    for i in r.pieces:
        if s.accept(r.query, i):
            s.verified(i)
    s.finished(r.query, start + seconds)


def test_unavailable_answers_are_re_asked_at_a_bounded_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    # an ORDB that answers UNAVAILABLE at once, and a loop that runs every millisecond; the circuit
    # is kept (the pace alone is checked here)
    monkeypatch.setattr(schedule, "UNAVAILABLE_LIMIT", 10**9)
    s = scheduler([A], 50)
    asked = 0
    now, until = 0.0, 5.0
    while now < until:
        for r in requests(s, now):
            asked += 1
            s.ended(r.query, DbEndReason.UNAVAILABLE, now)
        now += 0.001
    # at most a slot's worth per pause (the pauses only grow): not thousands per second
    assert 0 < asked <= SLOTS_PER_CIRCUIT * (1 + until / UNAVAILABLE_PAUSE)
    assert s.circuits[A].unavailable == asked
    assert s.replaced == 0


def test_with_nobody_delivering_a_circuit_answered_unavailable_is_replaced_without_the_long_cooldown() -> (
    None
):
    s = scheduler([A], 50)
    out = [a for r in requests(s, 0.0) for a in s.ended(r.query, DbEndReason.UNAVAILABLE, 1.0)]
    assert [a for a in out if isinstance(a, ReplaceCircuit)] == [
        ReplaceCircuit(A, "its ORDB answered UNAVAILABLE")
    ]
    assert ORDB[A] in s.avoid(1.5)  # the usual short cooldown: another ORDB is tried first
    assert ORDB[A] not in s.avoid(1.0 + UNAVAILABLE_COOLDOWN - 1)


def test_an_ordb_that_keeps_answering_unavailable_is_avoided_while_another_delivers() -> None:
    s = scheduler([A, B], 50)
    first = requests(s, 0.0)
    on_a = [r for r in first if r.circ == A]
    on_b = [r for r in first if r.circ == B]
    finish(s, on_b[0], 0.0, 1.0)  # B brings data: the content is there
    out = []
    for i, r in enumerate(on_a[:UNAVAILABLE_LIMIT]):
        out += s.ended(r.query, DbEndReason.UNAVAILABLE, 1.0 + i)
    assert [a for a in out if isinstance(a, ReplaceCircuit)] == [
        ReplaceCircuit(A, "its ORDB answered UNAVAILABLE")
    ]
    assert s.reasons == {"its ORDB answered UNAVAILABLE": 1}
    t = 1.0 + UNAVAILABLE_LIMIT - 1
    assert ORDB[A] in s.avoid(t + UNAVAILABLE_COOLDOWN - 1)
    assert ORDB[A] not in s.avoid(t + UNAVAILABLE_COOLDOWN + 1)
    assert all(r.circ != A for r in requests(s, t + 0.1))  # nothing more is asked of it


def test_one_unavailable_is_not_enough_to_give_an_ordb_up() -> None:
    s = scheduler([A, B], 50)
    first = requests(s, 0.0)
    finish(s, next(r for r in first if r.circ == B), 0.0, 1.0)
    r = next(r for r in first if r.circ == A)
    assert not [a for a in s.ended(r.query, DbEndReason.UNAVAILABLE, 1.0) if isinstance(a, ReplaceCircuit)]
    assert ORDB[A] not in s.avoid(1.5) - {ORDB[A]}  # in use, not cooled down
    assert s.cooldown.get(ORDB[A]) is None
    # paused, then asked again
    assert all(q.circ != A for q in requests(s, 1.0 + UNAVAILABLE_PAUSE / 2))
    assert any(q.circ == A for q in requests(s, 1.0 + UNAVAILABLE_PAUSE))


def rated(seconds: dict[int, float], queries: int) -> FetchScheduler:
    """Three circuits, each with ``queries`` finished queries that took ``seconds[circ]``."""
    s = scheduler(list(seconds), 200)
    done = {c: 0 for c in seconds}
    for r in requests(s, 0.0):
        if done[r.circ] < queries:
            finish(s, r, 0.0, seconds[r.circ])
            done[r.circ] += 1
    return s


def test_a_single_slow_delivery_does_not_replace_a_circuit() -> None:
    s = rated({A: 1.0, B: 1.2, C: 10.0}, queries=1)
    assert not [a for a in s.police(MIN_AGE_FOR_SLOW + 1) if isinstance(a, ReplaceCircuit)]
    assert s.replaced == 0


def test_the_only_circuit_bringing_data_is_not_replaced_as_slow() -> None:
    s = rated({A: 1.0, B: 1.2, C: 10.0}, queries=2)
    s.police(1.0)  # every circuit brought data before this round
    assert s.delivering == [3]
    assert len(requests(s, 1.5)) == 3 * SLOTS_PER_CIRCUIT
    q = next(q for q in s.queries.values() if q.circ == C)
    s.connected(q.id, 2.0)
    s.received(q.id, PS, 3.0)  # now only C delivers: the others wait on their holder
    assert not [a for a in s.police(MIN_AGE_FOR_SLOW + 1) if isinstance(a, ReplaceCircuit)]
    assert s.delivering == [3, 1]
    # with the others delivering again, C is replaced for its rate
    for q in [q for q in s.queries.values() if q.circ in (A, B)]:
        s.connected(q.id, MIN_AGE_FOR_SLOW + 1.5)
        s.received(q.id, PS, MIN_AGE_FOR_SLOW + 1.6)
    acts = s.police(MIN_AGE_FOR_SLOW + 2)
    assert [a for a in acts if isinstance(a, ReplaceCircuit)] == [
        ReplaceCircuit(C, "much slower than the others")
    ]
    assert s.reasons == {"much slower than the others": 1}
