"""The holder (peer.roles.holder, DESIGN §6) on the real onion core and driver over in-memory links,
with a real SQLite chunk store.

Peer 0 holds; its announce circuits go 0 -> 1 -> 2 -> ORDB, the ORDB being peer 3, 4 or 5.  The
ORDBs are small fakes that speak the DB_* messages through their node (docs/ordb-protocol.md):
they record each DB_INFO, pass queries down the announce stream, and collect what the holder
sends back on the streams it opens (DB_CONNECTED, DB_DATA, DB_END).  Pieces that arrive are
verified against the manifest as a requester would.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peer.errors import IntegrityError, PathError, PeerError
from peer.net.routing import EventRoutes
from peer.proto import events as ev
from peer.roles import holder as holder_mod
from peer.roles.holder import HolderService
from peer.testing.swarm import Swarm, SwarmPeer
from peer.wire.commands import RelayCommand
from peer.wire.ordb import (
    DbConnected,
    DbEnd,
    DbEndReason,
    DbInfo,
    DbQuery,
    DeliveryKind,
    FrameReader,
    PieceFrame,
)
from storage.chunkstore import ChunkStore
from storage.errors import CorruptPiece
from storage.manifest import parse_manifest
from storage.merkle import MerkleProof
from storage.verify import verify_pieces

PIECE = 16 * 1024
SIZE = 40 * PIECE - 1000  # 40 pieces, about 660 KB with proofs: more than a stream window and
# the send buffer above it, so a delivery waits for the ORDB's SENDMEs
TXID = bytes(range(16))
ORDBS = (3, 4, 5)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holder_mod, "ANNOUNCE_RETRY_FIRST", 0.02)


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(6)
    yield s
    await s.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def later(p: SwarmPeer) -> None:
    asyncio.get_running_loop().call_soon(p.driver.flush)


@dataclass
class Delivery:
    hello: DbConnected
    data: bytes = b""
    end: DbEnd | None = None


@dataclass
class Announce:
    circ: int
    stream: int
    infos: list[DbInfo] = field(default_factory=list)


class FakeOrdb:
    """The ORDB end of the holder's announce circuits."""

    def __init__(self, swarm: Swarm, index: int) -> None:
        self.peer = swarm.peers[index]
        self.index = index
        self.announces: list[Announce] = []
        self.deliveries: dict[tuple[int, int], Delivery] = {}
        self.consume = True  # acknowledge DB_DATA (else the holder's window runs dry)
        self.peer.driver.on_event = self.on_event

    def on_event(self, e: ev.Event) -> None:
        if not isinstance(e, ev.RelayMessageReceived):
            return
        key = (e.circ, e.stream_id)
        if e.command == RelayCommand.DB_INFO:
            a = next((a for a in self.announces if (a.circ, a.stream) == key), None)
            if a is None:
                a = Announce(e.circ, e.stream_id)
                self.announces.append(a)
            a.infos.append(DbInfo.decode(e.data))
        elif e.command == RelayCommand.DB_CONNECTED:
            self.deliveries[key] = Delivery(DbConnected.decode(e.data))
        elif e.command == RelayCommand.DB_DATA:
            self.deliveries[key].data += e.data
            if self.consume:
                self.peer.node.stream_consumed(e.circ, e.stream_id, 1)
                later(self.peer)
        elif e.command == RelayCommand.DB_END and key in self.deliveries:
            self.deliveries[key].end = DbEnd.decode(e.data)

    def live(self) -> list[Announce]:
        return [a for a in self.announces if a.circ in self.peer.node.circuits]

    def ask(self, q: DbQuery | bytes, announce: Announce | None = None) -> None:
        a = announce or self.live()[-1]
        body = q if isinstance(q, bytes) else q.encode()
        self.peer.node.send_relay(a.circ, RelayCommand.DB_QUERY, a.stream, body)
        self.peer.driver.flush()

    def end(self, key: tuple[int, int], reason: DbEndReason) -> None:
        self.peer.node.db_end(key[0], key[1], DbEnd(reason).encode())
        self.peer.driver.flush()


class Holder:
    """Peer 0 as the runtime wires its holder: circuit events go to the owner of the circuit."""

    def __init__(
        self, swarm: Swarm, store: ChunkStore, *, ordbs_per_share: int = 1, corrupt: bool = False
    ) -> None:
        self.swarm = swarm
        self.peer = swarm.peers[0]
        self.unowned: list[ev.Event] = []
        self.routes = EventRoutes(self.unowned.append)
        self.ordbs = {i: FakeOrdb(swarm, i) for i in ORDBS}
        self.builds: list[set[bytes]] = []  # the exclude set of each build
        self.banned: set[int] = set()  # ORDBs no longer eligible (they became neighbours)
        self.fail_builds = 0
        self.h = HolderService(
            self.peer.node,
            store,
            kick=self.peer.driver.flush,
            build_ordb_circuit=self.build,
            announce_delay=(0, 0),
            ordbs_per_share=ordbs_per_share,
            corrupt=corrupt,
            routes=self.routes,
        )
        self.peer.driver.on_event = self.on_event

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, (ev.RelayMessageReceived, ev.StreamWritable, ev.CircuitClosed)):
            self.routes.route(e)

    def nid(self, i: int) -> bytes:
        return self.swarm.peers[i].keys.node_id

    async def build(self, exclude: set[bytes]) -> tuple[int, bytes]:
        self.builds.append(set(exclude))
        if self.fail_builds:
            self.fail_builds -= 1
            raise PathError("no eligible ORDB")
        target = next((i for i in ORDBS if i not in self.banned and self.nid(i) not in exclude), None)
        if target is None:
            raise PathError("no eligible ORDB")
        circ = await self.swarm.build_circuit(0, [1, 2, target])
        self.routes.own_circuit(circ, self.h.handle)
        return circ, self.nid(target)

    def announced_at(self) -> set[int]:
        return {i for i, o in self.ordbs.items() if o.live()}


async def share(store: ChunkStore, tmp_path: Path, size: int = SIZE, piece_size: int = PIECE) -> bytes:
    f = tmp_path / f"file-{size}.bin"
    f.write_bytes(os.urandom(size))
    res = await store.import_file(f, encrypt=False, randbytes=os.urandom, piece_size=piece_size)
    assert res.hash_name is not None
    return res.hash_name


async def announced(holder: Holder, hn: bytes, ordb: int = 3) -> FakeOrdb:
    holder.h.announce_soon(hn)
    o = holder.ordbs[ordb]
    await until(lambda: bool(o.live()) and bool(o.live()[-1].infos))
    return o


async def delivered(o: FakeOrdb, n: int = 1) -> list[Delivery]:
    await until(lambda: sum(d.end is not None for d in o.deliveries.values()) >= n)
    return list(o.deliveries.values())


async def pieces_of(store: ChunkStore, hn: bytes, data: bytes) -> list[int]:
    """Verify a PIECES delivery as a requester would; the indexes of the verified pieces."""
    manifest = parse_manifest(await store.get_manifest(hn), hn)
    frames = FrameReader(manifest.piece_size + 64).feed(data)
    return [p.index for p in verify_pieces(manifest, [(f.index, f.piece, f.proof) for f in frames])]


# ---- announcing ----------------------------------------------------------------------------------


async def test_the_announcement_lists_what_the_store_holds(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    (a,) = o.announces
    ((entry,),) = [info.entries for info in a.infos]
    have = await store.have(hn)
    assert entry.hash_name == hn and entry.piece_count == have.count == 40
    assert [(r.start, r.end) for r in entry.ranges] == have.ranges() == [(0, 40)]
    (ac,) = holder.h.circuits.values()
    assert ac.ordb == holder.nid(3) and ac.hash_names == {hn: 4}
    assert ac.stream is not None and holder.h.owns((ac.circ, ac.stream))
    assert not holder.h.owns((ac.circ, ac.stream + 1))
    await holder.h.close()


async def test_a_share_goes_to_as_many_ordbs_as_asked(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store, ordbs_per_share=2)
    hn = await share(store, tmp_path)
    holder.h.announce_soon(hn)
    await until(lambda: holder.announced_at() == {3, 4})
    assert holder.builds == [set(), {holder.nid(3)}]  # the second build avoids the first ORDB
    await until(lambda: holder.h.announce_status()["pending"] == 0)
    assert holder.h.announce_status() == {
        "circuits": 2,
        "announced": 1,
        "pending": 0,
        "retries": 0,
        "last_error": "",
    }
    await holder.h.close()


async def partial(store: ChunkStore, tmp_path: Path, have: int) -> tuple[ChunkStore, bytes]:
    """A second store holding the manifest and the first ``have`` pieces of a share of ``store``."""
    hn = await share(store, tmp_path)
    other = await ChunkStore.open(tmp_path / "partial.db")
    manifest = await other.put_manifest(await store.get_manifest(hn), expected_hash=hn)
    if have:
        got = await store.get_pieces(hn, 0, have - 1)
        await other.put_pieces(hn, verify_pieces(manifest, got))
    return other, hn


async def give(dst: ChunkStore, src: ChunkStore, hn: bytes, first: int, last: int) -> None:
    manifest = await dst.manifest(hn)
    await dst.put_pieces(hn, verify_pieces(manifest, await src.get_pieces(hn, first, last)))


async def test_progress_is_announced_by_quarters_on_the_same_stream(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    other, hn = await partial(store, tmp_path, 8)  # 8 of 40: under a quarter
    try:
        holder = Holder(swarm, other)
        holder.h.announce_soon(hn)
        await until(lambda: holder.h.announce_status()["pending"] == 0)
        assert holder.builds == [] and holder.h.circuits == {}  # nothing worth announcing yet
        await give(other, store, hn, 8, 11)  # 12 of 40: the first quarter
        o = await announced(holder, hn)
        await give(other, store, hn, 12, 15)  # 16 of 40: still the first quarter
        holder.h.announce_soon(hn)
        await until(lambda: holder.h.announce_status()["pending"] == 0)
        await give(other, store, hn, 16, 39)  # all of it
        holder.h.announce_soon(hn)
        await until(lambda: len(o.announces[0].infos) == 2)
        (a,) = o.announces  # one stream: the update follows the first DB_INFO
        ranges = [[(r.start, r.end) for r in info.entries[0].ranges] for info in a.infos]
        assert ranges == [[(0, 12)], [(0, 40)]]
        assert len(holder.builds) == 1
        await holder.h.close()
    finally:
        await other.close()


async def test_a_share_deleted_before_its_announcement_is_dropped(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    await store.remove(hn)
    holder.h.announce_soon(hn)
    await until(lambda: holder.h.announce_status()["pending"] == 0)
    assert holder.builds == [] and holder.h.announce_retries == 0
    await holder.h.close()


async def test_an_empty_share_is_not_announced(swarm: Swarm, store: ChunkStore, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        holder = Holder(swarm, store)
        hn = await share(store, tmp_path, size=0)
        holder.h.announce_soon(hn)
        await until(lambda: holder.h.announce_status()["pending"] == 0)
        assert holder.builds == [] and holder.h.announce_retries == 0
        gc.collect()  # a background task that died of an exception would be reported now
        assert errors == []
        await holder.h.close()
    finally:
        loop.set_exception_handler(None)


async def test_the_ordb_closing_the_announce_stream_brings_a_new_one(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    first = o.announces[0]
    o.end((first.circ, first.stream), DbEndReason.DESTROYED)
    await until(lambda: len(o.announces) == 2)
    again = o.announces[1]
    assert again.circ == first.circ and again.stream != first.stream  # same circuit, new stream
    assert again.infos[0].entries[0].hash_name == hn and len(holder.builds) == 1
    await holder.h.close()


async def test_ordbs_that_became_neighbours_are_retired(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store, ordbs_per_share=2)
    hn = await share(store, tmp_path)
    holder.h.announce_soon(hn)
    await until(lambda: holder.announced_at() == {3, 4})
    assert holder.h.ordb_ids() == {holder.nid(3), holder.nid(4)}
    assert holder.h.retire_ordbs({holder.nid(1), holder.nid(5)}) == 0  # none of ours
    holder.banned.add(3)  # 3 linked to us: the circuit manager no longer picks it
    assert holder.h.retire_ordbs({holder.nid(3)}) == 1
    await until(lambda: holder.announced_at() == {4, 5})
    assert sorted(ac.ordb for ac in holder.h.circuits.values()) == sorted([holder.nid(4), holder.nid(5)])
    assert holder.builds[-1] == {holder.nid(4)}
    await holder.h.close()


# ---- serving -------------------------------------------------------------------------------------


async def test_a_manifest_query_is_answered_with_the_manifest(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    o.ask(DbQuery(hn, 0, 0, 0, TXID))
    (d,) = await delivered(o)
    manifest = await store.get_manifest(hn)
    assert d.hello == DbConnected(TXID, DeliveryKind.MANIFEST, 0, 0, len(manifest))
    assert d.data == manifest and d.end == DbEnd(DbEndReason.FINISHED, TXID)
    assert holder.h.served_pieces == 0
    await holder.h.close()


async def test_pieces_are_served_with_proofs_that_verify(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    o.ask(DbQuery(hn, 2, 38, 0, TXID))
    (d,) = await delivered(o)
    assert (d.hello.txid, d.hello.kind, d.hello.first, d.hello.count) == (TXID, DeliveryKind.PIECES, 2, 38)
    assert d.hello.length == len(d.data) > 600_000
    assert await pieces_of(store, hn, d.data) == list(range(2, 40))
    assert d.end == DbEnd(DbEndReason.FINISHED, TXID)
    assert holder.h.served_pieces == 38 and holder.h.serving == {}
    await holder.h.close()


async def test_a_lying_holder_serves_pieces_that_fail_verification(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store, corrupt=True)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    o.ask(DbQuery(hn, 0, 2, 0, TXID))
    (d,) = await delivered(o)
    with pytest.raises((IntegrityError, PeerError)):
        await pieces_of(store, hn, d.data)
    await holder.h.close()


@pytest.mark.parametrize("what", ["missing-pieces", "unknown-share"])
async def test_what_the_holder_lacks_is_answered_unavailable(
    swarm: Swarm, store: ChunkStore, tmp_path: Path, what: str
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    q = DbQuery(hn, 38, 4, 0, TXID) if what == "missing-pieces" else DbQuery(bytes(32), 0, 0, 0, TXID)
    o.ask(q)
    (d,) = await delivered(o)
    assert d.hello == DbConnected(TXID, DeliveryKind.PIECES, q.first, 0, 0) and d.data == b""
    assert d.end == DbEnd(DbEndReason.UNAVAILABLE, TXID)
    assert holder.h.served_pieces == 0
    await holder.h.close()


async def test_a_malformed_query_is_ignored(swarm: Swarm, store: ChunkStore, tmp_path: Path) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    o.ask(b"\x09 not a query")
    o.ask(DbQuery(hn, 0, 1, 0, TXID))
    (d,) = await delivered(o)  # only the good query got an answer
    assert d.end == DbEnd(DbEndReason.FINISHED, TXID) and await pieces_of(store, hn, d.data) == [0]
    await holder.h.close()


async def stalled(holder: Holder, o: FakeOrdb, hn: bytes) -> tuple[int, int]:
    """A big delivery that the ORDB stops acknowledging: the holder waits for window."""
    o.consume = False
    o.ask(DbQuery(hn, 0, 40, 0, TXID))
    await until(lambda: bool(holder.h.serving) and bool(o.deliveries))
    (key,) = o.deliveries
    await until(lambda: len(o.deliveries[key].data) > 200_000)
    await asyncio.sleep(0.05)
    assert o.deliveries[key].end is None and len(holder.h.serving) == 1
    return key


async def test_the_ordb_stopping_a_delivery_stops_it(swarm: Swarm, store: ChunkStore, tmp_path: Path) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    key = await stalled(holder, o, hn)
    (serving,) = holder.h.serving.values()
    o.end(key, DbEndReason.RESET)  # another holder continues
    await until(lambda: holder.h.serving == {})
    assert serving.task is not None
    await until(serving.task.done)
    assert serving.task.cancelled()
    await asyncio.sleep(0.05)
    assert o.deliveries[key].end is None  # no DB_END FINISHED after the stop
    await holder.h.close()


async def test_a_lost_announce_circuit_stops_its_deliveries_and_is_replaced(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    await stalled(holder, o, hn)
    (serving,) = holder.h.serving.values()
    (lost,) = holder.h.circuits
    holder.peer.driver.destroy_circuit(lost)
    await until(lambda: holder.h.serving == {} and serving.task is not None and serving.task.done())
    await until(lambda: len(o.live()) == 1 and o.live()[0].circ not in (a.circ for a in o.announces[:1]))
    assert lost not in holder.h.circuits and len(holder.builds) == 2
    await holder.h.close()


# ---- bounded memory and load -------------------------------------------------------------------

BIG = 2 << 20  # pieces of a "big" share: 3 of them


class Meter:
    """Counts the piece bytes the holder reads from its store and the bytes it hands to its streams:
    ``held`` is the most read and not yet handed on at any moment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, holder: Holder, store: ChunkStore) -> None:
        self.read = self.sent = self.held = 0
        get_piece, get_pieces, send = store.get_piece, store.get_pieces, holder.peer.node.stream_send

        async def one(hn: bytes, i: int) -> tuple[bytes, MerkleProof]:
            got = await get_piece(hn, i)
            self._read(len(got[0]))
            return got

        async def many(hn: bytes, a: int, b: int) -> list[tuple[int, bytes, MerkleProof]]:
            got = await get_pieces(hn, a, b)
            self._read(sum(len(d) for _, d, _ in got))
            return got

        def sending(circ: int, sid: int, data: bytes) -> bool:
            self.sent += len(data)
            return send(circ, sid, data)

        monkeypatch.setattr(store, "get_piece", one)
        monkeypatch.setattr(store, "get_pieces", many)
        monkeypatch.setattr(holder.peer.node, "stream_send", sending)

    def _read(self, n: int) -> None:
        self.read += n
        self.held = max(self.held, self.read - self.sent)


async def test_a_big_delivery_reads_one_piece_at_a_time(
    swarm: Swarm, store: ChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 pieces of 2 MiB go out in one query without the holder holding more than one piece: each
    piece is read once the one before is on the stream.  The Python heap's peak during the delivery
    stays under 3 pieces: the piece being sent, the previous read's rows (aiosqlite's worker thread
    keeps its last result until its next query) and the stream and link buffers (bounded by the
    windows, well under a piece); the whole delivery in memory at once would be 6 MiB, twice that
    with its frames.  The ORDB keeps none of it: it hashes the byte stream as it comes and compares
    it with the frames the store gives, computed before the measurement."""
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path, size=3 * BIG - 5, piece_size=BIG)
    manifest = parse_manifest(await store.get_manifest(hn), hn)
    want = hashlib.sha256()
    for i, data, proof in await store.get_pieces(hn, 0, 2):
        want.update(PieceFrame(i, proof.encode(), data).encode())
    o = await announced(holder, hn)
    meter = Meter(monkeypatch, holder, store)
    got, n = hashlib.sha256(), [0]

    def lean(e: ev.Event) -> None:  # the ORDB keeps no delivery bytes
        if isinstance(e, ev.RelayMessageReceived) and e.command == RelayCommand.DB_DATA:
            got.update(e.data)
            n[0] += len(e.data)
            o.peer.node.stream_consumed(e.circ, e.stream_id, 1)
            later(o.peer)
            return
        o.on_event(e)

    o.peer.driver.on_event = lean
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        o.ask(DbQuery(hn, 0, 3, 0, TXID))
        await until(lambda: any(d.end is not None for d in o.deliveries.values()), 60)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    (d,) = o.deliveries.values()
    assert d.end == DbEnd(DbEndReason.FINISHED, TXID) and d.hello.count == 3
    assert n[0] == d.hello.length and got.digest() == want.digest()  # the frames, the length announced
    assert meter.read == manifest.size  # every piece read once
    assert meter.held <= BIG  # no piece read before the one before was handed on
    assert peak < 3 * BIG, f"heap peak {peak} during a delivery of {manifest.size} bytes"
    await holder.h.close()


async def test_a_query_for_more_bytes_than_the_cap_is_answered_with_fewer_pieces(
    swarm: Swarm, store: ChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holder_mod, "MAX_BYTES_PER_QUERY", 5 * PIECE)
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    o.ask(DbQuery(hn, 3, 30, 0, TXID))
    (d,) = await delivered(o)
    # four frames (a piece and its proof each) fit in 5 pieces' bytes, five do not
    assert (d.hello.first, d.hello.count) == (3, 4) and d.hello.length == len(d.data) <= 5 * PIECE
    assert await pieces_of(store, hn, d.data) == [3, 4, 5, 6]
    assert d.end == DbEnd(DbEndReason.FINISHED, TXID) and holder.h.served_pieces == 4
    assert await holder.h.has(DbQuery(hn, 10, 30, 0))  # what we would answer: 10..13
    await holder.h.close()


async def test_queries_beyond_those_served_at_once_are_answered_unavailable(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    holder.h.max_serving = 1
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    key = await stalled(holder, o, hn)  # one delivery under way, waiting for window
    o.ask(DbQuery(hn, 0, 1, 0, TXID[::-1]))
    o.ask(DbQuery(hn, 0, 0, 0, TXID[::-1]))  # a manifest too
    await until(lambda: sum(d.end is not None for d in o.deliveries.values()) == 2)
    for k, d in o.deliveries.items():
        if k != key:
            assert d.hello == DbConnected(TXID[::-1], DeliveryKind.PIECES, 0, 0, 0) and d.data == b""
            assert d.end == DbEnd(DbEndReason.UNAVAILABLE, TXID[::-1])
    assert o.deliveries[key].end is None and holder.h.refused_busy == 2
    o.end(key, DbEndReason.RESET)  # the first one stops: the next query is served
    await until(lambda: holder.h.serving == {})
    o.consume = True
    o.ask(DbQuery(hn, 5, 2, 0, TXID))
    await until(lambda: sum(d.end is not None for d in o.deliveries.values()) == 3)
    (last,) = [d for k, d in o.deliveries.items() if k != key and d.hello.count]
    assert last.end == DbEnd(DbEndReason.FINISHED, TXID) and await pieces_of(store, hn, last.data) == [5, 6]
    await holder.h.close()


async def test_a_piece_lost_during_a_delivery_ends_it(
    swarm: Swarm, store: ChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The length was announced from the manifest; a piece the store finds corrupt when it comes to
    it (and drops) ends the stream DESTROYED, not with a short delivery called FINISHED."""
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    o = await announced(holder, hn)
    get_piece = store.get_piece

    async def rotten(h: bytes, i: int) -> tuple[bytes, MerkleProof]:
        if i == 7:
            raise CorruptPiece("stored piece 7 was corrupt and has been dropped")
        return await get_piece(h, i)

    monkeypatch.setattr(store, "get_piece", rotten)
    o.ask(DbQuery(hn, 0, 10, 0, TXID))
    (d,) = await delivered(o)
    assert d.end == DbEnd(DbEndReason.DESTROYED, TXID) and len(d.data) < d.hello.length
    assert await pieces_of(store, hn, d.data) == list(range(7))
    assert holder.h.served_pieces == 0 and holder.h.serving == {}
    await holder.h.close()


# ---- serving from our own ORDB -------------------------------------------------------------------


class Requester:
    """Peer 5 asks peer 0 (an ORDB that holds the share itself) through 4 -> 0."""

    def __init__(self, swarm: Swarm) -> None:
        self.peer = swarm.peers[5]
        self.swarm = swarm
        self.got: list[tuple[int, bytes]] = []
        self.circ = self.sid = -1
        self.consume = True
        self.peer.driver.on_event = self.on_event

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.RelayMessageReceived) and e.circ == self.circ:
            self.got.append((e.command, e.data))
            if e.command == RelayCommand.DB_DATA and self.consume:
                self.peer.node.stream_consumed(e.circ, e.stream_id, 1)
                later(self.peer)

    async def ask(self, q: DbQuery) -> None:
        self.circ = await self.swarm.build_circuit(5, [4, 0])
        self.sid = self.peer.node.open_db_stream(self.circ, RelayCommand.DB_QUERY, q.encode())
        self.peer.driver.flush()

    def stop(self) -> None:
        self.peer.node.db_end(self.circ, self.sid, DbEnd(DbEndReason.FINISHED).encode())
        self.peer.driver.flush()

    def received(self) -> int:
        return sum(len(d) for c, d in self.got if c == RelayCommand.DB_DATA)

    def ended(self) -> bool:
        return any(c == RelayCommand.DB_END for c, _ in self.got)


async def query_at_us(holder: Holder, r: Requester, q: DbQuery) -> tuple[int, int]:
    await r.ask(q)
    await until(lambda: any(isinstance(e, ev.RelayMessageReceived) for e in holder.unowned))
    (e,) = [e for e in holder.unowned if isinstance(e, ev.RelayMessageReceived)]
    assert e.command == RelayCommand.DB_QUERY and DbQuery.decode(e.data) == q
    return e.circ, e.stream_id


async def test_an_ordb_that_holds_the_share_serves_on_the_query_stream(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    r = Requester(swarm)
    q = DbQuery(hn, 0, 40, 0)
    stream = await query_at_us(holder, r, q)
    await asyncio.wait_for(holder.h.serve_here(stream, q), 10)
    await until(r.ended)
    cmds = [c for c, _ in r.got]
    assert cmds[0] == RelayCommand.DB_CONNECTED and cmds[-1] == RelayCommand.DB_END
    hello = DbConnected.decode(r.got[0][1])
    data = b"".join(d for c, d in r.got if c == RelayCommand.DB_DATA)
    assert hello == DbConnected(bytes(16), DeliveryKind.PIECES, 0, 40, len(data))
    assert await pieces_of(store, hn, data) == list(range(40))
    assert DbEnd.decode(r.got[-1][1]) == DbEnd(DbEndReason.FINISHED)
    assert holder.h.served_pieces == 40
    assert len(holder.routes) == 0  # the stream was ours while we served it, and is released
    await holder.h.close()


async def test_a_requester_that_stops_a_delivery_from_our_ordb_stops_it(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    hn = await share(store, tmp_path)
    r = Requester(swarm)
    r.consume = False  # the holder's window runs dry: it waits, serving
    q = DbQuery(hn, 0, 40, 0)
    stream = await query_at_us(holder, r, q)
    task = asyncio.ensure_future(holder.h.serve_here(stream, q))
    try:
        await until(lambda: r.received() > 200_000)
        assert holder.routes.owner_of(stream[0]) is None and len(holder.routes) == 1  # the stream is ours
        r.stop()  # "a requester's DB_END (any reason) closes the query" (docs/ordb-protocol.md)
        await asyncio.wait([task], timeout=10)
        assert task.cancelled()  # the delivery stopped: it does not wait for window that never comes
        assert holder.h.serving == {} and len(holder.routes) == 0 and holder.h.served_pieces == 0
    finally:
        task.cancel()
        await holder.h.close()


async def test_an_ordb_without_the_share_says_unavailable(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    holder = Holder(swarm, store)
    r = Requester(swarm)
    q = DbQuery(bytes(32), 0, 0, 0)
    stream = await query_at_us(holder, r, q)
    await asyncio.wait_for(holder.h.serve_here(stream, q), 10)
    await until(r.ended)
    assert [(c, DbEnd.decode(d)) for c, d in r.got] == [(RelayCommand.DB_END, DbEnd(DbEndReason.UNAVAILABLE))]
    await holder.h.close()


async def test_has_says_whether_every_piece_asked_for_is_here(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    other, hn = await partial(store, tmp_path, 10)
    try:
        holder = Holder(swarm, other)
        assert await holder.h.has(DbQuery(hn, 0, 0, 0))  # the manifest
        assert await holder.h.has(DbQuery(hn, 0, 10, 0))
        assert await holder.h.has(DbQuery(hn, 9, 1, 0))
        assert not await holder.h.has(DbQuery(hn, 9, 2, 0))  # piece 10 is missing
        assert not await holder.h.has(DbQuery(bytes(32), 0, 0, 0))  # not a share of ours
        await holder.h.close()
    finally:
        await other.close()
