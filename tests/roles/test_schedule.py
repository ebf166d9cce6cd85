"""The requester's fetch scheduler, alone: fed events and a fake ``now``, checked by the actions it returns."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import WireError
from peer.roles.schedule import (
    FIRST_ANSWER_WITHIN,
    MIN_AGE_FOR_SLOW,
    MIN_RATED,
    NO_CIRCUIT_GIVE_UP,
    RETIRE_COOLDOWN,
    STALL_AFTER,
    Action,
    Done,
    EndQuery,
    FetchScheduler,
    GiveUp,
    ReplaceCircuit,
    ReportBadPiece,
    Request,
)
from peer.wire.ordb import DbEndReason

PS = 1024
A, B, C, D = 1, 2, 3, 4  # circuit handles
ORDB = {A: b"ordb-a", B: b"ordb-b", C: b"ordb-c", D: b"ordb-d"}


def scheduler(circuits: list[int], pieces: int, have: set[int] | None = None) -> FetchScheduler:
    s = FetchScheduler(random.Random(7))
    for c in circuits:
        s.add_circuit(c, ORDB[c], 0.0)
    s.set_pieces(pieces, PS, have or set())
    return s


def requests(actions: list[Action]) -> list[Request]:
    assert all(isinstance(a, Request) for a in actions), actions
    return [a for a in actions if isinstance(a, Request)]


def deliver(s: FetchScheduler, r: Request, start: float, seconds: float = 1.0) -> list[int]:
    """The whole answer to ``r`` arrives, every piece good; returns the pieces that were stored."""
    s.connected(r.query, start)
    s.received(r.query, r.count * PS, start + seconds)
    stored = []
    for i in r.pieces:
        if s.accept(r.query, i):
            s.verified(i)
            stored.append(i)
    assert s.finished(r.query, start + seconds) == [EndQuery(r.circ, r.query, DbEndReason.FINISHED)]
    return stored


def run_to_end(s: FetchScheduler) -> tuple[list[Request], list[int]]:
    """Answer every request at once until the scheduler says Done."""
    asked: list[Request] = []
    stored: list[int] = []
    now = 1.0
    while True:
        actions = s.schedule(now)
        if actions == [Done()]:
            return asked, stored
        assert actions, "nothing asked although pieces are missing"
        for r in requests(actions):
            asked.append(r)
            stored += deliver(s, r, now)
        now += 1.0


# ---- resume and completion -------------------------------------------------------------------------
def test_a_resume_asks_only_for_the_missing_pieces() -> None:
    have = {0, 1, 2, 5, 6, 9, 40, 41}
    s = scheduler([A, B], 50, have)
    asked, stored = run_to_end(s)
    wanted = [i for r in asked for i in r.pieces]
    assert not set(wanted) & have
    assert sorted(stored) == sorted(set(range(50)) - have)
    assert all(0 <= r.counter <= 2 and r.count > 0 for r in asked)


def test_a_complete_share_is_done_without_a_request() -> None:
    s = FetchScheduler(random.Random(1))
    s.add_circuit(A, ORDB[A], 0.0)
    assert s.schedule(1.0) == []  # no manifest yet: nothing to ask, nothing done
    assert not s.done
    s.set_pieces(4, PS, {0, 1, 2, 3})
    assert s.done
    assert s.schedule(1.0) == [Done()]
    empty = FetchScheduler(random.Random(1))
    empty.set_pieces(0, PS, set())
    assert empty.schedule(0.0) == [Done()]


def test_the_last_verified_piece_completes_the_share() -> None:
    s = scheduler([A], 3)
    (r,) = requests(s.schedule(0.0))  # 3 pieces in one query; the second slot finds nothing to ask
    assert list(r.pieces) == [0, 1, 2] and not s.done
    deliver(s, r, 0.0)
    assert s.done and s.schedule(2.0) == [Done()]


def test_the_manifest_is_asked_on_every_working_circuit() -> None:
    s = FetchScheduler(random.Random(3))
    for c in (A, B, C):
        s.add_circuit(c, ORDB[c], 0.0)
    s.circuit_closed(B)
    asked = s.ask_manifest(0.5)
    assert [(r.circ, r.first, r.count) for r in asked] == [(A, 0, 0), (C, 0, 0)]
    # a manifest search that finds nothing yet is no fault of the circuit
    assert s.ended(asked[0].query, DbEndReason.UNAVAILABLE, 0.6) == [EndQuery(A, asked[0].query, None)]
    assert s.circuits[A].failures == 0 and s.circuits[A].not_before == 0.0
    assert s.end(asked[1].query) == [EndQuery(C, asked[1].query, DbEndReason.FINISHED)]
    assert s.end(asked[1].query) == []  # already over


# ---- rates and slow circuits -------------------------------------------------------------------------
def rated(seconds: dict[int, float]) -> FetchScheduler:
    """Three circuits, each with its two first queries finished, each having taken ``seconds[circ]``."""
    s = FetchScheduler(random.Random(5))
    for c in seconds:
        s.add_circuit(c, ORDB[c], 0.0)
    s.set_pieces(100, PS, set())
    for r in requests(s.schedule(0.0)):
        deliver(s, r, 0.0, seconds[r.circ])
    assert all(fc.rated == MIN_RATED for fc in s.circuits.values())
    return s


def test_the_delivery_rate_is_measured_from_db_connected_to_the_last_byte() -> None:
    s = scheduler([A], 100)
    r = requests(s.schedule(0.0))[0]
    s.connected(r.query, 2.0)
    s.received(r.query, 999, 2.5)  # a first holder broke off: the ORDB starts over with another
    s.connected(r.query, 3.0)
    s.received(r.query, 4 * PS, 4.0)
    s.finished(r.query, 4.0)
    assert s.circuits[A].rate == pytest.approx(4 * PS / 2.0)  # since the first DB_CONNECTED
    assert s.circuits[A].rtt == pytest.approx(2.0)
    assert s.circuits[A].bytes == 999 + 4 * PS


def test_a_slow_circuit_is_replaced_and_a_fast_one_is_not() -> None:
    s = rated({A: 1.0, B: 1.2, C: 10.0})
    young = s.police(MIN_AGE_FOR_SLOW - 1)
    assert not [a for a in young if isinstance(a, ReplaceCircuit)]  # too young to judge
    acts = s.police(MIN_AGE_FOR_SLOW + 1)
    replaced = [a for a in acts if isinstance(a, ReplaceCircuit)]
    assert replaced == [ReplaceCircuit(C, "much slower than the others")]
    # its queries end (FINISHED) before the circuit goes, and their pieces go back to the queue
    assert acts[-1] == replaced[0]
    assert all(isinstance(a, EndQuery) and a.reason == DbEndReason.FINISHED for a in acts[:-1])
    assert s.replaced == 1 and C not in s.circuits
    assert ORDB[C] in s.avoid(MIN_AGE_FOR_SLOW + 2)
    assert ORDB[C] not in s.avoid(MIN_AGE_FOR_SLOW + 1 + RETIRE_COOLDOWN + 0.1)
    assert not [a for a in s.police(MIN_AGE_FOR_SLOW + 2) if isinstance(a, ReplaceCircuit)]


def test_slow_is_judged_against_the_median_circuit_not_the_best() -> None:
    """One circuit that had the shared holder nearly to itself must not make the others look slow."""
    s = FetchScheduler(random.Random(5))
    for c in (A, B, C, D):
        s.add_circuit(c, ORDB[c], 0.0)
    s.set_pieces(100, PS, set())
    took = {A: 0.2, B: 1.0, C: 1.2, D: 1.4}  # A is 5x the median; B, C and D are alike
    for r in requests(s.schedule(0.0)):
        deliver(s, r, 0.0, took[r.circ])
    assert not [a for a in s.police(MIN_AGE_FOR_SLOW + 1) if isinstance(a, ReplaceCircuit)]


def test_a_query_of_a_rush_measures_no_rate() -> None:
    """A rush query has the holder's upload to itself: its rate says nothing of the circuit."""
    s = scheduler([A], 100)
    s.set_window(1, 50, 59, 0.0)
    head, rest = requests(s.schedule(0.0))
    deliver(s, head, 0.0, 0.01)
    deliver(s, rest, 0.0, 0.03)
    assert s.circuits[A].rate is None and s.circuits[A].rated == 0


def test_circuits_of_similar_speed_are_all_kept() -> None:
    s = rated({A: 1.0, B: 1.5, C: 2.0})
    assert not [a for a in s.police(100.0) if isinstance(a, ReplaceCircuit)]
    assert s.replaced == 0


def test_a_query_without_answer_is_abandoned_and_a_stalling_circuit_replaced() -> None:
    s = scheduler([A, B], 100)
    first = requests(s.schedule(0.0))
    on_a = [r for r in first if r.circ == A]
    assert s.police(FIRST_ANSWER_WITHIN - 1) == []  # a first answer may take long
    s.connected(on_a[0].query, 1.0)
    s.received(on_a[0].query, 100, FIRST_ANSWER_WITHIN - 2)
    acts = s.police(FIRST_ANSWER_WITHIN + 1)
    # every query but the one that had data went quiet: B's two and A's second
    ended = {(a.circ, a.query) for a in acts if isinstance(a, EndQuery)}
    assert ended == {(r.circ, r.query) for r in first if r is not on_a[0]}
    assert {a.circ for a in acts if isinstance(a, ReplaceCircuit)} == {B}  # two stalls on B
    assert s.circuits[A].failures == 1
    later = s.police(FIRST_ANSWER_WITHIN - 2 + STALL_AFTER + 1)  # A's delivery stopped: its second failure
    assert later[-1] == ReplaceCircuit(A, "queries stall")
    # the abandoned pieces are asked again on a new circuit
    s.add_circuit(C, ORDB[C], 50.0)
    again = requests(s.schedule(50.0))
    assert {r.circ for r in again} == {C}
    assert again[0].first == 0


# ---- end-game --------------------------------------------------------------------------------------
def test_end_game_asks_for_the_last_pieces_on_another_circuit_and_stores_each_once() -> None:
    s = scheduler([A, B, C], 8)
    acts = requests(s.schedule(0.0))
    assert [(r.circ, r.first, r.count) for r in acts[:2]] == [(A, 0, 4), (A, 4, 4)]
    dups = acts[2:]
    # B asks again what A is bringing; C gets nothing: a piece is asked at most twice
    assert [(r.circ, r.first, r.count) for r in dups] == [(B, 0, 4), (B, 4, 4)]
    assert all(s.queries[r.query].duplicate for r in dups)
    assert s.schedule(0.5) == []
    stored = deliver(s, acts[0], 1.0) + deliver(s, dups[1], 1.0)
    assert deliver(s, dups[0], 2.0) == [] and deliver(s, acts[1], 2.0) == []  # late copies: not stored
    assert sorted(stored) == list(range(8))
    assert s.schedule(3.0) == [Done()]


def test_end_game_skips_the_circuit_that_is_bringing_the_pieces() -> None:
    s = scheduler([A], 8)
    acts = requests(s.schedule(0.0))
    assert [(r.first, r.count) for r in acts] == [(0, 4), (4, 4)]
    deliver(s, acts[0], 1.0)
    assert s.schedule(2.0) == []  # A's free slot: the rest is in flight on A itself


def test_a_piece_the_query_did_not_ask_for_is_a_protocol_error() -> None:
    s = scheduler([A], 8)
    r = requests(s.schedule(0.0))[0]
    with pytest.raises(WireError):
        s.accept(r.query, 7)
    assert s.malformed(r.query) == [EndQuery(A, r.query, DbEndReason.FINISHED)]
    assert s.circuits[A].failures == 1
    assert s.malformed(r.query) == [] and not s.accept(r.query, 0)


# ---- BAD_PIECE ---------------------------------------------------------------------------------------
def test_a_bad_piece_is_reported_to_the_ordb_and_a_circuit_that_fails_again_is_replaced() -> None:
    s = scheduler([A, B], 100)
    on_a = [r for r in requests(s.schedule(0.0)) if r.circ == A]
    s.connected(on_a[0].query, 1.0)
    assert s.bad_piece(on_a[0].query, 1.5) == [ReportBadPiece(A, on_a[0].query)]
    assert s.bad_pieces == 1 and A in s.circuits and not s.circuits[A].retired
    assert on_a[0].first not in s.inflight  # its pieces go back to the queue
    # the same circuit brings a second bad piece: reported first, then the circuit goes
    acts = s.bad_piece(on_a[1].query, 2.0)
    assert acts == [
        ReportBadPiece(A, on_a[1].query),
        ReplaceCircuit(A, "it delivered pieces that failed verification"),
    ]
    assert s.bad_pieces == 2 and s.replaced == 1
    assert ORDB[A] in s.avoid(2.5)
    assert s.bad_piece(on_a[1].query, 3.0) == []  # that query is over
    again = requests(s.schedule(3.0))
    assert {r.circ for r in again} == set()  # B's slots are full; A is gone
    assert {i for r in on_a for i in r.pieces} <= {i for i in range(100) if not s.inflight.get(i)}


def test_the_ordbs_of_a_retired_circuit_are_avoided_for_a_while() -> None:
    s = scheduler([A, B], 10)
    requests(s.schedule(0.0))
    acts = s.retire_ordbs({ORDB[A]}, "its ORDB became a neighbour", 1.0)
    assert [a for a in acts if isinstance(a, ReplaceCircuit)] == [
        ReplaceCircuit(A, "its ORDB became a neighbour")
    ]
    assert s.retire_ordbs({ORDB[A]}, "again", 1.0) == []
    assert s.avoid(1.0) == {ORDB[A], ORDB[B]}
    assert s.avoid(1.0 + RETIRE_COOLDOWN + 0.1) == {ORDB[B]}


def test_an_ordb_that_ends_a_piece_query_counts_a_failure() -> None:
    s = scheduler([A], 10)
    r = requests(s.schedule(0.0))[0]
    assert s.ended(r.query, DbEndReason.DESTROYED, 0.1) == [EndQuery(A, r.query, None)]
    assert s.circuits[A].failures == 1
    assert s.ended(r.query, DbEndReason.DESTROYED, 0.2) == []


# ---- every circuit gone ------------------------------------------------------------------------------
def test_with_every_circuit_gone_nothing_is_asked_and_the_download_gives_up_after_a_while() -> None:
    s = scheduler([A, B], 20)
    first = requests(s.schedule(0.0))
    closed = s.circuit_closed(A) + s.circuit_closed(B)
    assert sorted((a.circ, a.query) for a in closed if isinstance(a, EndQuery)) == sorted(
        (r.circ, r.query) for r in first
    )
    assert all(isinstance(a, EndQuery) and a.reason is None for a in closed)  # nobody to tell
    assert s.circuit_closed(A) == [] and s.circuit_closed(99) == []
    assert s.schedule(1.0) == [] and s.inflight == {}
    assert s.stranded(1.0) is None
    assert s.stranded(1.0 + NO_CIRCUIT_GIVE_UP) is None
    assert isinstance(s.stranded(1.0 + NO_CIRCUIT_GIVE_UP + 0.1), GiveUp)
    # a circuit that comes back resets the count, and is asked for the same pieces
    s.add_circuit(C, ORDB[C], 40.0)
    assert s.stranded(40.0) is None and s.stranded(80.0) is None
    assert [r.first for r in requests(s.schedule(40.0))] == [r.first for r in first[:2]]


def test_closing_the_download_ends_every_query() -> None:
    s = scheduler([A, B], 20)
    first = requests(s.schedule(0.0))
    assert s.close() == [EndQuery(r.circ, r.query, DbEndReason.FINISHED) for r in first]
    assert s.queries == {} and s.inflight == {}


# ---- invariants under any order of events ------------------------------------------------------------
EVENT = st.tuples(
    st.sampled_from(["good", "bad", "stall", "end", "close", "add", "police"]),
    st.integers(0, 10),
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.integers(1, 40),
    have=st.sets(st.integers(0, 39)),
    events=st.lists(EVENT, max_size=60),
)
def test_any_order_of_events_keeps_the_books_straight(
    pieces: int, have: set[int], events: list[tuple[str, int]]
) -> None:
    have = {i for i in have if i < pieces}
    s = FetchScheduler(random.Random(0))
    next_circ = 1
    for _ in range(3):
        s.add_circuit(next_circ, bytes([next_circ]), 0.0)
        next_circ += 1
    s.set_pieces(pieces, PS, have)
    stored: list[int] = []
    now = 0.0
    for kind, pick in events:
        now += 1.0
        for r in [a for a in s.schedule(now) if isinstance(a, Request)]:
            assert not set(r.pieces) & have and set(r.pieces) <= s.missing
        live = list(s.queries.values())
        q = live[pick % len(live)] if live else None
        if kind == "good" and q is not None:
            s.connected(q.id, now)
            s.received(q.id, q.count * PS, now)
            for i in q.pieces:
                if s.accept(q.id, i):
                    s.verified(i)
                    stored.append(i)
            s.finished(q.id, now)
        elif kind == "bad" and q is not None:
            s.bad_piece(q.id, now)
        elif kind == "stall":
            now += FIRST_ANSWER_WITHIN + 1
        elif kind == "end" and q is not None:
            s.ended(q.id, pick % 7, now)
        elif kind == "close" and q is not None:
            s.circuit_closed(q.circ)
        elif kind == "add":
            s.add_circuit(next_circ, bytes([next_circ % 256]), now)
            next_circ += 1
        elif kind == "police":
            s.police(now)
        counted: dict[int, int] = {}
        for q in s.queries.values():
            assert q.id in s.circuits[q.circ].queries
            for i in q.pieces:
                counted[i] = counted.get(i, 0) + 1
        assert counted == s.inflight
        assert all(n <= 2 for n in counted.values())  # at most one end-game copy
    assert len(stored) == len(set(stored))  # no piece stored twice
    assert s.missing == set(range(pieces)) - have - set(stored)
