"""The ORDB's holder table and query pairing, sans-I/O (DESIGN §6; docs/ordb-protocol.md).

:class:`Pairing` keeps ``hash_name -> holders`` from DB_INFO and decides, for each query, which
holder gets it, when it moves to the next holder (failover), when a holder leaves the table
(its circuit closed, or a requester reported a bad piece), and when the query is forwarded,
answered from our own store, or refused.  It is fed decoded messages and ``now`` and returns
actions (frozen dataclasses) that :class:`peer.roles.ordb.OrdbService` carries out on the onion
core.  It reads no clock and draws no randomness itself: holder choice uses the ``rng`` it is
given, transaction ids come from ``new_txid``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from peer.wire.ordb import MAX_COUNTER, TXID_LEN, DbConnected, DbEnd, DbEndReason, DbInfo, DbQuery

Stream = tuple[int, int]  # (circuit handle, stream id)

MAX_ANNOUNCED_PER_STREAM = 256  # hash_names one announce stream may index (more are ignored)
MAX_QUERIES_PER_CIRCUIT = 16  # open queries per requester circuit (the next gets OVERLOAD)
HOLDER_ANSWER_TIMEOUT = 10.0  # seconds for a holder to open its answer stream
FINISHED_KEPT = 1024  # finished queries remembered for a late DB_END BAD_PIECE
RETIRED_KEPT = 256  # txids of abandoned holders remembered, so their late answer gets RESET
ZERO_TXID = bytes(TXID_LEN)

_T = TypeVar("_T")


class Chooser(Protocol):
    """What the holder choice needs from a random generator (``random.Random`` fits)."""

    def choice(self, seq: Sequence[_T]) -> _T: ...


# ---- actions ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendQuery:
    """Pass a query down a holder's announce stream (the message carries a fresh txid)."""

    stream: Stream
    msg: DbQuery


@dataclass(frozen=True, slots=True)
class SendConnected:
    """Tell the requester its answer starts (txid zeroed)."""

    stream: Stream
    msg: DbConnected


@dataclass(frozen=True, slots=True)
class EndStream:
    """End a stream with DB_END(reason, txid)."""

    stream: Stream
    reason: int
    txid: bytes = ZERO_TXID

    @property
    def msg(self) -> DbEnd:
        return DbEnd(self.reason, self.txid)


@dataclass(frozen=True, slots=True)
class Splice:
    """Copy a DB_DATA body from the source to the requester, then report with :meth:`Pairing.spliced`."""

    source: Stream
    to: Stream
    data: bytes


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Acknowledge (stream SENDME) ``cells`` DB_DATA cells received on the source."""

    stream: Stream
    cells: int


@dataclass(frozen=True, slots=True)
class Forward:
    """No local holder: look up another ORDB and forward (``msg`` has counter + 1, zero txid);
    report with :meth:`Pairing.forwarded` or :meth:`Pairing.forward_failed`."""

    stream: Stream
    msg: DbQuery


@dataclass(frozen=True, slots=True)
class AnswerLocally:
    """We hold or fetch this hash_name: check our store; report with :meth:`Pairing.local_checked`."""

    stream: Stream
    msg: DbQuery


@dataclass(frozen=True, slots=True)
class ServeHere:
    """Deliver from our own store on the query stream; report with :meth:`Pairing.local_served`."""

    stream: Stream
    msg: DbQuery


@dataclass(frozen=True, slots=True)
class Publish:
    """Put our provider record for a hash_name in the DHT."""

    hash_name: bytes


Action = (
    SendQuery
    | SendConnected
    | EndStream
    | Splice
    | Acknowledge
    | Forward
    | AnswerLocally
    | ServeHere
    | Publish
)


# ---- state ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Holder:
    """One announce stream's entry for one hash_name."""

    stream: Stream  # the holder's announce stream at this ORDB
    piece_count: int
    ranges: tuple[tuple[int, int], ...]
    facilitator: bool = False
    load: int = 0  # queries in progress

    def has(self, first: int, count: int) -> bool:
        if count == 0:
            return True  # the manifest: every holder has it
        end = first + count
        return any(s <= first and end <= e for s, e in self.ranges)


@dataclass(eq=False)
class Query:
    """A requester's query stream at this ORDB and where its answer comes from."""

    stream: Stream
    msg: DbQuery
    local: bool = False  # we hold or fetch the hash_name ourselves: never forwarded
    serving_here: bool = False  # answered from our own store
    holder: Holder | None = None
    tried: list[Holder] = field(default_factory=list)
    forward_tried: bool = False
    source: Stream | None = None  # the holder's answer stream (or our forward stream) once paired
    txid: bytes | None = None  # the txid given to the current holder
    deadline: float | None = None  # the current holder must have answered by then
    unacked: int = 0  # DB_DATA cells received from the source and not yet acknowledged
    delivered: int = 0  # bytes passed to the requester from the current source
    forwarded_to: Stream | None = None  # our stream to another ORDB, when we forwarded


class Pairing:
    """The holder table and the pairing, failover and forwarding decisions of one ORDB."""

    def __init__(
        self,
        rng: Chooser,
        new_txid: Callable[[], bytes],
        *,
        publish: bool = False,
        forward: bool = False,
        answer_timeout: float = HOLDER_ANSWER_TIMEOUT,
    ) -> None:
        self.rng = rng
        self._new_txid = new_txid
        self._publish = publish
        self._forward = forward
        self.answer_timeout = answer_timeout
        self.holders: dict[bytes, list[Holder]] = {}
        self.announce: dict[Stream, dict[bytes, Holder]] = {}
        self.queries: dict[Stream, Query] = {}
        self.by_txid: dict[bytes, Query] = {}
        self.by_source: dict[Stream, Query] = {}
        self.published: set[bytes] = set()
        self.retired_txids: deque[bytes] = deque(maxlen=RETIRED_KEPT)
        self.finished: dict[Stream, Query] = {}
        self.stats = {"queries": 0, "answered": 0, "forwarded": 0, "unavailable": 0, "bad_piece_drops": 0}

    # ---- lookups ----------------------------------------------------------------------------
    def owns(self, stream: Stream) -> bool:
        return stream in self.queries or stream in self.announce or stream in self.by_source

    def is_source(self, stream: Stream) -> bool:
        """A holder's answer stream or our forward stream, paired with a query."""
        return stream in self.by_source

    def is_open(self, stream: Stream) -> bool:
        return stream in self.queries

    def next_deadline(self) -> float | None:
        deadlines = [q.deadline for q in self.queries.values() if q.deadline is not None]
        return min(deadlines) if deadlines else None

    # ---- holders ----------------------------------------------------------------------------
    def announced(self, stream: Stream, info: DbInfo) -> list[Action]:
        """A DB_INFO on a holder's announce stream."""
        out: list[Action] = []
        known = self.announce.setdefault(stream, {})
        for entry in info.entries:
            h = known.get(entry.hash_name)
            ranges = tuple((r.start, r.end) for r in entry.ranges)
            if h is not None:
                h.ranges, h.piece_count = ranges, entry.piece_count
                continue
            if len(known) >= MAX_ANNOUNCED_PER_STREAM:
                continue  # quota: a stream cannot flood the index
            h = Holder(stream, entry.piece_count, ranges, info.facilitator)
            known[entry.hash_name] = h
            self.holders.setdefault(entry.hash_name, []).append(h)
            if self._publish and entry.hash_name not in self.published:
                self.published.add(entry.hash_name)
                out.append(Publish(entry.hash_name))
        return out

    def unpublished(self, hash_name: bytes) -> None:
        """Publishing gave up: the next new holder of the hash_name publishes again."""
        self.published.discard(hash_name)

    def _drop_holder(self, hash_name: bytes, holder: Holder) -> None:
        lst = self.holders.get(hash_name)
        if lst and holder in lst:
            lst.remove(holder)
            if not lst:
                del self.holders[hash_name]
        known = self.announce.get(holder.stream)
        if known is not None and known.get(hash_name) is holder:
            del known[hash_name]

    def _pick(self, q: Query) -> Holder | None:
        cands = [
            h
            for h in self.holders.get(q.msg.hash_name, [])
            if h not in q.tried and h.has(q.msg.first, q.msg.count)
        ]
        if not cands:
            return None
        low = min(h.load for h in cands)
        best = [h for h in cands if h.load == low]
        # the least loaded; among equals a facilitator last (kept for rare content), else at random
        plain = [h for h in best if not h.facilitator]
        return self.rng.choice(plain or best)

    # ---- queries ----------------------------------------------------------------------------
    def query(self, stream: Stream, msg: DbQuery, *, involved: bool, now: float) -> list[Action]:
        """A requester's DB_QUERY (or another ORDB's forward); ``involved``: we hold or fetch it."""
        self.stats["queries"] += 1
        if stream in self.queries:
            return [EndStream(stream, DbEndReason.UNAVAILABLE)]  # one query per stream
        if sum(1 for k in self.queries if k[0] == stream[0]) >= MAX_QUERIES_PER_CIRCUIT:
            return [EndStream(stream, DbEndReason.OVERLOAD)]
        q = Query(stream, msg, local=involved)
        self.queries[stream] = q
        if involved:
            return [AnswerLocally(stream, msg)]
        return self._dispatch(q, now)

    def local_checked(self, stream: Stream, has: bool, now: float) -> list[Action]:
        """Whether our own store can answer a query we are involved in.  Either way it is never
        forwarded: the next ORDB would see us next to a hash_name we hold or want."""
        q = self.queries.get(stream)
        if q is None:
            return []  # the requester left meanwhile
        if has:
            self.stats["answered"] += 1
            q.serving_here = True
            return [ServeHere(stream, q.msg)]
        if self.holders.get(q.msg.hash_name):
            return self._dispatch(q, now)  # holders announced to us: pairing shows them nothing of us
        return self._finish(q, DbEndReason.UNAVAILABLE)

    def local_served(self, stream: Stream) -> None:
        q = self.queries.get(stream)
        if q is not None and q.serving_here:
            del self.queries[stream]

    def _dispatch(self, q: Query, now: float) -> list[Action]:
        holder = self._pick(q)
        if holder is not None:
            q.holder = holder
            q.tried.append(holder)
            holder.load += 1
            q.txid = self._new_txid()
            self.by_txid[q.txid] = q
            q.deadline = now + self.answer_timeout
            m = q.msg
            return [SendQuery(holder.stream, DbQuery(m.hash_name, m.first, m.count, m.counter, q.txid))]
        if q.msg.counter + 1 >= MAX_COUNTER:
            return self._finish(q, DbEndReason.LOOP)
        if self._forward and not q.local and not q.tried and not q.forward_tried:
            q.forward_tried = True  # each ORDB forwards a query at most once
            m = q.msg
            return [Forward(q.stream, DbQuery(m.hash_name, m.first, m.count, m.counter + 1))]
        return self._finish(q, DbEndReason.UNAVAILABLE)

    def forwarded(self, stream: Stream, source: Stream) -> list[Action]:
        """Our forward stream to another ORDB is open: its answer is spliced like a holder's."""
        q = self.queries.get(stream)
        if q is None or q.holder is not None or q.source is not None:
            # the requester left meanwhile, or a holder took the query after all (it failed over)
            return [EndStream(source, DbEndReason.FINISHED)]
        self.stats["forwarded"] += 1
        q.source = q.forwarded_to = source
        self.by_source[source] = q
        return []

    def forward_failed(self, stream: Stream) -> list[Action]:
        q = self.queries.get(stream)
        return [] if q is None else self._finish(q, DbEndReason.UNAVAILABLE)

    def timeouts(self, now: float) -> list[Action]:
        """Holders that did not open their answer stream in time: the next holder gets the query."""
        out: list[Action] = []
        for q in list(self.queries.values()):
            if q.deadline is not None and q.deadline <= now:
                q.deadline = None
                if q.source is None and self.queries.get(q.stream) is q:
                    out += self._failover(q, now)
        return out

    def _failover(self, q: Query, now: float) -> list[Action]:
        """The current holder did not answer or broke off before any data (its answer stream is
        already unpaired): try the next one; its late answer, if any, gets DB_END RESET."""
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        if q.txid is not None:
            self.by_txid.pop(q.txid, None)
            self.retired_txids.append(q.txid)
        q.holder = None
        q.deadline = None
        q.unacked = 0
        return self._dispatch(q, now)

    # ---- answers (from a holder, or from the ORDB we forwarded to) --------------------------
    def connected(self, source: Stream, msg: DbConnected) -> list[Action]:
        """DB_CONNECTED on a holder's new answer stream (by txid) or on our forward stream."""
        q = self.by_source.get(source) or self.by_txid.pop(msg.txid, None)
        if q is None or self.queries.get(q.stream) is not q:
            # a late answer: another holder took over (failover) or the requester left
            reason = DbEndReason.RESET if msg.txid in self.retired_txids else DbEndReason.FINISHED
            return [EndStream(source, reason, msg.txid)]
        q.deadline = None
        q.source = source
        self.by_source[source] = q
        self.stats["answered"] += 1
        return [SendConnected(q.stream, DbConnected(ZERO_TXID, msg.kind, msg.first, msg.count, msg.length))]

    def data(self, source: Stream, data: bytes) -> list[Action]:
        q = self.by_source.get(source)
        if q is None:
            return []
        q.delivered += len(data)
        return [Splice(source, q.stream, data)]

    def spliced(self, source: Stream, accepted: bool) -> list[Action]:
        """The requester's stream took the copy (``accepted``) or is full: acknowledge the source's
        cells only while the requester's side drains (back-pressure)."""
        q = self.by_source.get(source)
        if q is None:
            return []
        if not accepted:
            q.unacked += 1
            return []
        cells, q.unacked = 1 + q.unacked, 0
        return [Acknowledge(source, cells)]

    def writable(self, stream: Stream) -> list[Action]:
        """The requester's stream drained: release the acknowledgements withheld."""
        q = self.queries.get(stream)
        if q is None or q.source is None or not q.unacked:
            return []
        cells, q.unacked = q.unacked, 0
        return [Acknowledge(q.source, cells)]

    def source_ended(self, source: Stream, end: DbEnd, now: float) -> list[Action]:
        q = self.by_source.pop(source, None)
        if q is None:
            return []
        q.source = None
        if self.queries.get(q.stream) is not q:
            return []
        if end.reason in (DbEndReason.DESTROYED, DbEndReason.UNAVAILABLE) and q.delivered == 0:
            return self._failover(q, now)  # nothing delivered yet: another holder can take it
        return self._finish(q, end.reason)

    # ---- the requester ends -----------------------------------------------------------------
    def requester_ended(self, stream: Stream, end: DbEnd) -> list[Action]:
        bad = end.reason == DbEndReason.BAD_PIECE
        q = self.queries.pop(stream, None)
        if q is None:
            late = self.finished.pop(stream, None)
            return self._bad_piece(late) if late is not None and bad else []
        q.deadline = None
        out = self._bad_piece(q) if bad else []
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        if q.txid is not None:
            self.by_txid.pop(q.txid, None)
        if q.source is not None:
            self.by_source.pop(q.source, None)
            # BAD_PIECE travels on down a forward, so the ORDB that indexes the liar drops it too
            reason = DbEndReason.BAD_PIECE if bad else DbEndReason.FINISHED
            out.append(EndStream(q.source, reason, q.txid or ZERO_TXID))
        return out

    def _bad_piece(self, q: Query) -> list[Action]:
        """A piece from this query failed verification: the holder that served it no longer serves
        this hash_name here (its other hash_names stay); a forwarded query passes the report on
        (an open one does so in :meth:`requester_ended`)."""
        if q.holder is not None:
            self.stats["bad_piece_drops"] += 1
            self._drop_holder(q.msg.hash_name, q.holder)
            return []
        if q.forwarded_to is not None and q.source is None:
            return [EndStream(q.forwarded_to, DbEndReason.BAD_PIECE)]
        return []

    def _finish(self, q: Query, reason: int) -> list[Action]:
        if reason == DbEndReason.UNAVAILABLE:
            self.stats["unavailable"] += 1
        self.queries.pop(q.stream, None)
        self.finished[q.stream] = q  # a late DB_END BAD_PIECE may still come for it
        while len(self.finished) > FINISHED_KEPT:
            del self.finished[next(iter(self.finished))]
        q.deadline = None
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        if q.txid is not None:
            self.by_txid.pop(q.txid, None)
        return [EndStream(q.stream, reason)]

    # ---- circuits going away ----------------------------------------------------------------
    def circuit_closed(self, circ: int, now: float) -> list[Action]:
        out: list[Action] = []
        # requesters on it: their queries end; the sources still paired with them are told
        for key in [k for k in self.queries if k[0] == circ]:
            q = self.queries.pop(key)
            q.deadline = None
            if q.holder is not None:
                q.holder.load = max(0, q.holder.load - 1)
            if q.txid is not None:
                self.by_txid.pop(q.txid, None)
            if q.source is not None:
                self.by_source.pop(q.source, None)
                out.append(EndStream(q.source, DbEndReason.FINISHED, q.txid or ZERO_TXID))
        # holders on it leave the table
        for key in [k for k in self.announce if k[0] == circ]:
            for hn, holder in self.announce.pop(key).items():
                self._drop_holder(hn, holder)
        # answers and forwards on it broke: fail over before any data, else end the query
        for key, q in list(self.by_source.items()):
            if key[0] != circ:
                continue
            del self.by_source[key]
            q.source = None
            if self.queries.get(q.stream) is q:
                if q.delivered == 0:
                    out += self._failover(q, now)
                else:
                    out += self._finish(q, DbEndReason.DESTROYED)
        # queries waiting for a holder on it: no answer can come any more
        for q in list(self.queries.values()):
            if q.source is None and q.holder is not None and q.holder.stream[0] == circ:
                out += self._failover(q, now)
        return out
