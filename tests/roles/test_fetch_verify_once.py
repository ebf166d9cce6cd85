"""The fetch path verifies each piece once, and stores only what verified (peer/roles/fetch.py).

A ``Download`` runs against a stub onion node whose one ORDB answers every DB_QUERY at once
(DB_CONNECTED, then DB_DATA cells of piece frames), into a real store.  Only the public surface
is used: the constructor, ``run`` and ``handle``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from peer.proto import events as ev
from peer.proto.node import OnionNode
from peer.roles.fetch import Download
from peer.wire.commands import RelayCommand
from peer.wire.ordb import DbConnected, DbEnd, DbEndReason, DbQuery, DeliveryKind, PieceFrame, slices
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink
from storage.verify import VerifiedPiece
from tests.storage.conftest import count_leaf_hashes, write_file

PS = 1024


@pytest.fixture
async def peer_store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    """The downloader's store (``store`` is the publisher's)."""
    s = await ChunkStore.open(tmp_path / "peer.db")
    yield s
    await s.close()


@pytest.fixture
def rand() -> Callable[[int], bytes]:
    return random.Random(1234).randbytes


class OneOrdb:
    """The OnionNode calls a Download makes, with one ORDB behind every circuit that serves ``pieces``.

    The first delivery of an index in ``corrupt_once`` has a bit flipped.
    """

    def __init__(self, pieces: dict[int, tuple[bytes, bytes]], corrupt_once: set[int]) -> None:
        self.pieces = pieces
        self.corrupt_once = corrupt_once
        self.circuits: dict[int, object] = {}
        self.ends: list[DbEndReason] = []
        self.download: Download | None = None
        self._sids = 0

    async def build(self, exclude: set[bytes]) -> tuple[int, bytes]:
        circ = len(self.circuits) + 1
        self.circuits[circ] = object()
        return circ, bytes([circ]) * 32

    def open_db_stream(self, handle: int, command: int, body: bytes, *, hop: int = -1) -> int:
        assert command == RelayCommand.DB_QUERY
        q = DbQuery.decode(body)
        self._sids += 1
        asyncio.get_running_loop().call_soon(self._answer, handle, self._sids, q)
        return self._sids

    def _answer(self, circ: int, sid: int, q: DbQuery) -> None:
        assert self.download is not None and q.count > 0  # the manifest is already in the store
        frames = []
        for i in range(q.first, q.first + q.count):
            data, proof = self.pieces[i]
            if i in self.corrupt_once:
                self.corrupt_once.discard(i)
                data = bytes([data[0] ^ 1]) + data[1:]
            frames.append(PieceFrame(i, proof, data).encode())
        blob = b"".join(frames)
        head = DbConnected(bytes(16), DeliveryKind.PIECES, q.first, q.count, len(blob)).encode()
        self.download.handle(ev.RelayMessageReceived(circ, 2, RelayCommand.DB_CONNECTED, sid, head))
        for cell in slices(blob):
            self.download.handle(ev.RelayMessageReceived(circ, 2, RelayCommand.DB_DATA, sid, cell))

    def stream_consumed(self, handle: int, stream_id: int, cells: int) -> None:
        pass

    def db_end(self, handle: int, stream_id: int, body: bytes) -> None:
        self.ends.append(DbEndReason(DbEnd.decode(body).reason))

    def destroy_circuit(self, handle: int) -> None:
        self.circuits.pop(handle, None)


async def shared(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: Callable[[int], bytes]
) -> tuple[ShareLink, dict[int, tuple[bytes, bytes]]]:
    """An encrypted share of 20 pieces in ``store``, its manifest in ``peer_store``; its pieces and proofs."""
    src = write_file(tmp_path / "f", 19 * PS + 100, 41)
    res = await store.import_file(src, encrypt=True, piece_size=PS, randbytes=rand)
    await peer_store.put_manifest(res.manifest.encode(), key=res.link.key)
    served = await store.get_pieces(res.hash_name, 0, res.manifest.piece_count - 1)
    return res.link, {i: (d, p.encode()) for i, d, p in served}


def download(ordb: OneOrdb, store: ChunkStore, link: ShareLink) -> Download:
    d = Download(
        node=cast(OnionNode, ordb),
        kick=lambda: None,
        store=store,
        hash_name=link.hash_name,
        key=link.key,
        build_circuit=ordb.build,
        count_ordbs=lambda: 1,
        want_circuits=1,
        min_circuits=1,
    )
    ordb.download = d
    return d


async def test_each_fetched_piece_is_hashed_once_on_its_way_into_the_store(
    tmp_path: Path,
    store: ChunkStore,
    peer_store: ChunkStore,
    rand: Callable[[int], bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, pieces = await shared(tmp_path, store, peer_store, rand)
    ordb = OneOrdb(pieces, set())
    hashed = count_leaf_hashes(monkeypatch)  # from here on: only the download hashes
    async with asyncio.timeout(30):
        progress = await download(ordb, peer_store, link).run()
    assert progress.state == "verified"
    assert (await peer_store.have(link.hash_name)).complete
    assert [hashed[data] for data, _ in pieces.values()] == [1] * len(pieces)


async def test_a_corrupt_fetched_piece_is_never_stored(
    tmp_path: Path,
    store: ChunkStore,
    peer_store: ChunkStore,
    rand: Callable[[int], bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, pieces = await shared(tmp_path, store, peer_store, rand)
    ordb = OneOrdb(pieces, {3})
    offered: list[VerifiedPiece] = []
    put_pieces = peer_store.put_pieces

    async def spy(hash_name: bytes, batch: list[VerifiedPiece]) -> object:
        offered.extend(batch)
        return await put_pieces(hash_name, batch)

    monkeypatch.setattr(peer_store, "put_pieces", spy)
    async with asyncio.timeout(30):
        progress = await download(ordb, peer_store, link).run()
    assert progress.state == "verified" and progress.bad_pieces == 1
    assert DbEndReason.BAD_PIECE in ordb.ends
    assert sorted(p.index for p in offered) == list(range(len(pieces)))  # piece 3 once: the good one
    assert all(p.piece == pieces[p.index][0] for p in offered)
    stored = await peer_store.get_pieces(link.hash_name, 0, len(pieces) - 1)
    assert [d for _, d, _ in stored] == [d for d, _ in pieces.values()]
