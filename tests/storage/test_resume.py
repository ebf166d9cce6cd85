"""An interrupted import, resumed: the pieces it reuses belong to the share it publishes (storage/importer.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from storage.chunkstore import ChunkStore
from storage.merkle import leaf_hash
from tests.storage.conftest import write_file

RandBytes = Callable[[int], bytes]
PS = 1024


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("encrypt", [False, True])
async def test_pieces_reused_by_a_resumed_import_verify_against_the_root(
    tmp_path: Path, store: ChunkStore, rand: RandBytes, encrypt: bool
) -> None:
    src = write_file(tmp_path / "f", 10 * PS + 33, 31)
    store.batch_bytes = 3 * PS  # batches of 3 pieces

    def stop_after_first_batch(stored: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await store.import_file(
            src, encrypt=encrypt, piece_size=PS, randbytes=rand, progress=stop_after_first_batch
        )
    (running,) = await store.list()
    assert (running.hash_name, running.have_count) == (None, 3)

    res = await store.import_file(src, encrypt=encrypt, piece_size=PS, randbytes=rand)
    m = res.manifest
    assert (res.pieces_reused, res.pieces_written, m.piece_count) == (3, 8, 11)
    for i in range(m.piece_count):  # each piece read back with its proof, checked here against the root
        piece, proof = await store.get_piece(res.hash_name, i)
        assert (proof.index, proof.count) == (i, m.piece_count)
        assert proof.root_for(leaf_hash(piece)) == m.root, i
    out = await store.export(res.hash_name, tmp_path / "out.bin")
    assert out.read_bytes() == src.read_bytes()
