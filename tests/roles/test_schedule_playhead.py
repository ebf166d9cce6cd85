"""The playhead priority of the fetch scheduler: windows of pieces a stream waits for go first."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.roles.schedule import FetchScheduler, ReportBadPiece, Request
from peer.testing.swarm import Swarm
from storage.chunkstore import ChunkStore
from tests.roles.test_fetch import Net, mine, share, swarm, until
from tests.roles.test_schedule import ORDB, A, B, C, deliver, requests, scheduler

__all__ = ["mine", "swarm"]  # fixtures shared with test_fetch

N = 100
STREAM, OTHER = 1, 2  # window owners


def asked(rs: list[Request]) -> list[tuple[int, int]]:
    return [(r.first, r.count) for r in rs]


def busy_a(s: FetchScheduler) -> list[Request]:
    """Circuit A alone fills both its slots with the contiguous prefix (4 pieces each: no rate yet)."""
    rs = requests(s.schedule(0.0))
    assert asked(rs) == [(0, 4), (4, 4)]
    return rs


def test_a_window_at_80_percent_goes_before_the_contiguous_prefix() -> None:
    s = scheduler([A], N)
    inflight = busy_a(s)
    s.set_window(STREAM, 80, 89, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    out = s.schedule(1.0)
    assert asked(requests(out)) == [(80, 4), (84, 4)]  # no EndQuery: the prefix in flight goes on
    assert all(r.circ == B for r in requests(out))
    assert set(s.queries) == {r.query for r in inflight} | {r.query for r in requests(out)}


def test_pieces_in_flight_are_not_asked_again_for_a_window() -> None:
    s = scheduler([A], N)
    busy_a(s)  # 0..7 in flight
    s.set_window(STREAM, 2, 9, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    rs = requests(s.schedule(1.0))
    # only the window's idle pieces, then the contiguous order resumes after them
    assert asked(rs) == [(8, 2), (10, 4)]


def test_clearing_the_window_returns_to_the_contiguous_order() -> None:
    s = scheduler([A], N)
    busy_a(s)
    s.set_window(STREAM, 80, 89, 1.0)
    s.add_circuit(B, ORDB[B], 1.0)
    w1, _ = requests(s.schedule(1.0))
    s.clear_window(STREAM)
    deliver(s, w1, 2.0)  # the window's queries were not cancelled: they finish and store
    assert {80, 81, 82, 83}.isdisjoint(s.missing)
    (r,) = requests(s.schedule(3.0))
    assert r.circ == B and r.first == 8  # the lowest missing piece nobody fetches
    assert not s.priority()


def test_the_last_pieces_are_asked_early_when_the_window_flags_them() -> None:
    s = scheduler([A], N, have={0, 1, 2, 3})
    s.set_window(STREAM, 0, 3, 0.0, tail=6)  # the window itself is already stored
    rs = requests(s.schedule(0.0))
    assert asked(rs) == [(94, 4), (98, 2)]
    plain = scheduler([A], N, have={0, 1, 2, 3})
    plain.set_window(STREAM, 0, 3, 0.0)  # not flagged: the contiguous order
    assert asked(requests(plain.schedule(0.0))) == [(4, 4), (8, 4)]


def test_the_newest_window_goes_first_and_a_moved_one_keeps_its_rank() -> None:
    s = scheduler([A], N)
    s.set_window(OTHER, 20, 21, 0.0)
    s.set_window(STREAM, 60, 61, 1.0)  # a seek: a new stream, newer
    s.set_window(OTHER, 30, 31, 2.0)  # the older stream's playhead moves on: still older
    rs = requests(s.schedule(2.0))
    assert asked(rs) == [(60, 2), (30, 2)]


def test_a_bad_piece_under_the_window_is_asked_again_first() -> None:
    s = scheduler([A, B], N)
    s.set_window(STREAM, 50, 53, 0.0)
    rs = requests(s.schedule(0.0))
    (w,) = [r for r in rs if r.first == 50]
    s.connected(w.query, 0.5)
    assert s.urgent(51) and not s.urgent(54)
    assert s.bad_piece(w.query, 1.0) == [ReportBadPiece(w.circ, w.query)]  # the BAD_PIECE rule as before
    (again,) = requests(s.schedule(2.0))  # the slot the bad query held
    assert (again.circ, again.first, again.count) == (w.circ, 50, 4)


def test_end_game_is_unchanged_by_a_window() -> None:
    def endgame(window: bool) -> list[tuple[int, int, int]]:
        s = scheduler([A], 8)
        busy_a(s)  # every piece in flight on A
        if window:
            s.set_window(STREAM, 4, 7, 1.0)
        s.add_circuit(C, ORDB[C], 1.0)
        return [(r.circ, r.first, r.count) for r in requests(s.schedule(1.0))]

    assert endgame(window=True) == endgame(window=False) == [(C, 0, 4), (C, 4, 4)]


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
        for r in requests(actions):
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
