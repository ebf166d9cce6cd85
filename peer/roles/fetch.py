"""The requester's sliding-window fetch (DESIGN §5-6, the 2017 seed's 5-GET window).

One download pulls a share over about 5 circuits, each ending at a different ORDB, never
querying the DHT itself.  It fetches and verifies the manifest (hash_name = SHA-256 of the
signed manifest), then keeps every circuit busy with DB_QUERYs for runs of missing pieces:

- each circuit's round-trip time (query -> DB_CONNECTED) and delivery rate are measured;
- the next query goes to the fastest circuit with a free slot (two queries in flight per
  circuit, so the next is asked before the current one ends), sized to about a second of
  that circuit's rate;
- a circuit much slower than the median one, or one whose queries stall, is replaced by a circuit
  to another ORDB, and its unfinished pieces go back to the queue (an interrupted window
  resumes from another source);
- near the end, pieces still in flight are also asked on idle circuits (end-game);
- every piece is verified against the manifest's Merkle root before it is stored; one that
  fails is reported with DB_END BAD_PIECE (the ORDB then drops that holder for this
  hash_name) and is fetched again elsewhere;
- a stream (webui/stream.py) puts a window of pieces under its playhead first
  (:meth:`Download.want`); a piece under a window is stored at once, not batched; when the
  window jumps (Play, a seek) onto a missing piece, the queries that would compete with it at
  the holder are ended and its first pieces asked alone (the scheduler's rush).

Those decisions are made by the sans-I/O :class:`peer.roles.schedule.FetchScheduler`;
:class:`Download` builds the circuits, opens and ends the query streams, reassembles and
verifies the deliveries, stores the pieces, and carries out the scheduler's actions.
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
from peer.roles.schedule import (
    STALL_AFTER,
    Action,
    Done,
    EndQuery,
    FetchScheduler,
    ReplaceCircuit,
    ReportBadPiece,
    Request,
)
from peer.wire.commands import RelayCommand
from peer.wire.ordb import DbConnected, DbEnd, DbEndReason, DbQuery, DeliveryKind, FrameReader
from storage.chunkstore import ChunkStore
from storage.encryption import decrypt_metadata
from storage.manifest import Manifest, parse_manifest
from storage.verify import VerifiedPiece, verify_pieces

log = logging.getLogger(__name__)

Stream = tuple[int, int]
STORE_BATCH = 16


class DownloadError(PeerError):
    kind = "download"


@dataclass(eq=False)
class Delivery:
    """The wire side of one query: its stream, and the answer being reassembled."""

    query: int  # the scheduler's id
    circ: int
    sid: int
    count: int  # 0 for the manifest
    expected: int | None = None
    got: int = 0
    buf: bytearray = field(default_factory=bytearray)
    reader: FrameReader | None = None
    answer: asyncio.Future[bytes] | None = None  # a manifest query: the manifest, or why not


#: the first and last bytes of an audio or video file, fetched first (an MP4 may keep its index at the end)
INDEX_TAIL = 1 << 20
INDEX_OWNER = -1  # the scheduler window that holds them (a stream's windows are owned by its id())


@dataclass
class Progress:
    have: int = 0
    total: int = 0
    bytes_verified: int = 0  # verified this run (the rate's numerator; ciphertext for an encrypted share)
    bytes_held: int = 0  # of the file's ``size``: the plaintext length of every piece stored or verified
    size: int = 0
    rate: float = 0.0
    circuits: int = 0
    ordbs_used: int = 0
    bad_pieces: int = 0
    replaced: int = 0
    replace_reasons: dict[str, int] = field(default_factory=dict)
    preempted: int = 0  # queries ended so that a player's piece comes first (a rush: Play, a seek)
    delivering: float | None = None  # mean circuits bringing data per half-second, while downloading
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
        index_tail: int = INDEX_TAIL,
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
        self.want_circuits = want_circuits
        self.min = min_circuits
        self.find_timeout = find_timeout
        self.index_tail = index_tail
        self.clock = clock
        self.sched = FetchScheduler(rng or random.Random())
        self.manifest: Manifest | None = None
        self.progress = Progress()
        self._streams: dict[Stream, Delivery] = {}
        self._deliveries: dict[int, Delivery] = {}  # by the scheduler's query id
        self._wake = asyncio.Event()
        self._pending: list[VerifiedPiece] = []
        self._started = clock()
        self._quarter = 0
        self._top_up: asyncio.Future[None] | None = None  # circuits being built beside the loop
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
        self.sched.set_pieces(m.piece_count, m.piece_size, have)
        self.progress.total = m.piece_count
        self.progress.have = m.piece_count - len(self.sched.missing)
        self.progress.size = m.size
        self.progress.bytes_held = m.size - sum(
            _piece_length(m.size, m.piece_size, i) for i in self.sched.missing
        )
        if self.index_tail > 0 and self._mime(m).split("/")[0] in ("audio", "video"):
            # a player opens a file by its first bytes, then (an MP4 may keep its index there) its
            # last ones: both first, so that Play works at once whenever it is pressed; a stream's
            # own windows (its playhead) still go before them
            n = -(-self.index_tail // m.piece_size)
            self.sched.set_window(INDEX_OWNER, 0, min(n, m.piece_count) - 1, self.clock(), tail=n)
        self.progress.state = "downloading"
        self._notify()
        last_check = self.clock()
        while True:
            self._sync_closed()
            actions = self.sched.schedule(self.clock())
            if any(isinstance(a, Done) for a in actions):
                break
            self._apply(actions)
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
            self._sync_closed()
            if self.sched.live():
                m = await self._ask_manifest(errors)
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

    async def _ask_manifest(self, errors: list[str]) -> Manifest | None:
        """One manifest query per circuit, in parallel; the first manifest that verifies wins (a
        lying answer only costs its own query).  Every ORDB sees the hash_name anyway: each
        circuit asks for pieces next."""
        loop = asyncio.get_running_loop()
        asked: dict[asyncio.Future[bytes], int] = {}
        for r in self.sched.ask_manifest(self.clock()):
            d = self._open(r)
            d.answer = loop.create_future()
            asked[d.answer] = r.query
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
            for fut, query in asked.items():
                self._apply(self.sched.end(query))  # nothing for the ones already ended
                if fut.done():
                    fut.exception()  # retrieved: a second failure after the winner is not news

    # ---- circuits ------------------------------------------------------------------------------
    async def _ensure_circuits(self, first: bool = False) -> None:
        self._sync_closed()
        want = min(self.want_circuits, max(self.min, self._count_ordbs()))
        need = want - len(self.sched.live())
        if need <= 0:
            return
        errors: list[str] = []
        now = self.clock()
        for _ in range(need):  # one at a time, so that each circuit goes to a different ORDB
            try:
                circ, ordb = await self._build(self.sched.avoid(now))
            except PeerError as exc:
                errors.append(str(exc))
                break
            self.sched.add_circuit(circ, ordb, self.clock())
        self._sync_closed()
        live = self.sched.live()
        self.progress.circuits = len(live)
        self.progress.ordbs_used = len(self.sched.used_ordbs)
        if first and len(live) < self.min:
            raise PathError(
                f"a download needs circuits to at least {self.min} different ORDBs, got {len(live)}"
                + (f": {errors[0]}" if errors else "")
            )

    def ordb_ids(self) -> set[bytes]:
        """The ORDBs our live circuits end at."""
        return {fc.ordb for fc in self.sched.live()}

    def retire_ordbs(self, ids: set[bytes], why: str) -> int:
        """Replace the circuits that end at one of ``ids`` (e.g. a peer that became our
        neighbour: DESIGN §5 keeps ORDBs apart from guards and neighbours)."""
        actions = self.sched.retire_ordbs(ids, why, self.clock())
        self._apply(actions)
        return sum(isinstance(a, ReplaceCircuit) for a in actions)

    def _sync_closed(self) -> None:
        """Tell the scheduler about circuits the onion core no longer has."""
        for circ, fc in list(self.sched.circuits.items()):
            if not fc.retired and circ not in self.node.circuits:
                self._apply(self.sched.circuit_closed(circ))

    async def _police(self, now: float) -> None:
        """Replace slow or stalled circuits, and keep the number of circuits up (built beside the
        loop: a build takes round trips, and the circuits we have must be kept busy meanwhile)."""
        self._sync_closed()
        self._apply(self.sched.police(now))
        if self._top_up is None or self._top_up.done():
            self._top_up = asyncio.ensure_future(self._build_missing())
        stop = self.sched.stranded(now)
        if stop is not None:
            raise DownloadError(stop.reason)
        elapsed = max(now - self._started, 1e-6)
        self.progress.rate = self.progress.bytes_verified / elapsed
        self._notify()

    async def _build_missing(self) -> None:
        before = len(self.sched.live())
        try:
            await self._ensure_circuits()
        except PeerError as exc:
            log.debug("no replacement circuit: %s", exc)
        if len(self.sched.live()) > before:
            self._wake.set()  # a new circuit: fill its slots now

    # ---- the playhead ------------------------------------------------------------------------------
    def want(self, owner: int, first: int, last: int, *, tail: int = 0) -> None:
        """``owner`` (a stream) wants pieces ``first..last``, and the share's last ``tail`` pieces,
        before the contiguous order; calling again moves its window (queries in flight go on)."""
        self.sched.set_window(owner, first, last, self.clock(), tail)
        self._wake.set()

    def unwant(self, owner: int) -> None:
        """``owner`` wants nothing first any more."""
        self.sched.clear_window(owner)

    # ---- carrying out the scheduler's actions ----------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case Request():
                    self._open(a)
                case EndQuery(query=query, reason=reason):
                    self._end(query, reason)
                case ReportBadPiece(query=query):
                    self._end(query, DbEndReason.BAD_PIECE)  # sent before any DESTROY: the ORDB sees it
                case ReplaceCircuit(circ=circ, reason=why):
                    log.debug("replacing a circuit: %s", why)
                    self.node.destroy_circuit(circ)
                    self._kick()
        self.progress.bad_pieces = self.sched.bad_pieces
        self.progress.replaced = self.sched.replaced
        self.progress.replace_reasons = dict(self.sched.reasons)
        self.progress.preempted = self.sched.preempted
        if self.sched.delivering:
            self.progress.delivering = sum(self.sched.delivering) / len(self.sched.delivering)

    def _open(self, r: Request) -> Delivery:
        body = DbQuery(self.hash_name, r.first, r.count, r.counter).encode()
        sid = self.node.open_db_stream(r.circ, RelayCommand.DB_QUERY, body)
        d = Delivery(r.query, r.circ, sid, r.count)
        self._streams[(r.circ, sid)] = d
        self._deliveries[r.query] = d
        self._kick()
        return d

    def _end(self, query: int, reason: int | None) -> None:
        """Forget a query's stream; tell the ORDB (DB_END ``reason``) unless it is None."""
        d = self._deliveries.pop(query, None)
        if d is None:
            return
        self._streams.pop((d.circ, d.sid), None)
        if reason is not None and d.circ in self.node.circuits:
            self.node.db_end(d.circ, d.sid, DbEnd(reason).encode())
            self._kick()
        self._wake.set()

    def _cancel_all(self) -> None:
        if self._top_up is not None:
            self._top_up.cancel()
        self._apply(self.sched.close())
        for circ in self.sched.circuits:
            if circ in self.node.circuits:
                self.node.destroy_circuit(circ)
        self._kick()

    # ---- events ------------------------------------------------------------------------------
    def handle(self, e: ev.Event) -> bool:
        if isinstance(e, ev.RelayMessageReceived):
            d = self._streams.get((e.circ, e.stream_id))
            if d is None:
                return False
            try:
                self._on_message(d, e.command, e.data)
            except WireError as exc:
                log.debug("malformed delivery: %s", exc)
                self._apply(self.sched.malformed(d.query))
            return True
        if isinstance(e, ev.CircuitClosed) and e.circ in self.sched.circuits:
            self._apply(self.sched.circuit_closed(e.circ))
            self._wake.set()
            return True
        return False

    def _on_message(self, d: Delivery, cmd: int, data: bytes) -> None:
        now = self.clock()
        if cmd == RelayCommand.DB_CONNECTED:
            msg = DbConnected.decode(data)
            self.sched.connected(d.query, now)
            # a second DB_CONNECTED means the ORDB moved the query to another holder: start over
            d.expected, d.got = msg.length, 0
            d.buf.clear()
            pieces = msg.kind == DeliveryKind.PIECES and d.count > 0
            d.reader = FrameReader(max_piece=self._max_piece()) if pieces else None
            return
        if cmd == RelayCommand.DB_DATA:
            self.node.stream_consumed(d.circ, d.sid, 1)
            self.sched.received(d.query, len(data), now)
            d.got += len(data)
            if self.progress.first_byte_s is None:
                self.progress.first_byte_s = now - self._started
            if d.count == 0:
                d.buf += data
                if d.expected is not None and d.got >= d.expected and d.answer and not d.answer.done():
                    d.answer.set_result(bytes(d.buf))
                    self._apply(self.sched.finished(d.query, now))
                return
            if d.reader is None:
                raise WireError("DB_DATA before DB_CONNECTED")
            for frame in d.reader.feed(data):
                self._on_piece(d, frame.index, frame.piece, frame.proof)
            if d.expected is not None and d.got >= d.expected:
                self._apply(self.sched.finished(d.query, now))
            return
        if cmd == RelayCommand.DB_END:
            end = DbEnd.decode(data)
            if d.answer is not None and not d.answer.done():
                if d.expected is not None and d.got >= d.expected:
                    d.answer.set_result(bytes(d.buf))
                else:
                    d.answer.set_exception(DownloadError(f"the ORDB ended the query ({_reason(end.reason)})"))
            self._apply(self.sched.ended(d.query, end.reason, now))  # the stream is already closed

    def _mime(self, m: Manifest) -> str:
        """The share's MIME type, decrypted for an encrypted share ("" when the key is unknown)."""
        if not m.encrypted:
            return m.mime
        if self.key is None:
            return ""
        try:
            return decrypt_metadata(self.key, m.salt, m.meta).mime
        except PeerError:
            return ""

    def _max_piece(self) -> int:
        assert self.manifest is not None
        return self.manifest.piece_size + 16 + 64  # ciphertext tag, slack for live signatures

    def _on_piece(self, d: Delivery, index: int, piece: bytes, proof: bytes) -> None:
        assert self.manifest is not None
        if not self.sched.accept(d.query, index):
            return  # an end-game duplicate, or the query is over
        try:
            verified = verify_pieces(self.manifest, [(index, piece, proof)])
        except (IntegrityError, PeerError, ValueError):
            # a lying holder: report it (the ORDB drops it for this hash_name), fetch elsewhere; a
            # circuit that keeps bringing bad pieces (its ORDB may be the liar) is replaced
            self._apply(self.sched.bad_piece(d.query, self.clock()))
            return
        self._pending += verified
        self.sched.verified(index)
        self.progress.have += 1
        self.progress.bytes_verified += len(piece)
        self.progress.bytes_held += _piece_length(self.manifest.size, self.manifest.piece_size, index)
        if len(self._pending) >= STORE_BATCH or self.sched.urgent(index):
            self._wake.set()  # a stream waits for an urgent piece: store it now

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


def _piece_length(size: int, piece_size: int, index: int) -> int:
    """The plaintext length of piece ``index`` of a ``size``-byte file (the last one may be short)."""
    return max(0, min(piece_size, size - index * piece_size))


def _reason(code: int) -> str:
    try:
        return DbEndReason(code).name
    except ValueError:
        return str(code)
