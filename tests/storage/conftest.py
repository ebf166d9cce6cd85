"""Fixtures for the storage tests: stores in tmp_path and deterministic source files."""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from storage import merkle
from storage.chunkstore import ChunkStore


def write_file(path: Path, size: int, seed: int) -> Path:
    """A file of ``size`` pseudo-random bytes (seeded), written in 4 MiB chunks."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def count_leaf_hashes(monkeypatch: pytest.MonkeyPatch) -> Counter[bytes]:
    """Count, per piece (by its bytes), the leaf hashes computed from now on, in every loaded module."""
    seen: Counter[bytes] = Counter()
    real = merkle.leaf_hash

    def counting(data: bytes) -> bytes:
        seen[bytes(data)] += 1
        return real(data)

    for mod in list(sys.modules.values()):
        if vars(mod).get("leaf_hash") is real:
            monkeypatch.setattr(mod, "leaf_hash", counting)
    return seen


@pytest.fixture
def rand() -> Callable[[int], bytes]:
    return random.Random(1234).randbytes


@pytest.fixture
async def peer_store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    s = await ChunkStore.open(tmp_path / "peer.db")
    yield s
    await s.close()
