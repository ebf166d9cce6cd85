"""The holder role (DESIGN §6): announce what we hold to our ORDBs, serve pieces with proofs.

A holder announces through its own circuits (at least 2 hops before each ORDB), a few
hash_names per circuit, after a random delay, with the piece ranges it holds (announced at
25, 50, 75 and 100 %).  When an ORDB passes a query down an announce stream, the holder
opens a new stream of its own on that circuit (only OPs open streams), starting with
DB_CONNECTED and the query's transaction id, then the delivery in DB_DATA and DB_END.
It never links directly to a requester: it does not know who that is.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from peer.errors import PeerError
from peer.net.routing import EventRoutes
from peer.net.tasks import Background
from peer.proto import events as ev
from peer.proto.node import OnionNode
from peer.roles.ratelimit import TokenBucket
from peer.wire.commands import RelayCommand
from peer.wire.ordb import (
    DbConnected,
    DbEnd,
    DbEndReason,
    DbInfo,
    DbQuery,
    DeliveryKind,
    InfoEntry,
    PieceFrame,
    PieceRange,
)
from storage.chunkstore import ChunkStore
from storage.manifest import Manifest
from storage.merkle import HASH_LEN, MerkleProof, path_length

log = logging.getLogger(__name__)

Stream = tuple[int, int]
MAX_PIECES_PER_QUERY = 64
# A query is answered with at most this many bytes of piece frames (one piece at least, whatever
# its size): 64 pieces of 16 MiB would keep one stream busy for a gigabyte.  A requester asking
# for more gets fewer pieces (DB_CONNECTED's count and length say so); it asks again for the rest.
MAX_BYTES_PER_QUERY = 32 << 20
# Queries we serve at once (deliveries on all streams, manifests included).  One more is answered
# DB_END UNAVAILABLE at once, without reading the store: its ORDB tries another holder.  A
# delivery holds about one piece in memory (at most 16 MiB + its proof), so this bounds what
# serving costs.
MAX_SERVING = 32
HASH_NAMES_PER_CIRCUIT = 4
SEND_CHUNK = 16 * 1024  # bytes per send: under a cap a new query waits a chunk per delivery running
ANNOUNCE_RETRY_FIRST = 1.0  # seconds before a failed announcement is tried again; doubles each time
ANNOUNCE_RETRY_MAX = 60.0


@dataclass(eq=False)
class AnnounceCircuit:
    circ: int
    ordb: bytes  # the ORDB's NodeID
    stream: int | None = None
    hash_names: dict[bytes, int] = field(default_factory=dict)  # hash_name -> quarter announced here


@dataclass(frozen=True)
class _Plan:
    """What a query is answered with: ``count`` pieces (0: the manifest ``raw``), ``length`` bytes."""

    kind: DeliveryKind
    count: int
    length: int
    raw: bytes = b""
    m: Manifest | None = None


class _Broken(Exception):
    """A piece of a delivery under way can no longer be read."""


_FRAME_HEAD = len(PieceFrame(0, b"", b"").encode())  # version, index, proof_len, piece_len
_PROOF_HEAD = len(MerkleProof(0, 1, ()).encode())  # version, index, count, path length


def _frame_len(m: Manifest, index: int) -> int:
    """The length of piece ``index``'s frame, from the manifest alone (the tree's shape gives the
    proof's length)."""
    proof = _PROOF_HEAD + HASH_LEN * path_length(index, m.piece_count)
    return _FRAME_HEAD + proof + m.stored_piece_len(index)


def _frame_head(index: int, proof: bytes, piece_len: int) -> bytes:
    """A :class:`PieceFrame` up to its piece (``version index proof_len proof piece_len``)."""
    return PieceFrame(index, proof, b"").encode()[:-4] + piece_len.to_bytes(4, "big")


@dataclass(eq=False)
class Serving:
    stream: Stream
    task: asyncio.Task[None] | None = None
    writable: asyncio.Event = field(default_factory=asyncio.Event)


class HolderService:
    def __init__(
        self,
        node: OnionNode,
        store: ChunkStore,
        *,
        kick: Callable[[], None],
        build_ordb_circuit: Callable[[set[bytes]], Awaitable[tuple[int, bytes]]],
        rng: random.Random | None = None,
        announce_delay: tuple[float, float] = (0.2, 2.0),
        ordbs_per_share: int = 2,
        corrupt: bool = False,
        routes: EventRoutes | None = None,
        max_upload: float | None = None,
    ) -> None:
        self.node = node
        # the upload cap (bytes/s of DB_DATA we serve, all streams together); None: no cap
        self.upload: TokenBucket | None = None
        if max_upload is not None:
            loop_now = asyncio.get_running_loop().time()
            self.upload = TokenBucket(max_upload, max(SEND_CHUNK, max_upload / 4), now=loop_now)
        self._routes = routes  # a stream we serve on another's circuit (serve_here) is ours
        self.store = store
        self._kick = kick
        self._build = build_ordb_circuit
        self.rng = rng or random.Random()
        self.delay = announce_delay
        self.ordbs_per_share = ordbs_per_share
        self.corrupt = corrupt  # test only: serve pieces with a flipped byte (a lying holder)
        self.circuits: dict[int, AnnounceCircuit] = {}
        self.serving: dict[Stream, Serving] = {}
        self.held: set[bytes] = set()  # every hash_name we hold some of (announced or about to be)
        self._announcing: set[bytes] = set()  # hash_names with an announce task running
        self._dirty: set[bytes] = set()  # hash_names whose announcement is due (again)
        self._announce_lock = asyncio.Lock()
        self._waiting = 0  # announce tasks waiting for the lock
        self.announce_retries = 0
        self.last_announce_error = ""
        self._background = Background()
        self.served_pieces = 0
        self.served_queries: dict[bytes, int] = {}  # per hash_name: piece queries answered (in memory)
        self.max_serving = MAX_SERVING
        self._active = 0  # queries being answered (planned or delivering)
        self.refused_busy = 0  # queries answered UNAVAILABLE because max_serving were being served

    # ---- announcing ----------------------------------------------------------------------------
    def owns(self, stream: Stream) -> bool:
        return stream in self.serving or any(
            c.circ == stream[0] and c.stream == stream[1] for c in self.circuits.values()
        )

    def announce_soon(self, hash_name: bytes) -> None:
        """Announce (or update) a hash_name after a random delay (DB_INFO must not time a download),
        and keep trying, with a growing pause, until enough ORDBs have it: an announcement that
        fails (no path to an ORDB yet, a circuit that does not build under load) must not leave
        a share unfindable until the peer restarts."""
        self.held.add(hash_name)
        self._dirty.add(hash_name)
        if hash_name not in self._announcing:
            self._announcing.add(hash_name)
            self._background.spawn(self._announce(hash_name))

    async def announce_held(self) -> int:
        """Announce every share the store seeds (at start: a restart must not unshare anything)."""
        n = 0
        for info in await self.store.list():
            if info.hash_name is not None and info.seeding and info.have_count > 0:
                self.announce_soon(info.hash_name)
                n += 1
        return n

    async def _announce(self, hash_name: bytes) -> None:
        try:
            await asyncio.sleep(self.rng.uniform(*self.delay))
            pause = ANNOUNCE_RETRY_FIRST
            while hash_name in self._dirty:
                self._dirty.discard(hash_name)
                self._waiting += 1
                async with self._announce_lock:  # one at a time: later ones reuse the circuits built
                    self._waiting -= 1
                    done = await self._announce_once(hash_name)
                if not done:
                    self._dirty.add(hash_name)
                    self.announce_retries += 1
                    await asyncio.sleep(pause * self.rng.uniform(0.75, 1.25))
                    pause = min(2 * pause, ANNOUNCE_RETRY_MAX)
        finally:
            self._announcing.discard(hash_name)

    async def _announce_once(self, hash_name: bytes) -> bool:
        """Send the DB_INFO to up to ``ordbs_per_share`` ORDBs; False: try again later."""
        try:
            have = await self.store.have(hash_name)
        except PeerError:
            return True  # deleted meanwhile: nothing to announce
        if have.count == 0:
            return True
        quarter = min(4, have.have() * 4 // have.count)
        if quarter == 0:
            return True
        ranges = tuple(PieceRange(a, b) for a, b in have.ranges()[:40])
        body = DbInfo((InfoEntry(hash_name, have.count, ranges),)).encode()
        targets = [c for c in self.circuits.values() if hash_name in c.hash_names]
        for ac in targets:
            if ac.hash_names[hash_name] < quarter:
                self._send_info(ac, hash_name, quarter, body)
        builds = 0
        while len(targets) < self.ordbs_per_share:
            spare = [
                c
                for c in self.circuits.values()
                if c not in targets
                and len(c.hash_names) < HASH_NAMES_PER_CIRCUIT
                and c.circ in self.node.circuits
            ]
            if spare:
                ac = self.rng.choice(spare)
            elif builds >= 2 * self.ordbs_per_share or (targets and self._waiting):
                break  # topping up an announced share waits while others are not announced at all
            else:
                builds += 1
                try:
                    circ, ordb = await self._build({c.ordb for c in targets})
                except PeerError as exc:
                    self.last_announce_error = str(exc)
                    # unfindable until a retry works: worth telling; fewer ORDBs than wished is not
                    (log.debug if targets else log.info)(
                        "announce: no circuit to an ORDB (will retry): %s", exc
                    )
                    break
                ac = AnnounceCircuit(circ, ordb)
                self.circuits[circ] = ac
            if self._send_info(ac, hash_name, quarter, body):
                targets.append(ac)
        self._kick()
        return len(targets) >= self.ordbs_per_share

    def _send_info(self, ac: AnnounceCircuit, hash_name: bytes, quarter: int, body: bytes) -> bool:
        if ac.circ not in self.node.circuits:
            self.circuits.pop(ac.circ, None)
            return False
        ac.hash_names[hash_name] = quarter
        if ac.stream is None:
            ac.stream = self.node.open_db_stream(ac.circ, RelayCommand.DB_INFO, body)
        else:
            self.node.send_relay(ac.circ, RelayCommand.DB_INFO, ac.stream, body)
        return True

    def announce_status(self) -> dict[str, object]:
        return {
            "circuits": len(self.circuits),
            "announced": len({hn for c in self.circuits.values() for hn in c.hash_names}),  # at >= 1 ORDB
            "pending": len(self._announcing),
            "retries": self.announce_retries,
            "last_error": self.last_announce_error,
        }

    # ---- events --------------------------------------------------------------------------------
    def handle(self, e: ev.Event) -> bool:
        if isinstance(e, ev.RelayMessageReceived):  # hop -1: a stream we serve_here at our ORDB
            key = (e.circ, e.stream_id)
            ac = self.circuits.get(e.circ)
            if ac is not None and ac.stream == e.stream_id:
                if e.command == RelayCommand.DB_QUERY:
                    try:
                        q = DbQuery.decode(e.data)
                    except PeerError:
                        return True
                    self._background.spawn(self._serve(e.circ, q))
                elif e.command == RelayCommand.DB_END:
                    # the ORDB closed our announce stream: announce again (a new stream)
                    ac.stream = None
                    self._reannounce(ac)
                return True
            s = self.serving.get(key)
            if s is not None:
                if e.command == RelayCommand.DB_END and s.task is not None:
                    s.task.cancel()  # the ORDB says stop (RESET: another holder continues)
                    self.serving.pop(key, None)
                return True
            return False
        if isinstance(e, ev.StreamWritable):
            s = self.serving.get((e.circ, e.stream_id))
            if s is not None:
                s.writable.set()
                return True
        if isinstance(e, ev.CircuitClosed):
            ac = self.circuits.pop(e.circ, None)
            if ac is not None:
                self._reannounce(ac)  # keep announcing through another circuit
            for key in [k for k in self.serving if k[0] == e.circ]:
                s = self.serving.pop(key)
                if s.task is not None:
                    s.task.cancel()
        return False

    def ordb_ids(self) -> set[bytes]:
        """The ORDBs our announce circuits end at."""
        return {ac.ordb for ac in self.circuits.values()}

    def retire_ordbs(self, ids: set[bytes]) -> int:
        """Close the announce circuits that end at one of ``ids`` (peers that became our guards
        or neighbours since: DESIGN §5 keeps ORDBs apart from both); what they carried is
        announced again elsewhere.  Returns how many were closed."""
        gone = [ac for ac in self.circuits.values() if ac.ordb in ids]
        for ac in gone:
            self.node.destroy_circuit(ac.circ)
        if gone:
            self._kick()
        return len(gone)

    def _reannounce(self, ac: AnnounceCircuit) -> None:
        for hn in ac.hash_names:
            self.announce_soon(hn)
        ac.hash_names.clear()

    # ---- serving -------------------------------------------------------------------------------
    def _count(self, m: Manifest, q: DbQuery) -> int:
        """How many pieces from ``q.first`` we answer: at most ``MAX_PIECES_PER_QUERY``, and no more
        than ``MAX_BYTES_PER_QUERY`` of frames (always one at least); 0 if the run asked for goes
        past the share's end."""
        n = min(q.count, MAX_PIECES_PER_QUERY)
        if q.first + n > m.piece_count:
            return 0
        total = 0
        for k in range(n):
            total += _frame_len(m, q.first + k)
            if k and total > MAX_BYTES_PER_QUERY:
                return k
        return n

    async def _plan(self, q: DbQuery) -> _Plan:
        """What we answer to a query, without reading any piece: the manifest, or which pieces and
        the exact length of their frames.  LookupError if we do not (or no longer) serve it."""
        raw = await self.store.get_manifest(q.hash_name)
        if not (await self.store.get_download_state(q.hash_name)).seeding:
            raise LookupError("not seeding")  # switched off (the library's seeding toggle)
        if q.wants_manifest:
            return _Plan(DeliveryKind.MANIFEST, 0, len(raw), raw)
        m = await self.store.manifest(q.hash_name)
        count = self._count(m, q)
        have = await self.store.have(q.hash_name)
        if count < 1 or any(i not in have for i in range(q.first, q.first + count)):
            raise LookupError("pieces missing")
        length = sum(_frame_len(m, i) for i in range(q.first, q.first + count))
        return _Plan(DeliveryKind.PIECES, count, length, m=m)

    async def _chunks(self, q: DbQuery, plan: _Plan) -> AsyncGenerator[bytes, None]:
        """The delivery in chunks of at most ``SEND_CHUNK`` bytes, one piece read at a time (a piece
        is read from the store when the one before has been queued on the stream).

        _Broken if a piece went missing or no longer verifies (the store drops it) meanwhile."""
        if plan.m is None:
            for a in range(0, len(plan.raw), SEND_CHUNK):
                yield plan.raw[a : a + SEND_CHUNK]
            return
        for i in range(q.first, q.first + plan.count):
            try:
                data, proof = await self.store.get_piece(q.hash_name, i)
            except PeerError as exc:
                raise _Broken(f"piece {i}: {exc}") from exc
            head = _frame_head(i, proof.encode(), len(data))
            if len(head) + len(data) != _frame_len(plan.m, i):
                raise _Broken(f"piece {i} is not the size its manifest says")
            view = memoryview(data)
            first = SEND_CHUNK - len(head)
            if self.corrupt:  # a lying holder: the piece's first byte flipped
                yield head + bytes([data[0] ^ 0xFF]) + bytes(view[1:first])
            else:
                yield head + bytes(view[:first])
            for a in range(first, len(data), SEND_CHUNK):
                yield bytes(view[a : a + SEND_CHUNK])
            del data, view

    async def _deliver(self, circ: int, sid: int, q: DbQuery, plan: _Plan, txid: bytes) -> None:
        s = Serving((circ, sid), asyncio.current_task())
        self.serving[(circ, sid)] = s
        if self._routes is not None:
            self._routes.own_stream(circ, sid, self.handle)
        try:
            loop = asyncio.get_running_loop()
            reason = DbEndReason.FINISHED
            chunks = self._chunks(q, plan)
            try:
                async for chunk in chunks:
                    if self.upload is not None:
                        wait = self.upload.reserve(len(chunk), loop.time())
                        if wait > 0:
                            try:
                                await asyncio.sleep(wait)
                            except asyncio.CancelledError:
                                # the requester left: its place in the queue goes to the others
                                self.upload.refund(len(chunk), loop.time())
                                raise
                    if not self.node.stream_send(circ, sid, chunk):
                        s.writable.clear()
                        self._kick()
                        await s.writable.wait()
                    self._kick()
            except _Broken as exc:
                # the length announced cannot be met: end the stream (the requester asks again)
                log.debug("a delivery broken off: %s", exc)  # which share we serve is not for the log
                reason = DbEndReason.DESTROYED
            finally:
                await chunks.aclose()
            self.node.db_end(circ, sid, DbEnd(reason, txid).encode())
            self._kick()
            if reason == DbEndReason.FINISHED and plan.kind == DeliveryKind.PIECES:
                self.served_pieces += plan.count
                self.served_queries[q.hash_name] = self.served_queries.get(q.hash_name, 0) + 1
        except PeerError:
            pass
        finally:
            self.serving.pop((circ, sid), None)
            if self._routes is not None:
                self._routes.release_stream(circ, sid)

    async def _answer(self, circ: int, sid: int | None, q: DbQuery, txid: bytes) -> None:
        """Answer a query: on a new stream of ours on ``circ`` (``sid`` None: a query passed down
        our announce stream), or on the requester's stream ``sid`` (serve_here)."""
        busy = self._active >= self.max_serving
        self._active += 1  # before any await: queries arriving meanwhile count this one
        try:
            if busy:
                self.refused_busy += 1
                raise LookupError("serving as many queries as we may")
            plan = await self._plan(q)
        except (PeerError, LookupError):
            self._active -= 1
            if sid is not None:
                self.node.db_end(circ, sid, DbEnd(DbEndReason.UNAVAILABLE).encode())
            elif circ in self.node.circuits:
                hello = DbConnected(txid, DeliveryKind.PIECES, q.first, 0, 0)
                sid = self.node.open_db_stream(circ, RelayCommand.DB_CONNECTED, hello.encode())
                self.node.db_end(circ, sid, DbEnd(DbEndReason.UNAVAILABLE, txid).encode())
            self._kick()
            return
        try:
            hello = DbConnected(txid, plan.kind, q.first, plan.count, plan.length)
            if sid is not None:
                self.node.send_relay(circ, RelayCommand.DB_CONNECTED, sid, hello.encode())
            elif circ in self.node.circuits:
                sid = self.node.open_db_stream(circ, RelayCommand.DB_CONNECTED, hello.encode())
            else:
                return
            await self._deliver(circ, sid, q, plan, txid)
        finally:
            self._active -= 1

    async def _serve(self, circ: int, q: DbQuery) -> None:
        await self._answer(circ, None, q, q.txid)

    async def has(self, q: DbQuery) -> bool:
        """Do we hold what a query asks for (the manifest, or every piece we would answer)?"""
        try:
            have = await self.store.have(q.hash_name)
            if q.wants_manifest:
                return True
            count = self._count(await self.store.manifest(q.hash_name), q)
        except PeerError:
            return False
        return count > 0 and all(i in have for i in range(q.first, q.first + count))

    async def serve_here(self, stream: tuple[int, int], q: DbQuery) -> None:
        """As an ORDB that holds the content itself: answer on the requester's query stream.

        (Forwarding the query would show the next ORDB our identity next to a hash_name we hold.)"""
        await self._answer(stream[0], stream[1], q, bytes(16))

    async def close(self) -> None:
        await self._background.close()
