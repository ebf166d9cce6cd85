"""The requester's Download over a real onion core and driver (in-memory links, real SQLite stores):
peer 0 holds the share, peer 3 is the ORDB, peer 4 downloads through peers 2 and 1."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from peer.errors import PathError
from peer.proto import events as ev
from peer.roles.fetch import Download, DownloadError
from peer.roles.holder import HolderService
from peer.roles.ordb import OrdbService
from peer.roles.ratelimit import TokenBucket
from peer.testing.swarm import Swarm
from peer.wire.commands import RelayCommand
from peer.wire.ordb import DbEnd, DbEndReason, DbQuery
from storage.chunkstore import ChunkStore
from storage.verify import verify_pieces

PIECE = 4096
HOLDER, ORDB, REQUESTER = 0, 3, 4


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(5)
    yield s
    await s.close()


@pytest.fixture
async def mine(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    """The requester's store."""
    s = await ChunkStore.open(tmp_path / "mine.db")
    yield s
    await s.close()


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def to(handle: Callable[[ev.Event], bool]) -> Callable[[ev.Event], None]:
    """A driver's event callback that feeds ``handle``."""

    def on_event(e: ev.Event) -> None:
        handle(e)

    return on_event


class Net:
    """The holder and the ORDB running; ``download`` makes peer 4's Download and records its wire."""

    def __init__(self, swarm: Swarm, store: ChunkStore) -> None:
        self.swarm = swarm
        o = swarm.peers[ORDB]
        self.ordb = OrdbService(o.node, kick=o.driver.flush)
        o.driver.on_event = to(self.ordb.handle)
        h = swarm.peers[HOLDER]
        self.holder = HolderService(
            h.node,
            store,
            kick=h.driver.flush,
            build_ordb_circuit=lambda exclude: self.circuit(HOLDER, [1, 2, ORDB]),
            announce_delay=(0, 0),
            ordbs_per_share=1,
        )
        h.driver.on_event = to(self.holder.handle)
        self.queries: list[DbQuery] = []  # what the requester asked, as sent
        self.ends: list[tuple[int, int, int]] = []  # (circ, stream, reason) of the requester's DB_ENDs
        self.built: list[int] = []  # the requester's circuits
        self.max_builds: int | None = None

    async def circuit(self, op: int, path: list[int]) -> tuple[int, bytes]:
        circ = await self.swarm.build_circuit(op, path)
        return circ, self.swarm.peers[ORDB].keys.node_id

    async def build(self, exclude: set[bytes]) -> tuple[int, bytes]:
        if self.max_builds is not None and len(self.built) >= self.max_builds:
            raise PathError("no eligible ORDB")
        circ, ordb = await self.circuit(REQUESTER, [2, 1, ORDB])
        self.built.append(circ)
        return circ, ordb

    def download(
        self, store: ChunkStore, hash_name: bytes, find_timeout: float = 120.0, min_circuits: int = 1
    ) -> Download:
        r = self.swarm.peers[REQUESTER]
        node = r.node
        d = Download(
            node=node,
            kick=r.driver.flush,
            store=store,
            hash_name=hash_name,
            key=None,
            build_circuit=self.build,
            count_ordbs=lambda: 1,
            want_circuits=1,
            min_circuits=min_circuits,
            find_timeout=find_timeout,
            rng=random.Random(4),
        )
        open_db_stream, db_end = node.open_db_stream, node.db_end

        def spy_open(circ: int, command: int, body: bytes, *, hop: int = -1) -> int:
            if command == RelayCommand.DB_QUERY:
                self.queries.append(DbQuery.decode(body))
            return open_db_stream(circ, command, body, hop=hop)

        def spy_end(circ: int, sid: int, body: bytes) -> None:
            self.ends.append((circ, sid, DbEnd.decode(body).reason))
            db_end(circ, sid, body)

        setattr(node, "open_db_stream", spy_open)  # noqa: B010 (a spy on the instance)
        setattr(node, "db_end", spy_end)  # noqa: B010

        r.driver.on_event = to(d.handle)
        return d


async def share(store: ChunkStore, tmp_path: Path, size: int = 30 * PIECE + 123) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    f = tmp_path / "file.bin"
    f.write_bytes(data)
    result = await store.import_file(f, encrypt=False, randbytes=os.urandom, piece_size=PIECE)
    return result.hash_name, data


async def copy(src: ChunkStore, dst: ChunkStore, hash_name: bytes, pieces: set[int]) -> None:
    """Give ``dst`` the manifest and some pieces, as an interrupted download leaves them."""
    m = await dst.put_manifest(await src.get_manifest(hash_name), expected_hash=hash_name)
    items = [(i, d, p) for i, d, p in await src.get_pieces(hash_name, 0, m.piece_count - 1) if i in pieces]
    await dst.put_pieces(hash_name, verify_pieces(m, items))


async def test_a_resumed_download_asks_only_for_the_missing_pieces(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path)
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    held = {0, 1, 2, 7, 8, 20, 30}
    await copy(store, mine, hn, held)
    d = net.download(mine, hn)
    seen: list[str] = []
    d.listeners.append(lambda p: seen.append(p.state))
    held_at_start: list[int] = []
    d.listeners.append(lambda p: held_at_start.append(p.bytes_held) if p.state == "downloading" else None)
    progress = await asyncio.wait_for(d.run(), 60)
    assert progress.state == "verified" and progress.have == progress.total == 31
    # the pieces stored before count as held (piece 30 is the short last one), not as fetched
    assert held_at_start[0] == 6 * PIECE + 123
    assert progress.bytes_held == progress.size == len(data)
    assert progress.bytes_verified == len(data) - held_at_start[0]
    asked = [i for q in net.queries for i in range(q.first, q.first + q.count)]
    assert asked and not set(asked) & held
    assert set(asked) == set(range(31)) - held
    assert all(q.hash_name == hn and 0 <= q.counter <= 2 for q in net.queries)
    assert (await mine.read_range(hn, 0, len(data))).data == data
    assert seen[-1] == "verified" and progress.bad_pieces == 0 and progress.first_byte_s is not None
    # each complete delivery is ended from our side too (it frees the ORDB's pairing at once)
    assert [e[2] for e in net.ends] == [DbEndReason.FINISHED] * len(net.queries)
    await net.holder.close()


async def test_a_bad_piece_is_reported_to_the_ordb_and_fetched_again_elsewhere(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path)
    await copy(store, mine, hn, set())  # the manifest is known: every query asks for pieces
    net.holder.corrupt = True  # a lying holder: each piece it serves has a flipped byte
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    d = net.download(mine, hn)
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        await until(lambda: net.ordb.stats["bad_piece_drops"] >= 1)  # the ORDB dropped that holder
        assert d.progress.bad_pieces >= 1
        bad = [e for e in net.ends if e[2] == DbEndReason.BAD_PIECE]
        assert bad and bad[0][0] == net.built[0]  # on the circuit that brought it
        # the holder is honest again and announces anew (its announce circuit closed): the pieces come from it
        net.holder.corrupt = False
        (announce,) = net.holder.circuits
        swarm.peers[HOLDER].driver.destroy_circuit(announce)
        progress = await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
    assert progress.state == "verified"
    assert (await mine.read_range(hn, 0, len(data))).data == data
    await net.holder.close()


async def test_a_download_whose_circuit_keeps_failing_replaces_it_then_gives_up(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peer.roles import schedule

    monkeypatch.setattr(schedule, "NO_CIRCUIT_GIVE_UP", 0.0)
    net = Net(swarm, store)
    hn, _ = await share(store, tmp_path)
    await copy(store, mine, hn, set())  # nobody announced it: the ORDB answers UNAVAILABLE
    net.max_builds = 1
    d = net.download(mine, hn)
    with pytest.raises(DownloadError, match="every circuit"):
        await asyncio.wait_for(d.run(), 60)
    assert d.progress.state == "failed" and d.progress.replaced == 1
    assert net.built[0] not in swarm.peers[REQUESTER].node.circuits
    # the stalled queries were ended by the ORDB (UNAVAILABLE), so we sent no DB_END of our own
    assert len(net.queries) >= 2 and all(e[2] == DbEndReason.FINISHED for e in net.ends)


async def test_the_manifest_is_fetched_first_and_a_retired_ordb_is_replaced(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path, 3 * PIECE)
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    d = net.download(mine, hn)
    retired: list[int] = []

    def on_progress(p: object) -> None:  # the moment the pieces are known, before any is asked
        if d.progress.state == "downloading" and not retired:
            retired.append(d.retire_ordbs({swarm.peers[1].keys.node_id}, "a middle hop"))
            retired.append(d.retire_ordbs({swarm.peers[ORDB].keys.node_id}, "its ORDB became a neighbour"))

    d.listeners.append(on_progress)
    progress = await asyncio.wait_for(d.run(), 60)
    assert retired == [0, 1] and progress.replaced == 1
    assert net.queries[0].count == 0  # the manifest first, then pieces on the new circuit only
    assert progress.state == "verified" and len(net.built) == 2
    assert net.built[0] not in swarm.peers[REQUESTER].node.circuits
    assert (await mine.read_range(hn, 0, len(data))).data == data
    assert await mine.get_manifest(hn) == await store.get_manifest(hn)
    await net.holder.close()


async def test_nothing_found_fails_with_the_ordbs_answers(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, _ = await share(store, tmp_path, PIECE)  # never announced
    d = net.download(mine, hn, find_timeout=0.5)
    with pytest.raises(DownloadError, match=r"nothing found.*UNAVAILABLE"):
        await asyncio.wait_for(d.run(), 30)
    assert d.progress.state == "failed"
    assert not d.handle(ev.CircuitClosed(12345, 0))


async def test_a_circuit_the_core_dropped_unannounced_is_noticed_and_replaced(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    """The onion core no longer has the circuit but no CircuitClosed reached the download (an
    event still queued, or lost): the download must not keep asking on it."""
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path, 8 * PIECE)
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    d = net.download(mine, hn)
    r = swarm.peers[REQUESTER]
    r.driver.on_event = to(lambda e: not isinstance(e, ev.CircuitClosed) and d.handle(e))
    dropped: list[int] = []

    def on_progress(p: object) -> None:  # the pieces are known, none asked yet
        if d.progress.state == "downloading" and not dropped:
            dropped.append(net.built[0])
            r.driver.destroy_circuit(net.built[0])

    d.listeners.append(on_progress)
    progress = await asyncio.wait_for(d.run(), 60)
    assert dropped and progress.state == "verified" and len(net.built) == 2
    assert (await mine.read_range(hn, 0, len(data))).data == data
    await net.holder.close()


async def test_a_download_of_a_share_already_complete_asks_for_nothing(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, _ = await share(store, tmp_path, 5 * PIECE)
    await copy(store, mine, hn, set(range(5)))
    d = net.download(mine, hn)
    progress = await asyncio.wait_for(d.run(), 10)
    assert progress.state == "verified" and progress.have == progress.total == 5
    assert net.queries == [] and net.ends == []
    assert net.built[0] not in swarm.peers[REQUESTER].node.circuits  # closed with the download


async def test_a_download_that_cannot_reach_two_ordbs_fails_naming_the_rule(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    net.max_builds = 1  # one ORDB only
    hn, _ = await share(store, tmp_path, PIECE)
    d = net.download(mine, hn, find_timeout=0.0, min_circuits=2)
    with pytest.raises(PathError, match=r"at least 2 different ORDBs, got 1$"):
        await asyncio.wait_for(d.run(), 10)
    assert d.progress.state == "failed" and net.queries == []
    assert net.built[0] not in swarm.peers[REQUESTER].node.circuits


async def test_a_cancelled_download_is_paused_and_ends_its_queries(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    net = Net(swarm, store)
    hn, _ = await share(store, tmp_path)
    await copy(store, mine, hn, set())  # never announced: the queries wait for the ORDB's answer
    swarm.peers[ORDB].driver.on_event = None  # an ORDB that never answers
    d = net.download(mine, hn)
    task = asyncio.get_running_loop().create_task(d.run())
    await until(lambda: len(net.queries) == 2)  # both slots of the one circuit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert d.progress.state == "paused"
    assert [e[2] for e in net.ends] == [DbEndReason.FINISHED] * 2
    assert net.built[0] not in swarm.peers[REQUESTER].node.circuits


async def test_a_video_download_fetches_its_head_and_end_first_and_other_files_in_order(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    """An audio or video share's first and last ``index_tail`` bytes come first (a player opens
    the head, then an MP4 may keep its index at the end, and Play may be pressed at any moment);
    any other share is fetched from its start, in order."""
    net = Net(swarm, store)
    firsts = {}
    for name in ("clip.mp4", "notes.bin"):
        data = os.urandom(30 * PIECE + 123)
        f = tmp_path / name
        f.write_bytes(data)
        hn = (await store.import_file(f, encrypt=False, randbytes=os.urandom, piece_size=PIECE)).hash_name
        net.holder.announce_soon(hn)
        await until(lambda hn=hn: hn in net.ordb.holders)  # type: ignore[misc]
        net.queries.clear()
        d = net.download(mine, hn)
        d.index_tail = 3 * PIECE
        progress = await asyncio.wait_for(d.run(), 60)
        assert progress.state == "verified"
        assert (await mine.read_range(hn, 0, len(data))).data == data
        firsts[name] = [q.first for q in net.queries if q.count]
    # piece 0 alone, then 1..2 (the rush of the first 3 * PIECE bytes), 28..30 (the last ones), then
    # the rest from 3 on
    clip = firsts["clip.mp4"]
    head, after = clip[: clip.index(28)], [i for i in clip[clip.index(28) :] if i < 28]
    assert head[0] == 0 and set(head) <= {0, 1, 2} and after[0] == 3, firsts
    assert firsts["notes.bin"][0] == 0 and firsts["notes.bin"] == sorted(firsts["notes.bin"]), firsts
    await net.holder.close()


async def test_a_holder_answering_fewer_pieces_than_asked_still_completes_the_download(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's byte cap may answer a query with fewer pieces than it asked for (DB_CONNECTED
    says how many): the requester takes those, asks again for the rest, and verifies everything."""
    from peer.roles import holder

    monkeypatch.setattr(holder, "MAX_BYTES_PER_QUERY", 2 * PIECE)  # 2 frames are just over: 2 pieces
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path)
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    d = net.download(mine, hn)
    progress = await asyncio.wait_for(d.run(), 60)
    assert progress.state == "verified" and progress.have == progress.total == 31
    assert (await mine.read_range(hn, 0, len(data))).data == data
    asked = [q.count for q in net.queries if q.count]
    assert max(asked) > 2, asked  # the requester asked for more than the holder would give at once
    assert len(asked) >= 31 // 2, asked  # so it had to ask again for what was left out
    await net.holder.close()


async def test_a_circuit_being_built_does_not_hold_up_the_circuits_we_have(
    swarm: Swarm, store: ChunkStore, mine: ChunkStore, tmp_path: Path
) -> None:
    """A replacement or extra circuit is built beside the fetch loop: while a build hangs, the
    circuit we have keeps asking for pieces, and the download completes."""
    net = Net(swarm, store)
    hn, data = await share(store, tmp_path)
    net.holder.announce_soon(hn)
    await until(lambda: hn in net.ordb.holders)
    net.holder.upload = TokenBucket(len(data) / 2, PIECE, now=asyncio.get_running_loop().time())  # 2 s
    d = net.download(mine, hn)
    hanging = asyncio.Event()
    first_build = d._build

    async def build(exclude: set[bytes]) -> tuple[int, bytes]:
        if net.built:  # the first circuit is built; every later build never ends
            hanging.set()
            await asyncio.Event().wait()
        return await first_build(exclude)

    d._build = build
    d.want_circuits = 3
    d._count_ordbs = lambda: 3 if net.built else 1  # once one is built, two more are wanted
    progress = await asyncio.wait_for(d.run(), 20)
    assert progress.state == "verified" and hanging.is_set()
    assert (await mine.read_range(hn, 0, len(data))).data == data
    await net.holder.close()
