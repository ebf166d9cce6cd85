"""The SQLite chunk store (storage/chunkstore.py, importer.py, export.py; DESIGN §9)."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.errors import IntegrityError, StorageError, UsageError, WireError
from storage.chunkstore import ChunkStore
from storage.errors import (
    CorruptPiece,
    DecryptError,
    HashMismatch,
    KeyRequired,
    ManifestError,
    ManifestSignatureError,
    PieceError,
    PieceMissing,
    SchemaError,
    ShareNotFound,
)
from storage.manifest import MANIFEST_CONTEXT, Manifest
from storage.merkle import MerkleProof
from storage.sharelink import ShareLink
from storage.types import DownloadState
from storage.verify import verify_pieces
from tests.storage.conftest import write_file

RandBytes = Callable[[int], bytes]
PS = 1024  # small pieces keep these tests fast


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def all_pieces(s: ChunkStore, h: bytes) -> list[tuple[int, bytes, MerkleProof]]:
    m = await s.manifest(h)
    return [(i, *(await s.get_piece(h, i))) for i in range(m.piece_count)]


async def stored_rows(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM pieces").fetchone()[0]) + int(
            c.execute("SELECT count(*) FROM piece_data").fetchone()[0]
        )


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("size", [0, 1, PS, PS + 1, 10 * PS + 17])
async def test_import_export_round_trip(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes, encrypt: bool, size: int
) -> None:
    src = write_file(tmp_path / "movie.mkv", size, seed=size)
    res = await store.import_file(src, encrypt=encrypt, piece_size=PS, randbytes=rand)
    m = res.manifest
    assert res.hash_name == m.hash_name == hashlib.sha256(m.encode()).digest()
    assert (m.size, m.piece_count, m.encrypted) == (size, -(-size // PS), encrypt)
    assert res.pieces_written == m.piece_count and res.pieces_reused == 0
    assert (res.link.key is not None) == encrypt
    assert m.name == ("" if encrypt else "movie.mkv")
    assert m.mime == ("" if encrypt else "video/x-matroska")
    # another peer fetches it: manifest by hash_name, pieces with proofs
    link = ShareLink.parse(res.link.format())
    await peer_store.put_manifest(
        await store.get_manifest(link.hash_name), expected_hash=link.hash_name, key=link.key
    )
    assert (await peer_store.get_download_state(link.hash_name)).state == (
        DownloadState.COMPLETE if size == 0 else DownloadState.WANTED
    )
    if m.piece_count:
        r = await peer_store.put_pieces(
            link.hash_name, verify_pieces(m, await all_pieces(store, link.hash_name))
        )
        assert r.stored == m.piece_count and r.complete
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = await peer_store.export(link.hash_name, out_dir)
    assert out.name == "movie.mkv" and sha(out) == sha(src)
    again = await store.export(res.hash_name, out_dir)
    assert again.name == "movie (1).mkv" and sha(again) == sha(src)  # never replaces a file
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".peersm-")]
    (info,) = await peer_store.list()
    assert (info.name, info.size, info.encrypted, info.state) == (
        "movie.mkv",
        size,
        encrypt,
        DownloadState.COMPLETE,
    )


async def test_publisher_key_is_fresh_per_share(tmp_path: Path, store: ChunkStore, rand: RandBytes) -> None:
    a = write_file(tmp_path / "a", 3000, 1)
    b = write_file(tmp_path / "b", 3000, 1)
    ra = await store.import_file(a, encrypt=False, piece_size=PS, randbytes=rand)
    rb = await store.import_file(b, encrypt=False, piece_size=PS, randbytes=rand)
    assert ra.manifest.publisher != rb.manifest.publisher
    assert ra.manifest.root == rb.manifest.root and ra.hash_name != rb.hash_name
    # importing the same unchanged file again is a no-op
    ra2 = await store.import_file(a, encrypt=False, piece_size=PS, randbytes=rand)
    assert ra2.hash_name == ra.hash_name and ra2.pieces_written == 0


async def test_tampered_pieces_are_rejected_and_nothing_written(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 8 * PS + 5, 3)
    res = await store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand)
    h = res.hash_name
    await peer_store.put_manifest(res.manifest.encode())
    good = await all_pieces(store, h)
    (i0, d0, p0), (i1, d1, p1) = good[0], good[1]
    cases: dict[str, tuple[int, bytes, MerkleProof | bytes]] = {
        "tampered piece": (i0, d0[:-1] + bytes([d0[-1] ^ 1]), p0),
        "wrong proof": (i0, d0, p1),
        "proof of another tree": (i0, d0, MerkleProof(0, 10, p0.path)),
        "forged path": (i0, d0, MerkleProof(0, 9, (bytes(32), *p0.path[1:]))),
        "truncated piece": (i1, d1[:-1], p1),
        "index out of range": (99, d0, p0),
        "garbage proof bytes": (i0, d0, b"\x01garbage"),
    }
    for why, bad in cases.items():
        with pytest.raises(PieceError) as exc:
            await peer_store.put_pieces(h, verify_pieces(res.manifest, [*good[2:5], bad]))
        assert bad[0] in exc.value.bad, why
        assert (await peer_store.have(h)).have() == 0, why
        assert await stored_rows(tmp_path / "peer.db") == 0, why
    r = await peer_store.put_pieces(h, verify_pieces(res.manifest, good[2:5] + good[2:3]))
    assert (r.stored, r.duplicates, r.complete) == (3, 0, False)
    r = await peer_store.put_pieces(h, verify_pieces(res.manifest, good[2:4]))
    assert (r.stored, r.duplicates) == (0, 2)
    assert (await peer_store.have(h)).ranges() == [(2, 5)]


async def test_bad_manifests_are_rejected_and_nothing_written(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 3 * PS, 4)
    res = await store.import_file(src, encrypt=True, piece_size=PS, randbytes=rand)
    raw = res.manifest.encode()
    from peer.crypto.identity import SigningKey

    resigned = Manifest.decode(raw[:-64] + SigningKey(b"\x09" * 32).sign(MANIFEST_CONTEXT, raw[:-64]))
    cases: list[tuple[bytes, dict[str, object], type[Exception]]] = [
        (raw[:-1], {}, ManifestError),
        (raw[:40], {}, ManifestError),
        (raw[:-64] + bytes(64), {}, ManifestSignatureError),
        (resigned.encode(), {}, ManifestSignatureError),
        (raw, {"expected_hash": bytes(32)}, HashMismatch),
        (raw, {"key": bytes(32)}, DecryptError),
    ]
    for data, kw, err in cases:
        with pytest.raises(err):
            await peer_store.put_manifest(data, **kw)  # type: ignore[arg-type]
        assert await peer_store.list() == []
    await peer_store.put_manifest(raw)
    with pytest.raises(KeyRequired):
        await peer_store.read_range(res.hash_name, 0, 10)


async def test_read_range_returns_only_verified_bytes(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 10 * PS + 100, 5)
    body = src.read_bytes()
    res = await store.import_file(src, encrypt=True, piece_size=PS, randbytes=rand)
    h = res.hash_name
    await peer_store.put_manifest(res.manifest.encode(), key=res.link.key)
    good = await all_pieces(store, h)
    await peer_store.put_pieces(h, verify_pieces(res.manifest, [good[i] for i in (0, 1, 2, 5, 10)]))
    r = await peer_store.read_range(h, 500, 8 * PS)
    assert r.data == body[500 : 3 * PS]
    assert r.missing == ((3 * PS, 5 * PS), (6 * PS, 8 * PS))
    r = await peer_store.read_range(h, 10 * PS + 1, 10**9)  # clipped at the end
    assert r.data == body[10 * PS + 1 :] and r.complete
    r = await peer_store.read_range(h, 4 * PS, 5 * PS + 10)
    assert r.data == b"" and r.missing == ((4 * PS, 5 * PS),)
    with pytest.raises(UsageError):
        await peer_store.read_range(h, 5, 4)
    with pytest.raises(PieceMissing):
        await peer_store.get_piece(h, 3)
    with pytest.raises(PieceMissing):
        await peer_store.export(h, tmp_path)


async def test_corruption_at_rest_is_detected_and_dropped(
    tmp_path: Path, store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 4 * PS, 6)
    res = await store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand)
    h = res.hash_name
    with sqlite3.connect(tmp_path / "store.db") as c:
        (rowid,) = c.execute("SELECT id FROM piece_data ORDER BY id LIMIT 1 OFFSET 2").fetchone()
        c.execute("UPDATE piece_data SET data = zeroblob(?) WHERE id = ?", (PS, rowid))
    with pytest.raises(CorruptPiece):
        await store.get_piece(h, 2)
    assert 2 not in await store.have(h)
    info = await store.get_download_state(h)
    assert (info.have, info.state) == (3, DownloadState.WANTED)
    r = await store.read_range(h, 0, 4 * PS)
    assert r.data == src.read_bytes()[: 2 * PS] and r.missing == ((2 * PS, 3 * PS),)
    # read_range and recheck find corruption on their own, too
    with sqlite3.connect(tmp_path / "store.db") as c:
        ids = [row[0] for row in c.execute("SELECT id FROM piece_data ORDER BY id")]
        c.execute("UPDATE piece_data SET data = zeroblob(?) WHERE id = ?", (PS, ids[2]))  # piece 3
        c.execute("UPDATE pieces SET proof = ? WHERE id = ?", (b"\x01junk", ids[0]))  # piece 0's proof
    r = await store.read_range(h, 0, 4 * PS)
    assert r.data == src.read_bytes()[: 2 * PS] and r.missing == ((2 * PS, 4 * PS),)
    assert [i for i, _, _ in await store.get_pieces(h, 0, 3)] == [1]
    assert await store.recheck(h) == 0  # get_pieces already dropped piece 0
    assert (await store.have(h)).ranges() == [(1, 2)]


async def test_wrong_key_and_key_from_link(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 3 * PS, 7)
    res = await store.import_file(src, encrypt=True, piece_size=PS, randbytes=rand, name="secret.txt")
    h = res.hash_name
    await peer_store.put_manifest(res.manifest.encode())  # no key: the store cannot read it
    await peer_store.put_pieces(h, verify_pieces(res.manifest, await all_pieces(store, h)))  # it serves it
    (info,) = await peer_store.list()
    assert info.name is None and info.encrypted
    assert (await peer_store.get_piece(h, 0))[0] != src.read_bytes()[:PS]
    with pytest.raises(KeyRequired):
        await peer_store.export(h, tmp_path)
    with pytest.raises(DecryptError):
        await peer_store.export(h, tmp_path, key=bytes(32))
    out = await peer_store.export(h, tmp_path / "chosen.bin", key=res.link.key)
    assert out == tmp_path / "chosen.bin" and sha(out) == sha(src)
    assert (await store.list())[0].name == "secret.txt"


async def test_state_survives_reopen_and_remove(tmp_path: Path, rand: RandBytes) -> None:
    ps = 65536
    src = write_file(tmp_path / "f", 6 * ps, 8)
    a = await ChunkStore.open(tmp_path / "a.db")
    res = await a.import_file(src, encrypt=False, piece_size=ps, randbytes=rand)
    b = await ChunkStore.open(tmp_path / "b.db", synchronous="FULL")
    h = res.hash_name
    await b.put_manifest(res.manifest.encode())
    await b.put_pieces(h, verify_pieces(res.manifest, (await all_pieces(a, h))[:2]))
    await b.set_download_state(h, DownloadState.PAUSED)
    await b.set_seeding(h, False)
    await b.close()
    b = await ChunkStore.open(tmp_path / "b.db")
    info = await b.get_download_state(h)
    assert (info.state, info.seeding, info.have, info.total) == (DownloadState.PAUSED, False, 2, 6)
    assert await b.downloads(DownloadState.PAUSED) == [h]
    st_before = await b.stats()
    assert (st_before.shares, st_before.pieces, st_before.piece_bytes) == (1, 2, 2 * ps)
    await b.remove(h)
    with pytest.raises(ShareNotFound):
        await b.get_download_state(h)
    st_after = await b.stats()
    assert (st_after.shares, st_after.pieces) == (0, 0) and st_after.free_bytes > 0
    await b.compact()
    assert (await b.stats()).free_bytes == 0
    await a.close()
    await b.close()


async def test_file_modes_and_schema_version(tmp_path: Path) -> None:
    s = await ChunkStore.open(tmp_path / "s.db")
    await s.close()
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"s.db{suffix}"
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError):
        await ChunkStore.open(tmp_path / "s.db")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError):
        await ChunkStore.open(tmp_path / "junk.db")


async def test_source_changed_and_resume_after_rewrite(
    tmp_path: Path, store: ChunkStore, rand: RandBytes
) -> None:
    src = write_file(tmp_path / "f", 4 * PS, 9)
    seen: list[int] = []
    res = await store.import_file(
        src, encrypt=False, piece_size=PS, randbytes=rand, progress=lambda n, t: seen.append(n)
    )
    assert seen[-1] == 4
    write_file(src, 5 * PS, 10)  # the file changed: a new share
    res2 = await store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand)
    assert res2.hash_name != res.hash_name and res2.manifest.piece_count == 5


async def test_errors_are_typed(store: ChunkStore) -> None:
    with pytest.raises(ShareNotFound):
        await store.have(bytes(32))
    assert issubclass(PieceError, IntegrityError) and issubclass(ManifestError, WireError)


async def test_one_import_per_file_at_a_time(tmp_path: Path, store: ChunkStore, rand: RandBytes) -> None:
    import asyncio

    src = write_file(tmp_path / "f", 64 * PS, 11)
    results = await asyncio.gather(
        store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand),
        store.import_file(src, encrypt=False, piece_size=PS, randbytes=rand),
        return_exceptions=True,
    )
    assert sum(isinstance(r, UsageError) for r in results) == 1
    with pytest.raises(UsageError):
        await store.import_file(src, encrypt=False, piece_size=3000, randbytes=rand)
