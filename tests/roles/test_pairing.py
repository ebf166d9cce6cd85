"""The ORDB's holder table and pairing decisions (peer/roles/pairing.py), fed events and ``now``:
pairing by txid, failover, BAD_PIECE, the forward counter, the anonymity rule for content we
hold or fetch ourselves, and the quotas (docs/ordb-protocol.md)."""

from __future__ import annotations

import ast
import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.roles import pairing
from peer.roles.pairing import (
    HOLDER_ANSWER_TIMEOUT,
    MAX_ANNOUNCED_PER_STREAM,
    MAX_QUERIES_PER_CIRCUIT,
    ZERO_TXID,
    Acknowledge,
    Action,
    AnswerLocally,
    EndStream,
    Forward,
    Pairing,
    Publish,
    SendConnected,
    SendQuery,
    ServeHere,
    Splice,
)
from peer.wire.ordb import (
    MAX_COUNTER,
    DbConnected,
    DbEnd,
    DbEndReason,
    DbInfo,
    DbQuery,
    DeliveryKind,
    InfoEntry,
    PieceRange,
)

T = TypeVar("T")
HN = bytes(range(32))
OTHER = bytes(range(1, 33))

# streams: (circuit, stream id); holders announce on circuits 10.., requesters ask on 20..
A, B, C = (10, 1), (11, 1), (12, 1)
REQ = (20, 1)


class First:
    """Picks the first candidate: the table's order (announce order) decides."""

    def choice(self, seq: Sequence[T]) -> T:
        return seq[0]


def new_table(*, forward: bool = False, publish: bool = False, rng: object = None) -> Pairing:
    counter = itertools.count(1)
    return Pairing(
        rng or First(),  # type: ignore[arg-type]
        lambda: next(counter).to_bytes(16, "big"),
        forward=forward,
        publish=publish,
    )


def info(*names: bytes, ranges: tuple[tuple[int, int], ...] = ((0, 8),), facilitator: bool = False) -> DbInfo:
    rs = tuple(PieceRange(s, e) for s, e in ranges)
    return DbInfo(tuple(InfoEntry(n, 8, rs) for n in names), facilitator)


def ask(first: int = 0, count: int = 4, counter: int = 0, hn: bytes = HN) -> DbQuery:
    return DbQuery(hn, first, count, counter)


def sent_query(actions: list[Action]) -> SendQuery:
    (a,) = actions
    assert isinstance(a, SendQuery), actions
    return a


def hello(txid: bytes, length: int = 100) -> DbConnected:
    return DbConnected(txid, DeliveryKind.PIECES, 0, 4, length)


def answer_stream(holder: tuple[int, int]) -> tuple[int, int]:
    """The holder's answer stream: a new stream on its announce circuit."""
    return (holder[0], holder[1] + 1)


def paired(t: Pairing, holder: tuple[int, int], req: tuple[int, int] = REQ, **kw: int) -> SendQuery:
    """Ask and check the query went to ``holder``; the holder then opens its answer stream."""
    sq = sent_query(t.query(req, ask(**kw), involved=False, now=0.0))
    assert sq.stream == holder
    acts = t.connected(answer_stream(holder), hello(sq.msg.txid))
    assert acts == [SendConnected(req, hello(ZERO_TXID))]  # the requester never sees the txid
    return sq


# ---- pairing ------------------------------------------------------------------------------------
def test_a_query_goes_to_a_holder_with_the_range_and_the_answer_is_spliced_back() -> None:
    t = new_table()
    t.announced(A, info(HN, ranges=((0, 2),)))  # lacks pieces 2..3
    t.announced(B, info(HN))
    sq = sent_query(t.query(REQ, ask(0, 4, counter=2), involved=False, now=5.0))
    assert sq.stream == B and sq.msg == DbQuery(HN, 0, 4, 2, sq.msg.txid) and sq.msg.txid != ZERO_TXID
    assert t.next_deadline() == 5.0 + HOLDER_ANSWER_TIMEOUT
    src = answer_stream(B)
    assert t.connected(src, hello(sq.msg.txid)) == [SendConnected(REQ, hello(ZERO_TXID))]
    assert t.next_deadline() is None
    assert t.data(src, b"x" * 50) == [Splice(src, REQ, b"x" * 50)]
    assert t.spliced(src, True) == [Acknowledge(src, 1)]
    assert t.source_ended(src, DbEnd(DbEndReason.FINISHED, sq.msg.txid), 6.0) == [
        EndStream(REQ, DbEndReason.FINISHED)
    ]
    assert not t.is_open(REQ) and t.stats["answered"] == 1


def test_the_manifest_is_asked_of_any_holder_and_the_least_loaded_first() -> None:
    t = new_table()
    t.announced(A, info(HN, ranges=((0, 1),)))
    t.announced(B, info(HN, ranges=((0, 1),)))
    assert sent_query(t.query((20, 1), ask(0, 0), involved=False, now=0.0)).stream == A
    assert sent_query(t.query((20, 2), ask(0, 0), involved=False, now=0.0)).stream == B  # A is busy
    t.requester_ended((20, 1), DbEnd(DbEndReason.FINISHED))  # A is free again
    assert sent_query(t.query((20, 3), ask(0, 0), involved=False, now=0.0)).stream == A


def test_a_facilitator_is_asked_last() -> None:
    t = new_table()
    t.announced(A, info(HN, facilitator=True))
    t.announced(B, info(HN))
    assert sent_query(t.query(REQ, ask(), involved=False, now=0.0)).stream == B


def test_the_choice_among_equals_is_the_rngs() -> None:
    picks = set()
    for seed in range(20):
        t = new_table(rng=random.Random(seed))
        t.announced(A, info(HN))
        t.announced(B, info(HN))
        picks.add(sent_query(t.query(REQ, ask(), involved=False, now=0.0)).stream)
    assert picks == {A, B}


def test_an_unknown_or_stale_answer_is_ended() -> None:
    t = new_table()
    t.announced(A, info(HN))
    sq = sent_query(t.query(REQ, ask(), involved=False, now=0.0))
    stray = bytes(range(16))
    assert t.connected((10, 9), hello(stray)) == [EndStream((10, 9), DbEndReason.FINISHED, stray)]
    t.requester_ended(REQ, DbEnd(DbEndReason.FINISHED))  # the requester left before the holder answered
    assert t.connected(answer_stream(A), hello(sq.msg.txid)) == [
        EndStream(answer_stream(A), DbEndReason.FINISHED, sq.msg.txid)
    ]
    assert t.holders[HN][0].load == 0


def test_the_requester_leaving_tells_the_holder_and_frees_it() -> None:
    t = new_table()
    t.announced(A, info(HN))
    sq = paired(t, A)
    assert t.holders[HN][0].load == 1
    assert t.requester_ended(REQ, DbEnd(DbEndReason.FINISHED)) == [
        EndStream(answer_stream(A), DbEndReason.FINISHED, sq.msg.txid)
    ]
    assert t.holders[HN][0].load == 0 and not t.owns(REQ) and not t.is_source(answer_stream(A))
    assert t.data(answer_stream(A), b"late") == []


def test_back_pressure_withholds_acknowledgements_until_the_requester_drains() -> None:
    t = new_table()
    t.announced(A, info(HN))
    paired(t, A)
    src = answer_stream(A)
    for _ in range(3):
        t.data(src, b"x")
        assert t.spliced(src, False) == []  # the requester's side is full
    assert t.writable(REQ) == [Acknowledge(src, 3)]
    assert t.writable(REQ) == []
    t.data(src, b"x")
    t.spliced(src, False)
    t.data(src, b"x")
    assert t.spliced(src, True) == [Acknowledge(src, 2)]  # the withheld one goes with it


# ---- BAD_PIECE ----------------------------------------------------------------------------------
def test_a_lying_holder_reported_after_its_answer_is_dropped_for_that_hash_name_only() -> None:
    t = new_table()
    t.announced(A, info(HN, OTHER))  # the liar, first in the table: asked first
    t.announced(B, info(HN))
    sq = paired(t, A)
    t.data(answer_stream(A), b"lie")
    t.source_ended(answer_stream(A), DbEnd(DbEndReason.FINISHED, sq.msg.txid), 1.0)
    assert t.requester_ended(REQ, DbEnd(DbEndReason.BAD_PIECE)) == []  # late: the splice is over
    assert [h.stream for h in t.holders[HN]] == [B]
    assert [h.stream for h in t.holders[OTHER]] == [A]  # its other hash_names stay
    assert HN not in t.announce[A] and OTHER in t.announce[A]
    assert t.stats["bad_piece_drops"] == 1
    paired(t, B, req=(20, 2))  # the next query goes to the other holder


def test_a_lying_holder_reported_during_its_answer_is_dropped_and_told() -> None:
    t = new_table()
    t.announced(A, info(HN))
    t.announced(B, info(HN))
    sq = paired(t, A)
    t.data(answer_stream(A), b"lie")
    assert t.requester_ended(REQ, DbEnd(DbEndReason.BAD_PIECE)) == [
        EndStream(answer_stream(A), DbEndReason.BAD_PIECE, sq.msg.txid)
    ]
    assert [h.stream for h in t.holders[HN]] == [B]
    paired(t, B, req=(20, 2))


def test_the_last_holder_dropped_empties_the_hash_name() -> None:
    t = new_table()
    t.announced(A, info(HN))
    paired(t, A)
    t.requester_ended(REQ, DbEnd(DbEndReason.BAD_PIECE))
    assert HN not in t.holders
    assert t.query((20, 2), ask(), involved=False, now=0.0) == [EndStream((20, 2), DbEndReason.UNAVAILABLE)]


def test_another_end_reason_drops_nobody() -> None:
    t = new_table()
    t.announced(A, info(HN))
    paired(t, A)
    t.requester_ended(REQ, DbEnd(DbEndReason.FINISHED))
    assert t.requester_ended(REQ, DbEnd(DbEndReason.BAD_PIECE)) == []  # the query is over and forgotten
    assert [h.stream for h in t.holders[HN]] == [A]


# ---- failover -----------------------------------------------------------------------------------
BREAKS = ["destroyed", "unavailable", "answer circuit closed", "no answer in time", "holder circuit closed"]


@pytest.mark.parametrize("how", BREAKS)
def test_a_holder_that_breaks_before_any_data_hands_the_query_to_another(how: str) -> None:
    t = new_table()
    t.announced(A, info(HN))
    t.announced(B, info(HN))
    first = sent_query(t.query(REQ, ask(), involved=False, now=0.0))
    assert first.stream == A
    src = answer_stream(A)
    if how in ("destroyed", "unavailable", "answer circuit closed"):
        t.connected(src, hello(first.msg.txid))
    if how == "destroyed":
        acts = t.source_ended(src, DbEnd(DbEndReason.DESTROYED, first.msg.txid), 1.0)
    elif how == "unavailable":
        acts = t.source_ended(src, DbEnd(DbEndReason.UNAVAILABLE, first.msg.txid), 1.0)
    elif how == "no answer in time":
        assert t.timeouts(HOLDER_ANSWER_TIMEOUT - 0.5) == []
        acts = t.timeouts(HOLDER_ANSWER_TIMEOUT)
    else:
        acts = t.circuit_closed(A[0], 1.0)
    second = sent_query(acts)
    assert second.stream == B and second.msg.txid != first.msg.txid
    assert t.connected(answer_stream(B), hello(second.msg.txid)) == [SendConnected(REQ, hello(ZERO_TXID))]
    assert t.holders[HN][0].load == 0 or how.endswith("closed")


def test_a_late_answer_from_a_holder_that_timed_out_gets_reset() -> None:
    t = new_table()
    t.announced(A, info(HN))
    t.announced(B, info(HN))
    first = sent_query(t.query(REQ, ask(), involved=False, now=0.0))
    t.timeouts(100.0)
    assert t.connected(answer_stream(A), hello(first.msg.txid)) == [
        EndStream(answer_stream(A), DbEndReason.RESET, first.msg.txid)
    ]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("finished", DbEndReason.FINISHED),
        ("destroyed", DbEndReason.DESTROYED),
        ("circuit", DbEndReason.DESTROYED),
    ],
)
def test_after_data_was_delivered_the_query_ends_instead(how: str, reason: int) -> None:
    t = new_table()
    t.announced(A, info(HN))
    t.announced(B, info(HN))
    sq = paired(t, A)
    t.data(answer_stream(A), b"part")
    if how == "circuit":
        acts = t.circuit_closed(A[0], 1.0)
    else:
        acts = t.source_ended(answer_stream(A), DbEnd(reason, sq.msg.txid), 1.0)
    assert acts == [EndStream(REQ, reason)]  # the requester re-asks the missing pieces elsewhere
    assert not t.is_open(REQ)


def test_when_every_holder_failed_the_query_is_unavailable_and_not_forwarded() -> None:
    t = new_table(forward=True)
    t.announced(A, info(HN))
    first = sent_query(t.query(REQ, ask(), involved=False, now=0.0))
    t.connected(answer_stream(A), hello(first.msg.txid))
    acts = t.source_ended(answer_stream(A), DbEnd(DbEndReason.UNAVAILABLE, first.msg.txid), 1.0)
    assert acts == [EndStream(REQ, DbEndReason.UNAVAILABLE)]
    assert t.stats["unavailable"] == 1


# ---- forwarding and the loop counter ------------------------------------------------------------
@pytest.mark.parametrize("counter", range(MAX_COUNTER + 1))
def test_a_query_with_no_local_holder_is_forwarded_with_counter_plus_one_below_5(counter: int) -> None:
    t = new_table(forward=True)
    acts = t.query(REQ, ask(counter=counter), involved=False, now=0.0)
    if counter + 1 < MAX_COUNTER:  # accepted up to a forward at 4
        assert acts == [Forward(REQ, ask(counter=counter + 1))]
        assert acts[0].msg.txid == ZERO_TXID  # type: ignore[union-attr]
    else:  # a forward at 5 is refused
        assert acts == [EndStream(REQ, DbEndReason.LOOP)]


def test_forwarding_refused_at_5_and_accepted_at_4() -> None:
    t = new_table(forward=True)
    assert t.query((20, 1), ask(counter=3), involved=False, now=0.0) == [Forward((20, 1), ask(counter=4))]
    assert t.query((20, 2), ask(counter=4), involved=False, now=0.0) == [EndStream((20, 2), DbEndReason.LOOP)]


def test_a_local_holder_is_paired_whatever_the_counter() -> None:
    t = new_table(forward=True)
    t.announced(A, info(HN))
    sq = sent_query(t.query(REQ, ask(counter=MAX_COUNTER), involved=False, now=0.0))
    assert sq.msg.counter == MAX_COUNTER  # unchanged toward a holder


def test_without_a_way_to_forward_the_query_is_unavailable() -> None:
    t = new_table(forward=False)
    assert t.query(REQ, ask(), involved=False, now=0.0) == [EndStream(REQ, DbEndReason.UNAVAILABLE)]


def test_a_forwarded_answer_is_spliced_and_a_bad_piece_passed_on() -> None:
    t = new_table(forward=True)
    t.query(REQ, ask(counter=1), involved=False, now=0.0)
    fwd = (30, 1)
    assert t.forwarded(REQ, fwd) == [] and t.stats["forwarded"] == 1
    assert t.connected(fwd, hello(ZERO_TXID)) == [SendConnected(REQ, hello(ZERO_TXID))]
    assert t.data(fwd, b"abc") == [Splice(fwd, REQ, b"abc")]
    # open: the report goes down the forward stream, so the ORDB that indexes the liar drops it
    assert t.requester_ended(REQ, DbEnd(DbEndReason.BAD_PIECE)) == [EndStream(fwd, DbEndReason.BAD_PIECE)]
    # late: the same, once the forward stream ended
    t.query((20, 2), ask(counter=1), involved=False, now=0.0)
    t.forwarded((20, 2), (30, 2))
    t.data((30, 2), b"abc")
    assert t.source_ended((30, 2), DbEnd(DbEndReason.FINISHED), 1.0) == [
        EndStream((20, 2), DbEndReason.FINISHED)
    ]
    assert t.requester_ended((20, 2), DbEnd(DbEndReason.BAD_PIECE)) == [
        EndStream((30, 2), DbEndReason.BAD_PIECE)
    ]


def test_a_forward_that_failed_or_came_too_late() -> None:
    t = new_table(forward=True)
    t.query(REQ, ask(), involved=False, now=0.0)
    assert t.forward_failed(REQ) == [EndStream(REQ, DbEndReason.UNAVAILABLE)]
    assert t.forward_failed(REQ) == []
    t.query((20, 2), ask(), involved=False, now=0.0)
    t.requester_ended((20, 2), DbEnd(DbEndReason.FINISHED))
    assert t.forwarded((20, 2), (30, 1)) == [EndStream((30, 1), DbEndReason.FINISHED)]


def test_a_forwarded_query_is_forwarded_once() -> None:
    t = new_table(forward=True)
    t.query(REQ, ask(), involved=False, now=0.0)
    t.forwarded(REQ, (30, 1))
    acts = t.source_ended((30, 1), DbEnd(DbEndReason.UNAVAILABLE), 1.0)
    assert acts == [EndStream(REQ, DbEndReason.UNAVAILABLE)]


# ---- content we hold or fetch ourselves: never forwarded ----------------------------------------
def test_an_involved_ordb_serves_from_its_own_store() -> None:
    t = new_table(forward=True)
    assert t.query(REQ, ask(counter=0), involved=True, now=0.0) == [AnswerLocally(REQ, ask())]
    assert t.local_checked(REQ, True, 0.0) == [ServeHere(REQ, ask())]
    assert t.is_open(REQ)
    t.local_served(REQ)
    assert not t.is_open(REQ) and t.stats["answered"] == 1


@pytest.mark.parametrize("holders", ["none", "lacking the range", "failed"])
def test_an_involved_ordb_that_cannot_serve_never_forwards(holders: str) -> None:
    t = new_table(forward=True)
    if holders == "lacking the range":
        t.announced(A, info(HN, ranges=((6, 8),)))
    elif holders == "failed":
        t.announced(A, info(HN))
    t.query(REQ, ask(counter=0), involved=True, now=0.0)
    acts = t.local_checked(REQ, False, 0.0)
    if holders == "failed":
        acts = t.circuit_closed(sent_query(acts).stream[0], 1.0)
    assert acts == [EndStream(REQ, DbEndReason.UNAVAILABLE)]
    assert not any(isinstance(a, Forward) for a in acts)


def test_an_involved_ordb_pairs_with_another_holder_that_announced_to_it() -> None:
    t = new_table(forward=True)
    t.announced(A, info(HN))
    t.query(REQ, ask(), involved=True, now=0.0)
    assert sent_query(t.local_checked(REQ, False, 0.0)).stream == A


def test_a_requester_gone_before_the_local_check_is_forgotten() -> None:
    t = new_table()
    t.query(REQ, ask(), involved=True, now=0.0)
    t.requester_ended(REQ, DbEnd(DbEndReason.FINISHED))
    assert t.local_checked(REQ, True, 0.0) == []


# ---- quotas and circuits ------------------------------------------------------------------------
def test_an_announce_stream_indexes_at_most_256_hash_names() -> None:
    t = new_table()
    names = [i.to_bytes(32, "big") for i in range(MAX_ANNOUNCED_PER_STREAM + 1)]
    for n in names:
        t.announced(A, info(n))
    assert len(t.announce[A]) == MAX_ANNOUNCED_PER_STREAM and names[-1] not in t.holders
    t.announced(A, info(names[0], ranges=((0, 3),)))  # an update of a known one still counts
    assert t.holders[names[0]][0].ranges == ((0, 3),)
    t.announced((10, 3), info(names[-1]))  # per stream: another stream of the circuit has its own
    assert names[-1] in t.holders


def test_a_circuit_has_at_most_16_open_queries_and_a_stream_one() -> None:
    t = new_table()
    t.announced(A, info(HN))
    for s in range(MAX_QUERIES_PER_CIRCUIT):
        assert isinstance(t.query((20, s + 1), ask(0, 0), involved=False, now=0.0)[0], SendQuery)
    over = (20, 99)
    assert t.query(over, ask(0, 0), involved=False, now=0.0) == [EndStream(over, DbEndReason.OVERLOAD)]
    assert isinstance(t.query((21, 1), ask(0, 0), involved=False, now=0.0)[0], SendQuery)  # another circuit
    assert t.query((21, 1), ask(0, 0), involved=False, now=0.0) == [
        EndStream((21, 1), DbEndReason.UNAVAILABLE)
    ]
    assert t.stats["queries"] == MAX_QUERIES_PER_CIRCUIT + 3


def test_a_closed_holder_circuit_leaves_the_table_and_a_closed_requester_circuit_frees_its_holders() -> None:
    t = new_table()
    t.announced(A, info(HN, OTHER))
    t.announced(B, info(HN))
    sq = paired(t, A)
    assert t.circuit_closed(REQ[0], 1.0) == [EndStream(answer_stream(A), DbEndReason.FINISHED, sq.msg.txid)]
    assert not t.is_open(REQ) and t.holders[HN][0].load == 0
    t.circuit_closed(A[0], 2.0)
    assert [h.stream for h in t.holders[HN]] == [B] and OTHER not in t.holders and A not in t.announce


def test_publish_once_per_hash_name_until_it_gave_up() -> None:
    t = new_table(publish=True)
    assert t.announced(A, info(HN, OTHER)) == [Publish(HN), Publish(OTHER)]
    assert t.announced(B, info(HN)) == []
    t.unpublished(HN)
    assert t.announced(C, info(HN)) == [Publish(HN)]
    assert new_table(publish=False).announced(A, info(HN)) == []


# ---- invariants under any order of events -------------------------------------------------------
EVENT = st.one_of(
    st.tuples(st.just("announce"), st.integers(10, 12), st.booleans()),
    st.tuples(st.just("query"), st.integers(20, 21), st.integers(0, MAX_COUNTER), st.booleans()),
    st.tuples(st.just("answer"), st.integers(0, 3)),
    st.tuples(st.just("data"), st.integers(0, 3)),
    st.tuples(st.just("source end"), st.integers(0, 3), st.sampled_from(list(DbEndReason))),
    st.tuples(st.just("requester end"), st.integers(0, 3), st.sampled_from(list(DbEndReason))),
    st.tuples(st.just("local"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("forwarded"), st.integers(0, 3)),
    st.tuples(st.just("close"), st.integers(10, 21)),
    st.tuples(st.just("tick"), st.floats(0, 30)),
)


def nth(seq: Sequence[T], i: int) -> T | None:
    return seq[-1 - i % len(seq)] if seq else None  # the newest first


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=40))
def test_the_table_stays_consistent(events: list[tuple[object, ...]]) -> None:
    """Holder loads count the open queries on them; paired streams belong to open queries; an
    involved query is never forwarded; a query at counter 4 or more is never forwarded."""
    t = new_table(forward=True)
    sent: list[SendQuery] = []
    sources: list[tuple[int, int]] = []
    streams = itertools.count(1)
    now = 0.0
    for e in events:
        acts: list[Action] = []
        open_queries = list(t.queries.values())
        match e:
            case ("announce", int(c), bool(partial)):
                acts = t.announced((c, 1), info(HN, ranges=((0, 2),) if partial else ((0, 8),)))
            case ("query", int(c), int(counter), bool(involved)):
                acts = t.query((c, next(streams)), ask(counter=counter), involved=involved, now=now)
            case ("answer", int(i)) if (sq := nth(sent, i)) is not None:
                sources.append((sq.stream[0], next(streams)))
                acts = t.connected(sources[-1], hello(sq.msg.txid))
            case ("data", int(i)) if (src := nth(sources, i)) is not None:
                acts = t.data(src, b"d")
            case ("source end", int(i), DbEndReason() as reason) if (src := nth(sources, i)) is not None:
                acts = t.source_ended(src, DbEnd(reason), now)
            case ("requester end", int(i), DbEndReason() as reason) if (
                q := nth(open_queries, i)
            ) is not None:
                acts = t.requester_ended(q.stream, DbEnd(reason))
            case ("local", int(i), bool(has)):
                waiting = [q for q in open_queries if q.local and not q.serving_here and q.holder is None]
                if (q := nth(waiting, i)) is not None:
                    acts = t.local_checked(q.stream, has, now)
            case ("forwarded", int(i)):
                fwd = [q for q in open_queries if q.forward_tried and q.source is None]
                if (q := nth(fwd, i)) is not None:
                    sources.append((40, next(streams)))
                    acts = t.forwarded(q.stream, sources[-1])
            case ("close", int(c)):
                acts = t.circuit_closed(c, now)
            case ("tick", float(dt)):
                now += dt
                acts = t.timeouts(now)
        for a in acts:
            if isinstance(a, SendQuery):
                sent.append(a)
            if isinstance(a, Forward):
                q = t.queries[a.stream]
                assert not q.local and q.msg.counter + 1 < MAX_COUNTER and not q.tried
                assert a.msg.counter == q.msg.counter + 1
        for lst in t.holders.values():
            for h in lst:
                assert h.load == sum(1 for q in t.queries.values() if q.holder is h), h
        for q in t.by_source.values():
            assert t.queries.get(q.stream) is q
        for q in t.by_txid.values():
            assert t.queries.get(q.stream) is q and q.source is None
        assert all(lst for lst in t.holders.values())


def test_the_table_does_no_io_reads_no_clock_and_draws_no_randomness_of_its_own() -> None:
    """The sans-I/O contract of pyproject.toml (peer.wire, peer.crypto, peer.proto), for this module."""
    forbidden = {"asyncio", "socket", "ssl", "sqlite3", "aiosqlite", "selectors", "time", "random"}
    forbidden |= {"secrets", "os", "threading", "logging", "peer.net", "peer.proto.node"}
    tree = ast.parse(Path(pairing.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and not {m for m in imported for f in forbidden if m == f or m.startswith(f + ".")}


def test_a_forward_stream_that_opens_after_a_holder_took_the_query_is_closed() -> None:
    """Found by the property test above: a forward answered UNAVAILABLE fails over to a holder
    announced meanwhile; a second forward stream opening late must not be spliced in as well."""
    t = new_table(forward=True)
    (fwd,) = t.query((20, 1), ask(), involved=False, now=0.0)
    assert isinstance(fwd, Forward)
    t.announced((10, 1), info(HN))
    assert t.forwarded((20, 1), (40, 2)) == []
    (send,) = t.source_ended((40, 2), DbEnd(DbEndReason.UNAVAILABLE), 1.0)
    assert isinstance(send, SendQuery) and send.stream == (10, 1)  # the holder announced meanwhile
    assert t.forwarded((20, 1), (40, 3)) == [EndStream((40, 3), DbEndReason.FINISHED)]
    assert (40, 3) not in t.by_source and t.queries[(20, 1)].source is None
