"""A piece is hashed once on its way into the store, and only a verified piece gets in (storage/verify.py)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.errors import UsageError
from storage.chunkstore import ChunkStore
from storage.errors import PieceError
from storage.merkle import MerkleProof
from storage.verify import VerifiedPiece, verify_pieces
from tests.storage.conftest import count_leaf_hashes, write_file

RandBytes = Callable[[int], bytes]
PS = 1024


async def served(s: ChunkStore, h: bytes) -> list[tuple[int, bytes, MerkleProof]]:
    return await s.get_pieces(h, 0, (await s.manifest(h)).piece_count - 1)


def stored_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as c:
        return (
            c.execute("SELECT count(*) FROM pieces").fetchone()[0],
            c.execute("SELECT count(*) FROM piece_data").fetchone()[0],
        )


@pytest.mark.parametrize("encrypt", [False, True])
async def test_verify_then_put_hashes_each_piece_once(
    tmp_path: Path,
    store: ChunkStore,
    peer_store: ChunkStore,
    rand: RandBytes,
    monkeypatch: pytest.MonkeyPatch,
    encrypt: bool,
) -> None:
    src = write_file(tmp_path / "f", 9 * PS + 7, 21)
    res = await store.import_file(src, encrypt=encrypt, piece_size=PS, randbytes=rand)
    h = res.hash_name
    await peer_store.put_manifest(res.manifest.encode(), key=res.link.key)
    items = await served(store, h)
    hashed = count_leaf_hashes(monkeypatch)
    verified = verify_pieces(await peer_store.manifest(h), items)
    assert all(hashed[piece] == 1 for _, piece, _ in items)
    hashed.clear()
    r = await peer_store.put_pieces(h, verified)
    assert (r.stored, r.complete) == (len(items), True)
    assert not hashed  # put_pieces stores what verify_pieces checked, without hashing again
    out = await peer_store.export(h, tmp_path / "out.bin", key=res.link.key)
    assert out.read_bytes() == src.read_bytes()


async def test_an_unverified_piece_never_reaches_the_store(
    tmp_path: Path, store: ChunkStore, peer_store: ChunkStore, rand: RandBytes
) -> None:
    a = await store.import_file(
        write_file(tmp_path / "a", 4 * PS, 22), encrypt=False, piece_size=PS, randbytes=rand
    )
    b = await store.import_file(
        write_file(tmp_path / "b", 4 * PS, 23), encrypt=False, piece_size=PS, randbytes=rand
    )
    await peer_store.put_manifest(a.manifest.encode())
    items = await served(store, a.hash_name)
    (i, piece, proof) = items[1]
    corrupt = piece[:-1] + bytes([piece[-1] ^ 1])
    good = verify_pieces(a.manifest, items)

    # A corrupt piece fails verification: there is nothing to store.
    with pytest.raises(PieceError) as exc:
        verify_pieces(a.manifest, [*items[:1], (i, corrupt, proof)])
    assert list(exc.value.bad) == [i]
    # Raw (index, piece, proof) tuples are refused, even good ones.
    with pytest.raises(UsageError):
        await peer_store.put_pieces(a.hash_name, items)  # type: ignore[arg-type]
    # A VerifiedPiece cannot be made, or altered, outside verify_pieces.
    with pytest.raises(UsageError):
        VerifiedPiece(a.hash_name, i, good[1].leaf, corrupt, proof.encode(), object())
    with pytest.raises(ValueError):
        dataclasses.replace(good[1], piece=corrupt)
    # A piece verified for another share is refused.
    await peer_store.put_manifest(b.manifest.encode())
    with pytest.raises(UsageError):
        await peer_store.put_pieces(b.hash_name, good[:1])
    assert stored_rows(tmp_path / "peer.db") == (0, 0)
    assert (await peer_store.have(a.hash_name)).have() == 0
    assert (await peer_store.have(b.hash_name)).have() == 0
    # The same pieces, verified for their share, go in.
    r = await peer_store.put_pieces(a.hash_name, good)
    assert (r.stored, r.duplicates, r.complete) == (4, 0, True)
    assert [d for _, d, _ in await served(peer_store, a.hash_name)] == [d for _, d, _ in items]
