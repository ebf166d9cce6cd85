"""Disk full (issue 5): a clear typed error, an intact database, and work that continues once space is freed.

Simulated without privileges and deterministically: the store's quota (``PRAGMA max_page_count``)
in-process, and ``RLIMIT_FSIZE`` in a child process (as a full file system would refuse writes).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.errors import Retry, StorageError
from storage.chunkstore import ChunkStore
from storage.errors import DiskFullError
from tests.storage.conftest import write_file
from tests.storage.test_crash import ROOT, check_db

RandBytes = Callable[[int], bytes]
MiB = 1 << 20


def integrity_ok(db: Path) -> bool:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_quota_full_then_freed(tmp_path: Path, rand: RandBytes) -> None:
    small = write_file(tmp_path / "small.bin", 1 * MiB, 1)
    big = write_file(tmp_path / "big.bin", 4 * MiB, 2)
    store = await ChunkStore.open(tmp_path / "q.db", max_bytes=3 * MiB)
    store.batch_bytes = 256 * 1024
    first = await store.import_file(small, encrypt=False, randbytes=rand)
    with pytest.raises(DiskFullError) as exc:
        await store.import_file(big, encrypt=True, randbytes=rand)
    assert exc.value.retry is Retry.LATER and "full" in str(exc.value)
    assert integrity_ok(tmp_path / "q.db")
    (partial,) = [s for s in await store.list() if s.hash_name is None]
    assert 0 < partial.have_count < partial.piece_count
    # Reads still work while full.
    assert (await store.read_range(first.hash_name, 0, 100)).data == small.read_bytes()[:100]
    # Free space by removing a share: more of the import fits now, but not all.
    await store.remove(first.hash_name)
    with pytest.raises(DiskFullError):
        await store.import_file(big, encrypt=True, randbytes=rand)
    (partial2,) = await store.list()
    assert partial2.have_count > partial.have_count
    # Raise the quota: the import completes without rewriting what it stored.
    await store.set_quota(None)
    res = await store.import_file(big, encrypt=True, randbytes=rand)
    assert res.pieces_reused == partial2.have_count
    assert res.pieces_written == res.manifest.piece_count - partial2.have_count
    out = await store.export(res.hash_name, tmp_path / "out.bin")
    assert out.read_bytes() == big.read_bytes()
    await store.close()
    assert integrity_ok(tmp_path / "q.db")


def test_file_size_limit_in_child(tmp_path: Path) -> None:
    src = write_file(tmp_path / "src.bin", 48 * MiB, 3)
    db = tmp_path / "f.db"
    limited = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.storage.crash_child",
            "import",
            str(db),
            str(src),
            "--fsize-limit",
            str(20 * MiB),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert limited.returncode == 3, limited.stdout + limited.stderr
    error = next(line for line in limited.stdout.splitlines() if line.startswith("error"))
    assert error.split()[1] in ("disk-full", "store-write"), error
    assert integrity_ok(db)
    stored = check_db(db, None, None)
    assert stored, "some batches were committed before the limit"
    free = subprocess.run(
        [sys.executable, "-m", "tests.storage.crash_child", "import", str(db), str(src)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert free.returncode == 0, free.stderr
    done = next(line for line in free.stdout.splitlines() if line.startswith("done"))
    fields = dict(kv.split("=") for kv in done.split()[1:])
    assert int(fields["reused"]) == len(stored)
    assert int(fields["written"]) + len(stored) == 48 * MiB // 65536
    assert integrity_ok(db)


def test_errors_are_storage_errors() -> None:
    assert issubclass(DiskFullError, StorageError)
