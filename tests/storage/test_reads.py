"""Reads that span several fetch runs: corruption in any run is dropped, good bytes are exact."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.chunkstore import ChunkStore
from storage.errors import ShareNotFound
from storage.types import DownloadState
from storage.verify import verify_pieces
from tests.storage.conftest import write_file

PS = 16 << 10  # 128 pieces per 2 MiB fetch run
N = 260  # fetch runs of 128, 128 and 4 pieces (the last one checked inline)


async def test_corruption_across_runs(
    tmp_path: Path, store: ChunkStore, rand: Callable[[int], bytes]
) -> None:
    src = write_file(tmp_path / "f", N * PS - 100, 9)
    raw = src.read_bytes()
    res = await store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand)
    h = res.hash_name
    r = await store.read_range(h, 0, len(raw))
    assert r.data == raw and r.missing == ()
    got = await store.get_pieces(h, 0, N - 1)
    assert [i for i, _, _ in got] == list(range(N))
    assert b"".join(d for _, d, _ in got) == raw
    bad = [5, 130, 200, 258]  # in every run
    with sqlite3.connect(tmp_path / "store.db") as c:
        ids = [row[0] for row in c.execute("SELECT id FROM piece_data ORDER BY id")]
        for i in bad:
            c.execute(
                "UPDATE piece_data SET data = zeroblob(?) WHERE id = ?", (PS if i < N - 1 else 10, ids[i])
            )
    got = await store.get_pieces(h, 0, N - 1)
    assert [i for i, _, _ in got] == [i for i in range(N) if i not in bad]
    for i, d, p in got:
        assert d == raw[i * PS : (i + 1) * PS]
        assert p.index == i
    info = await store.get_download_state(h)
    assert (info.have, info.state) == (N - len(bad), DownloadState.WANTED)
    r = await store.read_range(h, 0, len(raw))
    assert r.data == raw[: 5 * PS]
    assert r.missing == tuple((i * PS, min(len(raw), (i + 1) * PS)) for i in bad)


async def test_read_range_corruption_in_later_run(
    tmp_path: Path, store: ChunkStore, rand: Callable[[int], bytes]
) -> None:
    src = write_file(tmp_path / "f", N * PS, 10)
    raw = src.read_bytes()
    res = await store.import_file(src, encrypt=True, piece_size=PS, randbytes=rand)
    h = res.hash_name
    with sqlite3.connect(tmp_path / "store.db") as c:
        ids = [row[0] for row in c.execute("SELECT id FROM piece_data ORDER BY id")]
        (data,) = c.execute("SELECT data FROM piece_data WHERE id = ?", (ids[150],)).fetchone()
        c.execute("UPDATE piece_data SET data = ? WHERE id = ?", (bytes([data[0] ^ 1]) + data[1:], ids[150]))
    r = await store.read_range(h, 0, len(raw))
    assert r.data == raw[: 150 * PS] and r.missing == ((150 * PS, 151 * PS),)
    assert 150 not in await store.have(h)
    assert await store.recheck(h) == 0
    assert (await store.have(h)).ranges() == [(0, 150), (151, N)]


async def test_put_pieces_into_a_share_removed_by_another_store(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: Callable[[int], bytes]
) -> None:
    src = write_file(tmp_path / "f", 8 * PS, 11)
    res = await store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand)
    h = res.hash_name
    pieces = verify_pieces(res.manifest, await store.get_pieces(h, 0, 7))
    await peer_store.put_manifest(await store.get_manifest(h), expected_hash=h)
    r = await peer_store.put_pieces(h, pieces[:3])
    assert (r.stored, r.duplicates, r.complete) == (3, 0, False)
    other = await ChunkStore.open(tmp_path / "peer.db")
    await other.remove(h)
    await other.close()
    with pytest.raises(ShareNotFound):
        await peer_store.put_pieces(h, pieces[3:])
    with sqlite3.connect(tmp_path / "peer.db") as c:
        assert c.execute("SELECT count(*) FROM pieces").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM piece_data").fetchone()[0] == 0
    await peer_store.put_manifest(await store.get_manifest(h), expected_hash=h)
    peer_store._shares.clear()
    r = await peer_store.put_pieces(h, pieces)
    assert (r.stored, r.duplicates, r.complete) == (8, 0, True)
    r = await peer_store.put_pieces(h, pieces[:2])
    assert (r.stored, r.duplicates, r.complete) == (0, 2, True)
