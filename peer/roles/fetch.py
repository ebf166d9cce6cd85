"""The requester's sliding-window fetch (DESIGN §5-6, the 2017 seed's 5-GET window).

One download pulls a share over about 5 circuits, each ending at a different ORDB, never
querying the DHT itself.  It fetches and verifies the manifest (hash_name = SHA-256 of the
signed manifest), then keeps every circuit busy with DB_QUERYs for runs of missing pieces:

- each circuit's round-trip time (query -> DB_CONNECTED) and delivery rate are measured;
- the next query goes to the fastest circuit with a free slot (two queries in flight per
  circuit, so the next is asked before the current one ends), sized to about a second of
  that circuit's rate;
- a circuit much slower than the best, or one whose queries stall, is replaced by a circuit
  to another ORDB, and its unfinished pieces go back to the queue (an interrupted window
  resumes from another source);
- near the end, pieces still in flight are also asked on idle circuits (end-game);
- every piece is verified against the manifest's Merkle root before it is stored; one that
  fails is reported with DB_END BAD_PIECE (the ORDB then drops that holder for this
  hash_name) and is fetched again elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from peer.errors import IntegrityError, PathError, PeerError, WireError
from peer.proto import events as ev
from peer.proto.node import OnionNode
from peer.wire.commands import RelayCommand
from peer.wire.ordb import DbConnected, DbEnd, DbEndReason, DbQuery, DeliveryKind, FrameReader
from storage.chunkstore import ChunkStore
from storage.manifest import Manifest, parse_manifest
from storage.verify import VerifiedPiece, verify_pieces

log = logging.getLogger(__name__)

Stream = tuple[int, int]
SLOTS_PER_CIRCUIT = 2
MAX_BLOCK = 32  # pieces per query
STALL_AFTER = 8.0  # seconds without data before a query is abandoned
FIRST_ANSWER_WITHIN = 30.0  # seconds for the first DB_CONNECTED of a query
SLOW_FACTOR = 0.3  # a circuit slower than this fraction of the best is replaced
MIN_AGE_FOR_SLOW = 4.0
STORE_BATCH = 16
NO_CIRCUIT_GIVE_UP = 30.0  # seconds with no working circuit before the download fails
RETIRE_COOLDOWN = 10.0  # seconds before a download goes back to an ORDB whose circuit it retired


class DownloadError(PeerError):
    kind = "download"


@dataclass(eq=False)
class Query:
    circuit: FetchCircuit
    sid: int
    first: int
    count: int  # 0 for the manifest
    sent: float
    connected: float | None = None
    last_data: float = 0.0
    expected: int | None = None
    got: int = 0
    buf: bytearray = field(default_factory=bytearray)
    reader: FrameReader | None = None
    received: set[int] = field(default_factory=set)
    duplicate: bool = False
    answer: asyncio.Future[bytes] | None = None  # a manifest query: the manifest, or why not

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

    def observe_rate(self, r: float) -> None:
        self.rate = r if self.rate is None else 0.7 * self.rate + 0.3 * r

    def observe_rtt(self, r: float) -> None:
        self.rtt = r if self.rtt is None else 0.8 * self.rtt + 0.2 * r


@dataclass
class Progress:
    have: int = 0
    total: int = 0
    bytes_verified: int = 0
    size: int = 0
    rate: float = 0.0
    circuits: int = 0
    ordbs_used: int = 0
    bad_pieces: int = 0
    replaced: int = 0
    first_byte_s: float | None = None
    state: str = "starting"
    error: str | None = None


class Download:
    def __init__(
        self,
        *,
        node: OnionNode,
        kick: Callable[[], None],
        store: ChunkStore,
        hash_name: bytes,
        key: bytes | None,
        build_circuit: Callable[[set[bytes]], Awaitable[tuple[int, bytes]]],
        count_ordbs: Callable[[], int],
        on_quarter: Callable[[bytes], None] | None = None,
        want_circuits: int = 5,
        min_circuits: int = 2,
        find_timeout: float = 120.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self._kick = kick
        self.store = store
        self.hash_name = hash_name
        self.key = key
        self._build = build_circuit
        self._count_ordbs = count_ordbs
        self._on_quarter = on_quarter
        self.want = want_circuits
        self.min = min_circuits
        self.find_timeout = find_timeout
        self.rng = rng or random.Random()
        self.clock = clock
        self.circuits: dict[int, FetchCircuit] = {}
        self.queries: dict[Stream, Query] = {}
        self.used_ordbs: set[bytes] = set()
        self.cooldown: dict[bytes, float] = {}  # ORDBs whose circuit was retired: not before this time
        self.manifest: Manifest | None = None
        self.missing: set[int] = set()
        self.inflight: dict[int, int] = {}  # piece -> number of queries asking for it
        self.progress = Progress()
        self._wake = asyncio.Event()
        self._pending: list[VerifiedPiece] = []
        self._started = clock()
        self._quarter = 0
        self._no_circuit_since: float | None = None
        self.listeners: list[Callable[[Progress], None]] = []

    # ---- the main loop ---------------------------------------------------------------------------
    async def run(self) -> Progress:
        try:
            await self._run()
            self.progress.state = "verified"  # every piece stored and verified; the runtime exports next
        except asyncio.CancelledError:
            self.progress.state = "paused"
            raise
        except PeerError as exc:
            self.progress.state = "failed"
            self.progress.error = str(exc)
            raise
        finally:
            self._cancel_all()
            self._notify()
        return self.progress

    async def _run(self) -> None:
        try:
            self.manifest = await self.store.manifest(self.hash_name)
        except PeerError:
            self.manifest = None
        deadline = self.clock() + self.find_timeout
        while True:  # a peer that just started may have no links yet: keep trying for a while
            try:
                await self._ensure_circuits(first=True)
                break
            except PathError:
                if self.clock() >= deadline:
                    raise
                self.progress.state = "connecting"
                self._notify()
                await asyncio.sleep(1.0)
        if self.manifest is None:
            self.manifest = await self._fetch_manifest()
        m = self.manifest
        have = await self.store.have(self.hash_name)
        self.missing = {i for i in range(m.piece_count) if i not in have}
        self.progress.total = m.piece_count
        self.progress.have = m.piece_count - len(self.missing)
        self.progress.size = m.size
        self.progress.state = "downloading"
        self._notify()
        last_check = self.clock()
        while self.missing:
            self._schedule()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            await self._flush()
            now = self.clock()
            if now - last_check >= 0.5:
                last_check = now
                await self._police(now)
        await self._flush()

    async def _fetch_manifest(self) -> Manifest:
        """Ask every circuit at once, again and again for up to ``find_timeout`` seconds: a share
        announced a moment ago may not have reached any ORDB yet, and one ORDB may take long
        (it forwards to another, which it may have to link to first) while another answers."""
        errors: list[str] = []
        deadline = self.clock() + self.find_timeout
        while True:
            live = [fc for fc in self.circuits.values() if not fc.retired and fc.circ in self.node.circuits]
            if live:
                m = await self._ask_manifest(live, errors)
                if m is not None:
                    return m
            if self.clock() >= deadline:
                break
            self.progress.state = "searching"
            self._notify()
            await asyncio.sleep(1.0)
            await self._ensure_circuits()
        raise DownloadError(
            f"nothing found: no ORDB could deliver the manifest within {self.find_timeout:.0f} s ("
            + "; ".join(sorted(set(errors))[:3])
            + ")"
        )

    async def _ask_manifest(self, circuits: list[FetchCircuit], errors: list[str]) -> Manifest | None:
        """One manifest query per circuit, in parallel; the first manifest that verifies wins (a
        lying answer only costs its own query).  Every ORDB sees the hash_name anyway: each
        circuit asks for pieces next."""
        loop = asyncio.get_running_loop()
        asked: dict[asyncio.Future[bytes], Query] = {}
        for fc in circuits:
            q = self._send(fc, 0, 0)
            q.answer = loop.create_future()
            asked[q.answer] = q
        pending = set(asked)
        end = loop.time() + STALL_AFTER * 2
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, end - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    errors.append(f"no answer within {STALL_AFTER * 2:.0f} s")
                    return None
                for fut in done:
                    try:
                        data = fut.result()
                        m = parse_manifest(data, self.hash_name)
                        await self.store.put_manifest(data, expected_hash=self.hash_name, key=self.key)
                        return m
                    except PeerError as exc:
                        errors.append(str(exc) or type(exc).__name__)
            return None
        finally:
            for fut, q in asked.items():
                self._drop_query(q, DbEndReason.FINISHED)  # no-op for the ones already ended
                if fut.done():
                    fut.exception()  # retrieved: a second failure after the winner is not news

    # ---- circuits ------------------------------------------------------------------------------
    async def _ensure_circuits(self, first: bool = False) -> None:
        live = [c for c in self.circuits.values() if not c.retired and c.circ in self.node.circuits]
        want = min(self.want, max(self.min, self._count_ordbs()))
        need = want - len(live)
        if need <= 0:
            return
        errors: list[str] = []
        now = self.clock()
        for _ in range(need):  # one at a time, so that each circuit goes to a different ORDB
            busy = {c.ordb for c in self.circuits.values() if not c.retired and c.circ in self.node.circuits}
            cooling = {o for o, until in self.cooldown.items() if until > now}
            try:
                circ, ordb = await self._build(busy | cooling)
            except PeerError as exc:
                errors.append(str(exc))
                break
            self.used_ordbs.add(ordb)
            self.circuits[circ] = FetchCircuit(circ, ordb, self.clock())
        live = [c for c in self.circuits.values() if not c.retired and c.circ in self.node.circuits]
        self.progress.circuits = len(live)
        self.progress.ordbs_used = len(self.used_ordbs)
        if first and len(live) < self.min:
            raise PathError(
                f"a download needs circuits to at least {self.min} different ORDBs, got {len(live)}"
                + (f": {errors[0]}" if errors else "")
            )

    def retire_ordbs(self, ids: set[bytes], why: str) -> int:
        """Replace the circuits that end at one of ``ids`` (e.g. a peer that became our
        neighbour: DESIGN §5 keeps ORDBs apart from guards and neighbours)."""
        gone = [fc for fc in self.circuits.values() if not fc.retired and fc.ordb in ids]
        for fc in gone:
            self._retire(fc, why)
        return len(gone)

    def _retire(self, fc: FetchCircuit, why: str) -> None:
        if fc.retired:
            return
        fc.retired = True
        self.cooldown[fc.ordb] = self.clock() + RETIRE_COOLDOWN * (1 + fc.failures)
        self.progress.replaced += 1
        log.debug("replacing a circuit: %s", why)
        for q in list(fc.queries.values()):
            self._drop_query(q, DbEndReason.FINISHED)
        self.node.destroy_circuit(fc.circ)
        self._kick()

    async def _police(self, now: float) -> None:
        """Replace slow or stalled circuits, and keep the number of circuits up."""
        live = [c for c in self.circuits.values() if not c.retired and c.circ in self.node.circuits]
        for fc in live:
            for q in list(fc.queries.values()):
                # before its first answer a query may be travelling to another ORDB (which may
                # have to open a link first): give it longer than a delivery that went quiet
                limit = STALL_AFTER if q.connected is not None else FIRST_ANSWER_WITHIN
                if now - max(q.sent, q.last_data) > limit:
                    fc.failures += 1
                    self._drop_query(q, DbEndReason.FINISHED)
            if fc.failures >= 2:
                self._retire(fc, "queries stall")
        rated = [c for c in live if c.rate is not None and not c.retired]
        if len(rated) >= 3:
            best = max(c.rate or 0.0 for c in rated)
            for fc in rated:
                if (fc.rate or 0.0) < SLOW_FACTOR * best and now - fc.created > MIN_AGE_FOR_SLOW:
                    self._retire(fc, "much slower than the others")
                    break  # one at a time
        for circ in [c for c, fc in self.circuits.items() if fc.retired or c not in self.node.circuits]:
            fc = self.circuits.pop(circ)
            for q in list(fc.queries.values()):
                self._drop_query(q, None)
        try:
            await self._ensure_circuits()
        except PeerError as exc:
            log.debug("no replacement circuit: %s", exc)
        if not any(not c.retired for c in self.circuits.values()):
            if self._no_circuit_since is None:
                self._no_circuit_since = now
            elif now - self._no_circuit_since > NO_CIRCUIT_GIVE_UP:
                raise DownloadError("interrupted: every circuit to an ORDB failed and none could be rebuilt")
        else:
            self._no_circuit_since = None
        elapsed = max(now - self._started, 1e-6)
        self.progress.rate = self.progress.bytes_verified / elapsed
        self._notify()

    # ---- scheduling ------------------------------------------------------------------------------
    def _schedule(self) -> None:
        assert self.manifest is not None
        free = [
            c
            for c in self.circuits.values()
            if not c.retired and c.circ in self.node.circuits and len(c.queries) < SLOTS_PER_CIRCUIT
        ]
        if not free:
            return
        rates = [c.rate for c in self.circuits.values() if c.rate]
        default = sorted(rates)[len(rates) // 2] if rates else None
        free.sort(key=lambda c: -(c.rate or default or 1e12))  # fastest first; unknown ones get a chance
        ps = self.manifest.piece_size
        for fc in free:
            while len(fc.queries) < SLOTS_PER_CIRCUIT:
                rate = fc.rate or default or 4 * ps
                want = max(2, min(MAX_BLOCK, int(rate * 1.0 / ps)))
                run = self._next_run(want)
                if run is None:
                    run = self._endgame_run(fc)
                    if run is None:
                        return
                first, count, dup = run
                q = self._send(fc, first, count)
                q.duplicate = dup

    def _next_run(self, want: int) -> tuple[int, int, bool] | None:
        """The lowest missing piece nobody is fetching, and the run of such pieces after it."""
        idle = sorted(i for i in self.missing if not self.inflight.get(i))
        if not idle:
            return None
        first = idle[0]
        count = 1
        while count < want and first + count in self.missing and not self.inflight.get(first + count):
            count += 1
        return first, count, False

    def _endgame_run(self, fc: FetchCircuit) -> tuple[int, int, bool] | None:
        """End-game: ask an idle circuit for pieces another circuit is still bringing."""
        for q in sorted(self.queries.values(), key=lambda q: q.sent):
            if q.circuit is fc or q.count == 0:
                continue
            rest = [i for i in q.pieces if i in self.missing and self.inflight.get(i, 0) < 2]
            if rest:
                first = rest[0]
                count = 1
                while first + count in rest:
                    count += 1
                return first, count, True
        return None

    def _send(self, fc: FetchCircuit, first: int, count: int) -> Query:
        counter = self.rng.randrange(0, 3)  # DESIGN §6: picked at random in 0..2
        body = DbQuery(self.hash_name, first, count, counter).encode()
        sid = self.node.open_db_stream(fc.circ, RelayCommand.DB_QUERY, body)
        q = Query(fc, sid, first, count, self.clock())
        q.last_data = q.sent
        fc.queries[sid] = q
        self.queries[(fc.circ, sid)] = q
        for i in q.pieces:
            self.inflight[i] = self.inflight.get(i, 0) + 1
        self._kick()
        return q

    def _drop_query(self, q: Query, reason: int | None) -> None:
        """Forget a query (its missing pieces go back to the queue); tell the ORDB if asked."""
        key = (q.circuit.circ, q.sid)
        if self.queries.pop(key, None) is None:
            return
        q.circuit.queries.pop(q.sid, None)
        for i in q.pieces:
            n = self.inflight.get(i, 0) - 1
            if n > 0:
                self.inflight[i] = n
            else:
                self.inflight.pop(i, None)
        if reason is not None and q.circuit.circ in self.node.circuits:
            self.node.db_end(q.circuit.circ, q.sid, DbEnd(reason).encode())
            self._kick()
        self._wake.set()

    def _cancel_all(self) -> None:
        for q in list(self.queries.values()):
            self._drop_query(q, DbEndReason.FINISHED)
        for fc in self.circuits.values():
            if fc.circ in self.node.circuits:
                self.node.destroy_circuit(fc.circ)
        self._kick()

    # ---- events ------------------------------------------------------------------------------
    def handle(self, e: ev.Event) -> bool:
        if isinstance(e, ev.RelayMessageReceived):
            q = self.queries.get((e.circ, e.stream_id))
            if q is None:
                return False
            try:
                self._on_message(q, e.command, e.data)
            except WireError as exc:
                log.debug("malformed delivery: %s", exc)
                q.circuit.failures += 1
                self._drop_query(q, DbEndReason.FINISHED)
            return True
        if isinstance(e, ev.CircuitClosed) and e.circ in self.circuits:
            fc = self.circuits[e.circ]
            for q in list(fc.queries.values()):
                self._drop_query(q, None)
            fc.retired = True
            self._wake.set()
            return True
        return False

    def _on_message(self, q: Query, cmd: int, data: bytes) -> None:
        now = self.clock()
        if cmd == RelayCommand.DB_CONNECTED:
            msg = DbConnected.decode(data)
            if q.connected is None:
                q.connected = now
                q.circuit.observe_rtt(now - q.sent)
            # a second DB_CONNECTED means the ORDB moved the query to another holder: start over
            q.expected, q.got = msg.length, 0
            q.buf.clear()
            q.reader = FrameReader(max_piece=self._max_piece()) if msg.kind == DeliveryKind.PIECES else None
            return
        if cmd == RelayCommand.DB_DATA:
            self.node.stream_consumed(q.circuit.circ, q.sid, 1)
            q.last_data = now
            q.got += len(data)
            q.circuit.bytes += len(data)
            if self.progress.first_byte_s is None:
                self.progress.first_byte_s = now - self._started
            if q.count == 0:
                q.buf += data
                if q.expected is not None and q.got >= q.expected and q.answer and not q.answer.done():
                    q.answer.set_result(bytes(q.buf))
                    self._finish_query(q)
                return
            if q.reader is None:
                raise WireError("DB_DATA before DB_CONNECTED")
            for frame in q.reader.feed(data):
                self._on_piece(q, frame.index, frame.piece, frame.proof)
            if q.expected is not None and q.got >= q.expected:
                self._finish_query(q)
            return
        if cmd == RelayCommand.DB_END:
            end = DbEnd.decode(data)
            if end.reason != DbEndReason.FINISHED and q.count:
                # (a manifest search that finds nothing yet is no fault of the circuit)
                q.circuit.failures += 1
            if q.answer is not None and not q.answer.done():
                if q.expected is not None and q.got >= q.expected:
                    q.answer.set_result(bytes(q.buf))
                else:
                    q.answer.set_exception(DownloadError(f"the ORDB ended the query ({_reason(end.reason)})"))
            self.queries.pop((q.circuit.circ, q.sid), None)  # the stream is already closed
            q.circuit.queries.pop(q.sid, None)
            self._release(q)

    def _release(self, q: Query) -> None:
        for i in q.pieces:
            n = self.inflight.get(i, 0) - 1
            if n > 0:
                self.inflight[i] = n
            else:
                self.inflight.pop(i, None)
        self._wake.set()

    def _finish_query(self, q: Query) -> None:
        if q.connected is not None:
            dt = max(self.clock() - q.connected, 1e-3)
            q.circuit.observe_rate(q.got / dt)
        key = (q.circuit.circ, q.sid)
        if self.queries.pop(key, None) is not None:
            q.circuit.queries.pop(q.sid, None)
            self._release(q)
            # the holder ends the stream; ending ours too frees the ORDB's pairing at once
            if q.circuit.circ in self.node.circuits:
                self.node.db_end(q.circuit.circ, q.sid, DbEnd(DbEndReason.FINISHED).encode())
                self._kick()

    def _max_piece(self) -> int:
        assert self.manifest is not None
        return self.manifest.piece_size + 16 + 64  # ciphertext tag, slack for live signatures

    def _on_piece(self, q: Query, index: int, piece: bytes, proof: bytes) -> None:
        assert self.manifest is not None
        if index not in q.pieces:
            raise WireError("a piece the query did not ask for")
        if index not in self.missing:
            return  # end-game duplicate
        try:
            verified = verify_pieces(self.manifest, [(index, piece, proof)])
        except (IntegrityError, PeerError, ValueError):
            # a lying holder: report it (the ORDB drops it for this hash_name), fetch elsewhere; a
            # circuit that keeps bringing bad pieces (its ORDB may be the liar) is replaced
            self.progress.bad_pieces += 1
            q.circuit.failures += 1
            self._drop_query(q, DbEndReason.BAD_PIECE)  # sent before any DESTROY: the ORDB sees it
            if q.circuit.failures >= 2:
                self._retire(q.circuit, "it delivered pieces that failed verification")
            return
        self._pending += verified
        self.missing.discard(index)
        self.progress.have += 1
        self.progress.bytes_verified += len(piece)
        if len(self._pending) >= STORE_BATCH:
            self._wake.set()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await self.store.put_pieces(self.hash_name, batch)
        quarter = self.progress.have * 4 // max(1, self.progress.total)
        if quarter > self._quarter:
            self._quarter = quarter
            if self._on_quarter is not None:
                self._on_quarter(self.hash_name)  # seed what we hold (25, 50, 75, 100 %)
        self._notify()

    def _notify(self) -> None:
        for cb in list(self.listeners):
            cb(self.progress)


def _reason(code: int) -> str:
    try:
        return DbEndReason(code).name
    except ValueError:
        return str(code)
