"""Chunk-store throughput against raw-file references on the same bytes (issue 5; DESIGN §9).

    python -m benchmarks.store [--quick] [--json] [--mib N] [--rounds R]

Every round measures, on one pseudo-random payload and in this order:

* reference write: sequential 4 MiB writes of the payload to a plain file, SHA-256 over it, fsync;
* import: ``ChunkStore.import_file`` (read, Merkle leaves, SQLite writes, proofs, signed manifest),
  plain and encrypted, each ended by ``close()`` (WAL checkpoint and fsync: the bytes are durable);
* verified piece writes: ``verify_pieces`` then ``put_pieces`` of (piece, proof) batches of 64 into a
  fresh store (Merkle verification and SQLite writes), ended by ``close()``;
* reads, hot (just written, in the page cache) and cold (the file's pages dropped with
  ``posix_fadvise(DONTNEED)``, so they come from the disk): the reference is sequential 4 MiB reads of
  the reference file; the store reads are ``read_range`` in 4 MiB steps (pieces re-hashed against
  their leaf) and ``get_pieces`` in runs of 64 (pieces re-verified against the root with their proofs,
  as served to other peers); hot only, ``get_piece`` one piece at a time.

The machine may be shared, so rounds alternate the reference and the store and the figures are
medians over the rounds; each store figure is printed with its ratio to its reference (goal >= 50%).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from storage.chunkstore import ChunkStore
from storage.verify import verify_pieces

CHUNK = 4 << 20
WRITE_KEYS = ("import_plain", "import_encrypted", "put_pieces")
READ_KEYS = ("read_range", "get_pieces", "get_piece")


def _payload_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, CHUNK)
            f.write(rng.randbytes(n))
            left -= n


def _drop_cache(path: Path) -> None:
    """Evict one file's pages from the page cache (they are clean: fsync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _reference_write(chunks: list[bytes], dst: Path) -> float:
    t = time.perf_counter()
    h = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in chunks:
            h.update(chunk)
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    h.digest()
    return time.perf_counter() - t


def _reference_read(path: Path) -> float:
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    return time.perf_counter() - t


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


async def _reads(db: Path, h: bytes, size: int, count: int, hot: bool) -> dict[str, float]:
    store = await ChunkStore.open(db)
    out: dict[str, float] = {}

    async def read_range() -> None:
        pos = 0
        while pos < size:
            r = await store.read_range(h, pos, pos + CHUNK)
            assert r.complete
            pos += len(r.data)

    async def get_pieces() -> None:
        for k in range(0, count, 64):
            assert len(await store.get_pieces(h, k, k + 63)) == min(64, count - k)

    async def get_piece() -> None:
        for i in range(count):
            await store.get_piece(h, i)

    for key, fn in (("read_range", read_range), ("get_pieces", get_pieces), ("get_piece", get_piece)):
        if not hot and key == "get_piece":
            continue
        if not hot:
            await store.close()
            _drop_cache(db)
            store = await ChunkStore.open(db)
        out[key] = await _timed(fn)
    await store.close()
    return out


async def _round(src: Path, chunks: list[bytes], work: Path) -> dict[str, float]:
    size = src.stat().st_size
    rand = random.Random(7).randbytes
    for p in work.glob("r-*"):
        p.unlink()
    t: dict[str, float] = {"ref_write": _reference_write(chunks, work / "r-ref.bin")}
    h = b""
    for encrypt in (False, True):
        db = work / f"r-import-{int(encrypt)}.db"

        async def imp(db: Path = db, encrypt: bool = encrypt) -> None:
            nonlocal h
            store = await ChunkStore.open(db)
            res = await store.import_file(src, encrypt=encrypt, randbytes=rand)
            if not encrypt:
                h = res.hash_name
            await store.close()

        t["import_encrypted" if encrypt else "import_plain"] = await _timed(imp)
    src_db = work / "r-import-0.db"
    store = await ChunkStore.open(src_db)
    manifest = await store.get_manifest(h)
    parsed = await store.manifest(h)
    count = (await store.manifest(h)).piece_count
    pieces = []
    for k in range(0, count, 64):
        pieces += await store.get_pieces(h, k, k + 63)
    await store.close()

    async def put() -> None:
        dst = await ChunkStore.open(work / "r-download.db")
        await dst.put_manifest(manifest, expected_hash=h)
        for k in range(0, count, 64):
            await dst.put_pieces(h, verify_pieces(parsed, pieces[k : k + 64]))
        await dst.close()

    t["put_pieces"] = await _timed(put)

    t["ref_read_hot"] = _reference_read(work / "r-ref.bin")
    t.update({f"{k}_hot": v for k, v in (await _reads(src_db, h, size, count, hot=True)).items()})
    _drop_cache(work / "r-ref.bin")
    t["ref_read_cold"] = _reference_read(work / "r-ref.bin")
    t.update({f"{k}_cold": v for k, v in (await _reads(src_db, h, size, count, hot=False)).items()})
    return {k: size / 1e6 / v for k, v in t.items()}


async def _run(size: int, rounds: int, work: Path) -> list[dict[str, float]]:
    src = work / "payload.bin"
    _payload_file(src, size, seed=1)
    with open(src, "rb") as f:
        chunks = list(iter(lambda: f.read(CHUNK), b""))
    return [await _round(src, chunks, work) for _ in range(rounds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 3 rounds (under a minute)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--mib", type=int, default=None, help="payload size in MiB (default 256, quick 64)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 3)")
    args = ap.parse_args()
    size = (args.mib or (64 if args.quick else 256)) << 20
    rounds = args.rounds or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="peersm-bench-", dir=os.environ.get("PEERSM_BENCH_DIR")) as d:
        per_round = asyncio.run(_run(size, rounds, Path(d)))
    med = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    ratios = {k: med[k] / med["ref_write"] for k in WRITE_KEYS}
    for temp in ("hot", "cold"):
        for k in READ_KEYS:
            if f"{k}_{temp}" in med:
                ratios[f"{k}_{temp}"] = med[f"{k}_{temp}"] / med[f"ref_read_{temp}"]
    if args.json:
        print(
            json.dumps(
                {
                    "payload_mib": size >> 20,
                    "rounds": rounds,
                    "median_mbps": med,
                    "ratios": ratios,
                    "per_round_mbps": per_round,
                },
                indent=2,
            )
        )
        return
    print(f"payload {size >> 20} MiB, {rounds} rounds, medians in MB/s (ratio to the reference)")
    print(f"  reference write (sha256 + write + fsync) {med['ref_write']:9.1f}")
    for k in WRITE_KEYS:
        print(f"  {k:<40} {med[k]:9.1f}  ({ratios[k]:.0%})")
    for temp in ("hot", "cold"):
        print(f"  reference read, {temp:<24} {med['ref_read_' + temp]:9.1f}")
        for k in READ_KEYS:
            key = f"{k}_{temp}"
            if key in med:
                print(f"  {key:<40} {med[key]:9.1f}  ({ratios[key]:.0%})")


if __name__ == "__main__":
    main()
