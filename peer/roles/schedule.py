"""The requester's fetch decisions, sans-I/O (DESIGN §5-6, docs/ordb-protocol.md).

:class:`FetchScheduler` is told what happens on one download's circuits (a circuit built or
closed, a query answered, a piece verified or not) together with ``now``, and returns actions
(:data:`Action`) that :class:`peer.roles.fetch.Download` carries out on the onion core.  It
owns the missing pieces, the queries in flight on each circuit, each circuit's delivery rate,
the replacement of slow or stalling circuits, the end-game and the BAD_PIECE policy.  It does
no I/O, reads no clock, and draws only from the rng it is given.

Pieces are asked in contiguous order, except those under a playhead (:meth:`FetchScheduler.set_window`,
set by a stream): the pieces of every window (the newest window first), then the share's last
pieces when a window asks for them (an MP4 index often sits there), then the rest in order.
Moving or clearing a window ends no query: pieces in flight are never asked again for it.

A window that jumps (a new one, or one moved outside its old span: Play, a seek) whose first piece
is missing starts a *rush*: its first :data:`RUSH_BYTES` (at most :data:`RUSH_PIECES` pieces) are all that is asked until they are
verified (the first piece alone in one query, so that it comes first), and every query in flight
that holds none of them is ended at once.  A holder shares its upload between the queries it
answers, so without that the piece a player waits for would come at the pace of a tenth of the
holder's upload, behind a few seconds of pieces asked before the jump.  What a rush ends costs at
most the piece each ended query was in the middle of (ended queries are counted in ``preempted``); the pieces
those queries had brought are kept, and the rest go back to the queue.

Queries are named by the scheduler's own ids (``Request.query``); the stream id the onion core
gives a query is the caller's business.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Protocol

from peer.errors import WireError
from peer.wire.ordb import DbEndReason

SLOTS_PER_CIRCUIT = 2  # queries in flight per circuit: the next is asked before the current one ends
MAX_BLOCK = 32  # pieces per query
STALL_AFTER = 8.0  # seconds without data before a query is abandoned
FIRST_ANSWER_WITHIN = 30.0  # seconds for the first DB_CONNECTED of a query
SLOW_FACTOR = 0.3  # a circuit slower than this fraction of the median circuit is replaced
MIN_AGE_FOR_SLOW = 4.0  # seconds a circuit has before it can be called slow
MAX_FAILURES = 2  # stalls, bad pieces, malformed or refused deliveries before a circuit is replaced
NO_CIRCUIT_GIVE_UP = 30.0  # seconds with no working circuit before the download fails
RETIRE_COOLDOWN = 10.0  # seconds before a download goes back to an ORDB whose circuit it retired
COUNTERS = 3  # a requester's loop counter is picked at random in 0..2 (DESIGN §6)
UNAVAILABLE_PAUSE = 0.5  # seconds a circuit waits after an UNAVAILABLE before its next query (doubling)
UNAVAILABLE_PAUSE_MAX = 8.0  # the longest such pause
UNAVAILABLE_LIMIT = 2  # UNAVAILABLE answers from one ORDB before the download avoids it (if others deliver)
UNAVAILABLE_COOLDOWN = 60.0  # seconds such an ORDB is avoided
MIN_RATED = 2  # finished queries a circuit needs before it can be called slow
RUSH_BYTES = 256 << 10  # the bytes from a jumping window's first piece asked before anything else
RUSH_PIECES = 4  # and at most this many pieces
NEAR_BYTES = 2 << 20  # a window's first bytes are asked one piece per query (they arrive in order)


class Rng(Protocol):
    def randrange(self, start: int, stop: int, /) -> int: ...


# ---- actions -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """Open a query stream on ``circ`` with DB_QUERY(first, count, counter); count 0: the manifest."""

    circ: int
    query: int
    first: int
    count: int
    counter: int

    @property
    def pieces(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True, slots=True)
class EndQuery:
    """Forget a query; send DB_END ``reason`` on its stream unless ``reason`` is None (already over)."""

    circ: int
    query: int
    reason: DbEndReason | None


@dataclass(frozen=True, slots=True)
class ReportBadPiece:
    """End a query with DB_END BAD_PIECE: its ORDB drops the holder that served it."""

    circ: int
    query: int


@dataclass(frozen=True, slots=True)
class ReplaceCircuit:
    """Destroy ``circ``; a circuit to another ORDB takes its place."""

    circ: int
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """Every piece is verified."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The download cannot go on."""

    reason: str


Action = Request | EndQuery | ReportBadPiece | ReplaceCircuit | Done | GiveUp


# ---- state ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """Pieces ``first..last`` (inclusive) wanted before the contiguous order, and the share's last
    ``tail`` pieces after them; ``rank`` orders windows, the newest first."""

    first: int
    last: int
    tail: int
    rank: tuple[float, int]


@dataclass(eq=False)
class Query:
    id: int
    circ: int
    first: int
    count: int  # 0 for the manifest
    sent: float
    last_data: float
    connected: float | None = None
    got: int = 0  # bytes of the current delivery
    duplicate: bool = False  # an end-game query
    solo: bool = False  # asked in a rush, with the holder's upload to itself: its rate is not comparable

    @property
    def pieces(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(eq=False)
class FetchCircuit:
    circ: int
    ordb: bytes
    created: float
    queries: dict[int, Query] = field(default_factory=dict)
    rate: float | None = None  # bytes/s, smoothed
    rtt: float | None = None  # seconds, smoothed
    bytes: int = 0
    failures: int = 0
    retired: bool = False
    unavailable: int = 0  # UNAVAILABLE answers to piece queries on this circuit
    not_before: float = 0.0  # no new query before this time (paced after an UNAVAILABLE)
    rated: int = 0  # finished queries that measured the rate
    checked_bytes: int = 0  # ``bytes`` at the last police round

    @property
    def measured(self) -> bool:
        return self.rate is not None and self.rated >= MIN_RATED

    def observe_rate(self, r: float) -> None:
        self.rated += 1
        self.rate = r if self.rate is None else 0.7 * self.rate + 0.3 * r

    def observe_rtt(self, r: float) -> None:
        self.rtt = r if self.rtt is None else 0.8 * self.rtt + 0.2 * r


class FetchScheduler:
    """What one download asks of which circuit, and which circuits it gives up."""

    def __init__(self, rng: Rng) -> None:
        self.rng = rng
        self.circuits: dict[int, FetchCircuit] = {}
        self.queries: dict[int, Query] = {}
        self.used_ordbs: set[bytes] = set()
        self.cooldown: dict[bytes, float] = {}  # ORDB -> not before this time
        self.missing: set[int] = set()
        self.inflight: dict[int, int] = {}  # piece -> number of queries asking for it
        self.piece_size = 0  # 0 until the manifest is known
        self.piece_count = 0
        self.windows: dict[int, Window] = {}  # by owner (a stream)
        self._window_seq = 0
        self.bad_pieces = 0
        self.replaced = 0
        self._ids = 0
        self._no_circuit_since: float | None = None
        self.unavailable: dict[bytes, int] = {}  # ORDB -> UNAVAILABLE answers to piece queries
        self.reasons: dict[str, int] = {}  # replacements by reason
        self.delivering: list[int] = []  # circuits that brought data, one count per police round
        self.rush: list[int] = []  # pieces asked before anything else (a window jumped), in order
        self._pending_rush: tuple[int, int] | None = None  # a jump before the manifest was known
        self._preempt = False  # the next schedule() ends the queries holding no rush piece
        self.preempted = 0  # queries ended by a rush

    # ---- circuits --------------------------------------------------------------------------------
    def live(self) -> list[FetchCircuit]:
        return [c for c in self.circuits.values() if not c.retired]

    def add_circuit(self, circ: int, ordb: bytes, now: float) -> None:
        self.used_ordbs.add(ordb)
        self.circuits[circ] = FetchCircuit(circ, ordb, now)

    def avoid(self, now: float) -> set[bytes]:
        """ORDBs a new circuit must not end at: those in use, and those retired a moment ago."""
        busy = {c.ordb for c in self.live()}
        return busy | {o for o, until in self.cooldown.items() if until > now}

    def circuit_closed(self, circ: int) -> list[Action]:
        """The circuit is gone: its queries are forgotten and their pieces go back to the queue."""
        fc = self.circuits.get(circ)
        if fc is None:
            return []
        out: list[Action] = []
        for q in list(fc.queries.values()):
            out += self._drop(q, None)
        fc.retired = True
        return out

    def retire_ordbs(self, ids: Container[bytes], why: str, now: float) -> list[Action]:
        """Replace every circuit that ends at one of ``ids``."""
        out: list[Action] = []
        for fc in self.live():
            if fc.ordb in ids:
                self._retire(fc, why, now, out)
        return out

    def police(self, now: float) -> list[Action]:
        """Abandon stalled queries; replace circuits that keep failing, or much slower than the median one."""
        out: list[Action] = []
        live = self.live()
        for fc in live:
            for q in list(fc.queries.values()):
                # before its first answer a query may be travelling to another ORDB (which may
                # have to open a link first): give it longer than a delivery that went quiet
                limit = STALL_AFTER if q.connected is not None else FIRST_ANSWER_WITHIN
                if now - max(q.sent, q.last_data) > limit:
                    fc.failures += 1
                    out += self._drop(q, DbEndReason.FINISHED)
            if fc.failures >= MAX_FAILURES:
                self._retire(fc, "queries stall", now, out)
        active = {c.circ for c in live if c.bytes > c.checked_bytes}
        for fc in live:
            fc.checked_bytes = fc.bytes
        if self.piece_size and self.missing:
            self.delivering.append(len(active))
        rated = [c for c in live if c.measured and not c.retired]
        if len(rated) >= 3:
            # against the median, not the best: circuits that share one holder's upload see rates
            # that differ by how many queries each had at the holder, not by what the circuit can do
            typical = sorted(c.rate or 0.0 for c in rated)[len(rated) // 2]
            for fc in rated:
                if active == {fc.circ}:
                    continue  # the only circuit bringing data now: replacing it would stop the download
                if (fc.rate or 0.0) < SLOW_FACTOR * typical and now - fc.created > MIN_AGE_FOR_SLOW:
                    self._retire(fc, "much slower than the others", now, out)
                    break  # one at a time
        for circ in [c for c, fc in self.circuits.items() if fc.retired]:
            fc = self.circuits.pop(circ)
            for q in list(fc.queries.values()):
                out += self._drop(q, None)
        return out

    def stranded(self, now: float) -> GiveUp | None:
        """GiveUp once no circuit has worked for ``NO_CIRCUIT_GIVE_UP`` seconds (asked after rebuilding)."""
        if self.live():
            self._no_circuit_since = None
        elif self._no_circuit_since is None:
            self._no_circuit_since = now
        elif now - self._no_circuit_since > NO_CIRCUIT_GIVE_UP:
            return GiveUp("interrupted: every circuit to an ORDB failed and none could be rebuilt")
        return None

    def _retire(self, fc: FetchCircuit, why: str, now: float, out: list[Action]) -> None:
        if fc.retired:
            return
        fc.retired = True
        self.cooldown[fc.ordb] = max(
            self.cooldown.get(fc.ordb, 0.0), now + RETIRE_COOLDOWN * (1 + fc.failures)
        )
        self.replaced += 1
        self.reasons[why] = self.reasons.get(why, 0) + 1
        for q in list(fc.queries.values()):
            out += self._drop(q, DbEndReason.FINISHED)
        out.append(ReplaceCircuit(fc.circ, why))

    # ---- pieces ----------------------------------------------------------------------------------
    def set_pieces(self, piece_count: int, piece_size: int, have: Container[int]) -> None:
        """The manifest is known: every piece not in ``have`` is to be fetched."""
        self.piece_size = piece_size
        self.piece_count = piece_count
        self.missing = {i for i in range(piece_count) if i not in have}
        pending, self._pending_rush = self._pending_rush, None
        if pending is not None:
            self._start_rush(*pending)

    def set_window(self, owner: int, first: int, last: int, now: float, tail: int = 0) -> None:
        """``owner`` (a stream) wants pieces ``first..last`` first, and the share's last ``tail``
        pieces early; a new owner's window goes before the older ones, a moved one keeps its rank."""
        old = self.windows.get(owner)
        self._window_seq += 1
        rank = old.rank if old is not None else (now, self._window_seq)
        self.windows[owner] = Window(first, last, max(0, tail), rank)
        if old is None or not old.first <= first <= old.last + 1:  # Play, a seek: a jump
            self._start_rush(first, last)

    def _start_rush(self, first: int, last: int) -> None:
        """The pieces from ``first`` go before anything else, if ``first`` is missing (a player
        waits on it); once the manifest is known, the next schedule() ends what competes."""
        if self.piece_size == 0:
            self._pending_rush = (first, last)
            return
        stop = min(
            last + 1, self.piece_count, first + max(1, min(RUSH_PIECES, RUSH_BYTES // self.piece_size))
        )
        rush = [i for i in range(max(0, first), stop) if i in self.missing]
        if rush and rush[0] == first:
            self.rush = rush
            self._preempt = True

    def clear_window(self, owner: int) -> None:
        """``owner`` no longer wants anything first (its stream ended)."""
        w = self.windows.pop(owner, None)
        waits = self.rush and any(v.first <= self.rush[0] <= v.last for v in self.windows.values())
        if w is not None and self.rush and w.first <= self.rush[0] <= w.last and not waits:
            self.rush = []  # nobody waits for it any more
            self._preempt = False

    def priority(self) -> list[range]:
        """The piece ranges asked before the contiguous order, most urgent first."""
        n = self.piece_count
        out = []
        for w in sorted(self.windows.values(), key=lambda w: w.rank, reverse=True):
            out.append(range(max(0, w.first), min(n, w.last + 1)))
        tail = max((w.tail for w in self.windows.values()), default=0)
        if tail:
            out.append(range(max(0, n - tail), n))
        return [r for r in out if r]

    def urgent(self, index: int) -> bool:
        """Is piece ``index`` under a window (a stream waits for it)?"""
        return any(index in r for r in self.priority())

    @property
    def done(self) -> bool:
        return self.piece_size > 0 and not self.missing

    def ask_manifest(self, now: float) -> list[Request]:
        """One manifest query on every working circuit."""
        return [self._request(fc, 0, 0, now) for fc in self.live()]

    def schedule(self, now: float) -> list[Action]:
        """Fill the free query slots, fastest circuit first; ``[Done()]`` once nothing is missing."""
        if self.piece_size == 0:
            return []
        if not self.missing:
            return [Done()]
        out: list[Action] = []
        self.rush = [i for i in self.rush if i in self.missing]
        if self.rush:
            return self._schedule_rush(now)
        free = [c for c in self.live() if len(c.queries) < SLOTS_PER_CIRCUIT and now >= c.not_before]
        if not free:
            return out
        rates = [c.rate for c in self.circuits.values() if c.rate]
        default = sorted(rates)[len(rates) // 2] if rates else None
        # the first pieces (a playhead's) to circuits that have delivered, fastest first; one that
        # has not yet (its ORDB may still be looking for a holder) gets the next ones
        free.sort(key=lambda c: (c.rate is None and c.bytes == 0, -(c.rate or default or 0.0)))
        ps = self.piece_size
        for fc in free:
            while len(fc.queries) < SLOTS_PER_CIRCUIT:
                rate = fc.rate or default or 4 * ps
                want = max(2, min(MAX_BLOCK, int(rate * 1.0 / ps)))  # about a second of this circuit
                run = self._next_run(want)
                if run is None:
                    run = self._endgame_run(fc)
                    if run is None:
                        return out
                first, count, dup = run
                r = self._request(fc, first, count, now)
                self.queries[r.query].duplicate = dup
                out.append(r)
        return out

    def _schedule_rush(self, now: float) -> list[Action]:
        """End the queries holding no rush piece (once per jump), then ask the rush pieces nobody
        is fetching: the first one alone, the rest in one query, each on the fastest circuit
        with room (one slot more than usual); nothing else until they are verified."""
        out: list[Action] = []
        if self._preempt:
            self._preempt = False
            rush = set(self.rush)
            for q in list(self.queries.values()):
                if q.count and rush.isdisjoint(q.pieces):
                    self.preempted += 1
                    out += self._drop(q, DbEndReason.FINISHED)
        idle = [i for i in self.rush if not self.inflight.get(i)]
        if not idle:
            return out
        runs = [(idle[0], 1)]
        rest = idle[1:]
        while rest:
            count = 1
            while count < len(rest) and rest[count] == rest[0] + count:
                count += 1
            runs.append((rest[0], count))
            rest = rest[count:]
        for first, count in runs:
            free = [c for c in self.live() if len(c.queries) <= SLOTS_PER_CIRCUIT and now >= c.not_before]
            if not free:
                break
            fc = min(free, key=lambda c: (len(c.queries), -(c.rate or 0.0)))  # idle and fast first
            r = self._request(fc, first, min(count, MAX_BLOCK), now)
            self.queries[r.query].solo = True
            out.append(r)
        return out

    def _next_run(self, want: int) -> tuple[int, int, bool] | None:
        """The first missing piece nobody is fetching, in the windows' order, else the lowest one,
        and the run of such pieces after it (within its window)."""

        def idle_piece(i: int) -> bool:
            return i in self.missing and not self.inflight.get(i)

        near = NEAR_BYTES // max(1, self.piece_size)
        heads = {w.first for w in self.windows.values()}
        for span in self.priority():
            # a holder shares its upload between the queries it answers, so a run of pieces comes
            # at the pace of a share: near a playhead each query asks one piece, and the pieces
            # come in order at the holder's whole pace
            limit = 1 if span.start in heads else want
            for first in span:
                if idle_piece(first):
                    cap = limit if first - span.start < near else want
                    count = 1
                    while count < cap and first + count in span and idle_piece(first + count):
                        count += 1
                    return first, count, False
        idle = sorted(i for i in self.missing if not self.inflight.get(i))
        if not idle:
            return None
        first = idle[0]
        count = 1
        while count < want and first + count in self.missing and not self.inflight.get(first + count):
            count += 1
        return first, count, False

    def _endgame_run(self, fc: FetchCircuit) -> tuple[int, int, bool] | None:
        """End-game: ask this circuit for pieces another circuit is still bringing."""
        for q in sorted(self.queries.values(), key=lambda q: q.sent):
            if q.circ == fc.circ or q.count == 0:
                continue
            rest = [i for i in q.pieces if i in self.missing and self.inflight.get(i, 0) < 2]
            if rest:
                first = rest[0]
                count = 1
                while first + count in rest:
                    count += 1
                return first, count, True
        return None

    def _request(self, fc: FetchCircuit, first: int, count: int, now: float) -> Request:
        self._ids += 1
        q = Query(self._ids, fc.circ, first, count, now, now)
        fc.queries[q.id] = q
        self.queries[q.id] = q
        for i in q.pieces:
            self.inflight[i] = self.inflight.get(i, 0) + 1
        return Request(fc.circ, q.id, first, count, self.rng.randrange(0, COUNTERS))

    # ---- deliveries ------------------------------------------------------------------------------
    def connected(self, query: int, now: float) -> None:
        """DB_CONNECTED: a delivery starts (a second one means another holder starts over)."""
        q = self.queries.get(query)
        if q is None:
            return
        if q.connected is None:
            q.connected = now
            self.circuits[q.circ].observe_rtt(now - q.sent)
        q.got = 0

    def received(self, query: int, nbytes: int, now: float) -> None:
        """DB_DATA of ``nbytes``."""
        q = self.queries.get(query)
        if q is None:
            return
        q.last_data = now
        q.got += nbytes
        self.circuits[q.circ].bytes += nbytes

    def accept(self, query: int, index: int) -> bool:
        """Is piece ``index`` of this query still wanted (False: an end-game duplicate)?"""
        q = self.queries.get(query)
        if q is None:
            return False
        if index not in q.pieces:
            raise WireError("a piece the query did not ask for")
        return index in self.missing

    def verified(self, index: int) -> None:
        """Piece ``index`` passed verification: it is no longer missing (a copy still on its way is not stored)."""
        self.missing.discard(index)

    def bad_piece(self, query: int, now: float) -> list[Action]:
        """A piece failed verification: report it to the ORDB (which drops that holder for the
        hash_name), fetch the pieces elsewhere; a circuit that keeps failing is replaced."""
        q = self.queries.get(query)
        if q is None:
            return []
        self.bad_pieces += 1
        fc = self.circuits[q.circ]
        fc.failures += 1
        out: list[Action] = [ReportBadPiece(q.circ, q.id)]  # before any DESTROY: the ORDB sees it
        self._forget(q)
        if fc.failures >= MAX_FAILURES:
            self._retire(fc, "it delivered pieces that failed verification", now, out)
        return out

    def malformed(self, query: int) -> list[Action]:
        """The delivery broke the protocol: the circuit counts a failure and the query ends."""
        q = self.queries.get(query)
        if q is None:
            return []
        self.circuits[q.circ].failures += 1
        return self._drop(q, DbEndReason.FINISHED)

    def finished(self, query: int, now: float) -> list[Action]:
        """The whole delivery arrived: measure the circuit's rate and end our side of the stream."""
        q = self.queries.get(query)
        if q is None:
            return []
        if q.connected is not None and not q.solo:
            self.circuits[q.circ].observe_rate(q.got / max(now - q.connected, 1e-3))
        return self._drop(q, DbEndReason.FINISHED)

    def ended(self, query: int, reason: int, now: float) -> list[Action]:
        """The ORDB ended the query (DB_END): its pieces go back to the queue.

        UNAVAILABLE (no holder found) pauses the circuit before its next query, longer each time,
        so that re-asking is paced; after ``UNAVAILABLE_LIMIT`` of them from one ORDB its circuit
        is replaced, and the ORDB avoided for ``UNAVAILABLE_COOLDOWN`` if another circuit brings data."""
        q = self.queries.get(query)
        if q is None:
            return []
        fc = self.circuits[q.circ]
        out = self._drop(q, None)  # the stream is closed already
        if reason == DbEndReason.UNAVAILABLE and q.count:
            fc.unavailable += 1
            n = self.unavailable[fc.ordb] = self.unavailable.get(fc.ordb, 0) + 1
            fc.not_before = now + min(UNAVAILABLE_PAUSE_MAX, UNAVAILABLE_PAUSE * 2 ** (fc.unavailable - 1))
            if n >= UNAVAILABLE_LIMIT and not fc.retired:
                if any(c.bytes > 0 for c in self.live() if c is not fc):  # others find a holder
                    self.cooldown[fc.ordb] = max(self.cooldown.get(fc.ordb, 0.0), now + UNAVAILABLE_COOLDOWN)
                self._retire(fc, "its ORDB answered UNAVAILABLE", now, out)
        elif reason != DbEndReason.FINISHED and q.count:
            # (a manifest search that finds nothing yet is no fault of the circuit)
            fc.failures += 1
        return out

    def end(self, query: int) -> list[Action]:
        """We stop a query ourselves (DB_END FINISHED); nothing if it is already over."""
        q = self.queries.get(query)
        return [] if q is None else self._drop(q, DbEndReason.FINISHED)

    def close(self) -> list[Action]:
        """The download stops: end every query."""
        out: list[Action] = []
        for q in list(self.queries.values()):
            out += self._drop(q, DbEndReason.FINISHED)
        return out

    def _drop(self, q: Query, reason: DbEndReason | None) -> list[Action]:
        self._forget(q)
        return [EndQuery(q.circ, q.id, reason)]

    def _forget(self, q: Query) -> None:
        if self.queries.pop(q.id, None) is None:
            return
        fc = self.circuits.get(q.circ)
        if fc is not None:
            fc.queries.pop(q.id, None)
        for i in q.pieces:
            n = self.inflight.get(i, 0) - 1
            if n > 0:
                self.inflight[i] = n
            else:
                self.inflight.pop(i, None)
