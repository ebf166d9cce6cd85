"""Crash safety (DESIGN §9, issue 5): SIGKILL a real importer/downloader at 20 seeded random points.

The seed comes from ``PEERSM_CRASH_SEED`` (default below) and is printed with every kill point, so a
failure replays with ``PEERSM_CRASH_SEED=<seed> pytest tests/storage/test_crash.py``.
After each kill: ``PRAGMA integrity_check`` is ok, every stored piece verifies, nothing committed
before is lost, and the next run carries on without writing any stored piece again.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.manifest import Manifest
from storage.merkle import MerkleProof, leaf_hash
from tests.storage.conftest import write_file

ROOT = Path(__file__).resolve().parents[2]
SIZE = 200 * 1000 * 1000
PIECE = 65536
COUNT = -(-SIZE // PIECE)
KILLS_PER_PHASE = 10
SEED = int(os.environ.get("PEERSM_CRASH_SEED", "20261121"))


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """The 200 MB source, written once per session, and its reference leaf hashes."""
    path = write_file(tmp_path_factory.mktemp("crash") / "big.bin", SIZE, seed=SEED)
    leaves = []
    with open(path, "rb") as f:
        while chunk := f.read(PIECE):
            leaves.append(leaf_hash(chunk))
    return path, leaves


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_and_kill(args: list[str], target: int, delay: float) -> tuple[int, str]:
    """Start a child, SIGKILL it ``delay`` s after it reports ``target`` pieces stored; return (last seen, how)."""
    proc = child(*args)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        if line.startswith("p "):
            last = int(line.split()[1])
        if (line.startswith("ready") and target == 0) or last >= target:
            break
        if line.startswith(("done", "error")):
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    how = (
        "killed"
        if proc.returncode == -signal.SIGKILL
        else f"exited {proc.returncode}: {out[-200:]} {err[-500:]}"
    )
    return last, how


def check_db(db: Path, piece_ok: dict[int, bytes] | None, manifest: Manifest | None) -> set[int]:
    """Integrity check, verify every stored piece, and return the set of stored indices."""
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored: set[int] = set()
        rows = c.execute(
            "SELECT p.id, p.leaf, p.proof, d.data FROM pieces p LEFT JOIN piece_data d ON d.id = p.id"
        )
        for rowid, leaf, proof, data in rows:
            index = rowid & 0xFFFF_FFFF
            assert data is not None, f"piece {index} has no bytes"
            assert leaf_hash(data) == leaf, f"piece {index} does not match its leaf"
            if piece_ok is not None:
                assert leaf == piece_ok[index], f"piece {index} is not the source's"
            if manifest is not None:
                MerkleProof.decode(proof).verify(data, manifest.root)
            stored.add(index)
        orphans = c.execute(
            "SELECT count(*) FROM piece_data WHERE id NOT IN (SELECT id FROM pieces)"
        ).fetchone()[0]
        assert orphans == 0
        counted = c.execute("SELECT coalesce(sum(have_count), 0) FROM shares").fetchone()[0]
        assert counted == len(stored), "have_count disagrees with the stored pieces"
    return stored


def test_sigkill_during_import_and_download(big_file: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    src, leaves = big_file
    rng = random.Random(SEED)
    reference = dict(enumerate(leaves))
    db = tmp_path / "import.db"
    print(f"crash test seed={SEED}")

    # Phase 1: import, killed at 10 random points, then once more while proofs and manifest are written
    # (target COUNT: after the last batch was reported).
    stored: set[int] = set()
    for k, target in enumerate([*sorted(rng.sample(range(COUNT), KILLS_PER_PHASE)), COUNT]):
        delay = rng.uniform(0, 0.05)
        last, how = run_and_kill(["import", str(db), str(src)], target, delay)
        print(f"import kill {k}: seed={SEED} target={target} delay={delay:.4f} last_reported={last} {how}")
        assert how == "killed" or how.startswith("exited 0"), how
        now = check_db(db, reference, None)
        assert stored <= now, "a committed piece was lost"
        stored = now
    proc = child("import", str(db), str(src))
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    done = next(line for line in out.splitlines() if line.startswith("done"))
    fields = dict(kv.split("=") for kv in done.split()[1:])
    # the final run wrote exactly the pieces that were missing: nothing stored was redone
    assert int(fields["written"]) == COUNT - len(stored)
    assert int(fields["reused"]) == len(stored)
    h = fields["hash"]
    with sqlite3.connect(db) as c:
        manifest = Manifest.decode(
            c.execute("SELECT manifest FROM shares WHERE hash_name = ?", (bytes.fromhex(h),)).fetchone()[0]
        )
    assert check_db(db, reference, manifest) == set(range(COUNT))

    # Phase 2: another peer downloads it with proofs, killed at 10 random points.
    dst = tmp_path / "download.db"
    stored = set()
    for k, target in enumerate(sorted(rng.sample(range(COUNT), KILLS_PER_PHASE))):
        delay = rng.uniform(0, 0.05)
        last, how = run_and_kill(["download", str(dst), str(db), h], target, delay)
        print(f"download kill {k}: seed={SEED} target={target} delay={delay:.4f} last_reported={last} {how}")
        assert how == "killed" or how.startswith("exited 0"), how
        now = check_db(dst, reference, manifest)
        assert stored <= now, "a committed piece was lost"
        stored = now
    proc = child("download", str(dst), str(db), h)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    done = next(line for line in out.splitlines() if line.startswith("done"))
    fields = dict(kv.split("=") for kv in done.split()[1:])
    assert int(fields["written"]) == COUNT - len(stored) and int(fields["duplicates"]) == 0
    assert check_db(dst, reference, manifest) == set(range(COUNT))
