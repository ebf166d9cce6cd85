"""The playhead priority of the fetch scheduler: windows of pieces a stream waits for go first."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.roles import schedule
from peer.roles.schedule import EndQuery, FetchScheduler, ReportBadPiece, Request
from peer.testing.swarm import Swarm
from peer.wire.ordb import DbEndReason
from storage.chunkstore import ChunkStore
from tests.roles.test_fetch import Net, mine, share, swarm, until
from tests.roles.test_schedule import ORDB, PS, A, B, C, deliver, requests, scheduler

__all__ = ["mine", "swarm"]  # fixtures shared with test_fetch

N = 100
STREAM, OTHER = 1, 2  # window owners


@pytest.fixture
def runs_as_wide_as_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """No one-piece queries near a playhead: these tests are about which pieces, not how many per query."""
    monkeypatch.setattr(schedule, "NEAR_BYTES", 0)


def asked(rs: list[Request]) -> list[tuple[int, int]]:
    return [(r.first, r.count) for r in rs]


def busy_a(s: FetchScheduler) -> list[Request]:
    """Circuit A alone fills both its slots with the contiguous prefix (4 pieces each: no rate yet)."""
    rs = requests(s.schedule(0.0))
    assert asked(rs) == [(0, 4), (4, 4)]
    return rs


@pytest.mark.usefixtures("runs_as_wide_as_the_rate")
def test_a_seek_to_80_percent_ends_the_prefix_in_flight_and_asks_its_first_piece_alone() -> None:
    s = scheduler([A], N)
    inflight = busy_a(s)
    s.set_window(STREAM, 80, 89, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    out = s.schedule(1.0)
    # the queries that would share the holder's upload with piece 80 end; the rush: 80 alone, then 81..83
    assert out[:2] == [EndQuery(A, r.query, DbEndReason.FINISHED) for r in inflight]
    rush = requests(out[2:])
    assert asked(rush) == [(80, 1), (81, 3)] and {r.circ for r in rush} == {A, B}
    assert s.preempted == 2 and not s.inflight.keys() - set(range(80, 84))
    assert s.schedule(1.5) == []  # nothing else until the rush is in
    for r in rush:
        deliver(s, r, 1.5)
    # then the rest of the window, then the prefix that was ended
    after = asked(requests(s.schedule(3.0)))
    assert after[0][0] == 84 and sum(n for _, n in after[:2]) == 6 and after[2][0] == 0, after


@pytest.mark.usefixtures("runs_as_wide_as_the_rate")
def test_a_window_moving_on_with_its_playhead_ends_nothing() -> None:
    s = scheduler([A], N)
    s.set_window(STREAM, 0, 9, 0.0)
    for r in requests(s.schedule(0.0)):
        deliver(s, r, 0.0)  # the rush of Play: 0, then 1..3
    inflight = requests(s.schedule(1.0))
    assert asked(inflight) == [(4, 4), (8, 2)]
    s.set_window(STREAM, 10, 19, 2.0)  # the stream wrote on to the window's end: it moves, no jump
    assert s.schedule(2.0) == [] and all(r.query in s.queries for r in inflight)
    assert s.preempted == 0


def test_near_a_playhead_each_query_asks_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder shares its upload between queries: one piece per query near the playhead makes the
    pieces come in order, at the holder's whole pace; farther on, runs as wide as the rate."""
    monkeypatch.setattr(schedule, "NEAR_BYTES", 3 * PS)
    s = scheduler([A, B, C], N, have={40})  # the playhead's piece is held: no rush
    s.set_window(STREAM, 40, 59, 0.0)
    assert asked(requests(s.schedule(0.0))) == [(41, 1), (42, 1), (43, 4), (47, 4), (51, 4), (55, 4)]


def test_a_jump_to_pieces_already_held_ends_nothing() -> None:
    s = scheduler([A], N, have={80})
    inflight = busy_a(s)
    s.set_window(STREAM, 80, 89, 1.0)  # the player waits on nothing: no rush
    assert s.schedule(1.0) == [] and all(r.query in s.queries for r in inflight)


@pytest.mark.usefixtures("runs_as_wide_as_the_rate")
def test_a_rush_pieces_in_flight_are_not_asked_again() -> None:
    s = scheduler([A], N)
    inflight = busy_a(s)  # 0..7 in flight
    s.set_window(STREAM, 2, 9, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    # 2..5 (the rush) are coming: nothing ends, nothing else is asked until they are in
    assert s.schedule(1.0) == [] and s.preempted == 0
    for r in inflight:
        deliver(s, r, 1.5)
    # the window's idle pieces, then the contiguous order resumes after them
    assert asked(requests(s.schedule(2.0))) == [(8, 2), (10, 4), (14, 4), (18, 4)]


def test_clearing_the_window_ends_its_rush_and_returns_to_the_contiguous_order() -> None:
    s = scheduler([A], N)
    busy_a(s)
    s.set_window(STREAM, 80, 89, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    w1, _ = requests(s.schedule(1.0)[2:])
    s.clear_window(STREAM)
    assert not s.rush
    deliver(s, w1, 2.0)  # the window's queries were not cancelled: they finish and store
    assert 80 not in s.missing
    r = requests(s.schedule(3.0))[0]
    assert r.first == 0  # the lowest missing piece nobody fetches
    assert not s.priority()


def test_the_last_pieces_are_asked_early_when_the_window_flags_them() -> None:
    s = scheduler([A], N, have={0, 1, 2, 3})
    s.set_window(STREAM, 0, 3, 0.0, tail=6)  # the window itself is already stored
    rs = requests(s.schedule(0.0))
    assert asked(rs) == [(94, 4), (98, 2)]
    plain = scheduler([A], N, have={0, 1, 2, 3})
    plain.set_window(STREAM, 0, 3, 0.0)  # not flagged: the contiguous order
    assert asked(requests(plain.schedule(0.0))) == [(4, 4), (8, 4)]


@pytest.mark.usefixtures("runs_as_wide_as_the_rate")
def test_the_newest_window_goes_first_and_a_moved_one_keeps_its_rank() -> None:
    s = scheduler([A], N, have={20, 21, 30, 31, 60, 61})  # first pieces held: no rush
    s.set_window(OTHER, 20, 25, 0.0)
    s.set_window(STREAM, 60, 65, 1.0)  # a seek: a new stream, newer
    s.set_window(OTHER, 30, 35, 2.0)  # the older stream's playhead moves on: still older
    rs = requests(s.schedule(2.0))
    assert asked(rs) == [(62, 4), (32, 4)]


def test_the_newest_jump_has_the_rush() -> None:
    s = scheduler([A, B], N)
    s.set_window(OTHER, 20, 29, 0.0)
    s.set_window(STREAM, 60, 69, 1.0)
    assert s.rush == [60, 61, 62, 63]
    assert asked(requests(s.schedule(1.0))) == [(60, 1), (61, 3)]


def test_a_bad_piece_under_the_window_is_asked_again_first() -> None:
    s = scheduler([A, B], N)
    s.set_window(STREAM, 50, 53, 0.0)
    rs = requests(s.schedule(0.0))
    (w,) = [r for r in rs if r.first == 50]
    s.connected(w.query, 0.5)
    assert s.urgent(51) and not s.urgent(54)
    assert s.bad_piece(w.query, 1.0) == [ReportBadPiece(w.circ, w.query)]  # the BAD_PIECE rule as before
    (again,) = requests(s.schedule(2.0))  # still the rush: the piece alone
    assert (again.first, again.count) == (50, 1)


def test_end_game_is_unchanged_by_a_window() -> None:
    def endgame(window: bool) -> list[tuple[int, int, int]]:
        s = scheduler([A], 8, have={4})
        assert asked(requests(s.schedule(0.0))) == [(0, 4), (5, 3)]  # every piece in flight on A
        if window:
            s.set_window(STREAM, 4, 7, 1.0)  # its first piece is held: no rush
        s.add_circuit(C, ORDB[C], 1.0)
        return [(r.circ, r.first, r.count) for r in requests(s.schedule(1.0))]

    assert endgame(window=True) == endgame(window=False) == [(C, 0, 4), (C, 5, 3)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    windows=st.lists(st.tuples(st.integers(-5, 70), st.integers(0, 20), st.integers(0, 8)), max_size=6),
)
def test_windows_never_duplicate_a_piece_outside_the_end_game(
    seed: int, windows: list[tuple[int, int, int]]
) -> None:
    """Whatever windows come and go, each piece is asked once until the end-game, and all arrive."""
    rng = random.Random(seed)
    n = 64
    s = scheduler([A, B, C], n)
    stored: list[int] = []
    open_: list[Request] = []
    now = 1.0
    moves = list(windows)
    for _ in range(1000):
        if moves and rng.random() < 0.5:
            first, span, tail = moves.pop()
            owner = rng.randrange(3)
            if span == 0:
                s.clear_window(owner)
            else:
                s.set_window(owner, first, first + span, now, tail)
        actions = s.schedule(now)
        if s.done:
            break
        ended = {a.query for a in actions if isinstance(a, EndQuery)}  # a rush ends what competes
        open_ = [o for o in open_ if o.query not in ended]
        for r in [a for a in actions if isinstance(a, Request)]:
            if not s.queries[r.query].duplicate:
                for o in open_:
                    assert set(r.pieces).isdisjoint(o.pieces), (r, o)
            open_.append(r)
        if open_:
            r = open_.pop(rng.randrange(len(open_)))
            stored += deliver(s, r, now)
        now += 1.0
    assert s.done
    assert sorted(stored) == list(range(n))


# ---- the same through a real Download on an in-memory onion swarm ---------------------------------
async def test_a_downloads_window_is_what_its_first_query_asks(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path)  # 31 pieces
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    d = net.download(mine, hn)
    d.want(STREAM, 20, 25)  # a stream asks before the manifest is known: kept until it is
    progress = await asyncio.wait_for(d.run(), 60)
    assert progress.state == "verified"
    pieces = [q for q in net.queries if q.count]
    assert pieces[0].first == 20 and pieces[0].first + pieces[0].count <= 26  # within the window
    assert (await mine.read_range(hn, 0, len(data))).data == data
    d.unwant(STREAM)
    assert not d.sched.windows
    await net.holder.close()


def test_a_playheads_first_pieces_go_to_circuits_that_have_delivered() -> None:
    """A circuit that has brought nothing yet (its ORDB may still look for a holder) gets the
    later pieces, not the median rate's place among those that deliver."""
    s = scheduler([A, C], N, have={40})
    for r in requests(s.schedule(0.0)):
        deliver(s, r, 0.0, 4.0 if r.circ == A else 1.0)  # both rated: C four times A
    s.add_circuit(B, ORDB[B], 5.0)  # newer, nothing delivered
    s.set_window(STREAM, 40, 59, 5.0)  # held: no rush
    rs = requests(s.schedule(5.0))
    assert [r.circ for r in rs] == [C, C, A, A, B, B], rs
