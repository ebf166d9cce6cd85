"""Child process for the crash, disk-full and memory tests (run as ``python -m tests.storage.crash_child``).

Modes:
  import DB SRC [--encrypt] [--fsize-limit N]
      import SRC into the store DB (resuming), printing ``p <stored>`` after each batch;
      with --fsize-limit, set RLIMIT_FSIZE (and ignore SIGXFSZ) first, as a full disk would.
  download DB SRCDB HASHHEX
      fetch every missing piece of HASHHEX from the store SRCDB into DB, 32 per batch.
Prints ``ready`` once the store is open, ``done ...`` at the end, ``error KIND MESSAGE`` on a
StorageError, and ``hwm KIB`` (its own peak RSS) last.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys

from peer.errors import StorageError
from storage.chunkstore import ChunkStore
from storage.verify import verify_pieces


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def peak_rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


async def do_import(db: str, src: str, encrypt: bool) -> None:
    store = await ChunkStore.open(db)
    say("ready")
    try:
        res = await store.import_file(
            src, encrypt=encrypt, randbytes=os.urandom, progress=lambda n, total: say(f"p {n}")
        )
        say(f"done written={res.pieces_written} reused={res.pieces_reused} hash={res.hash_name.hex()}")
    finally:
        await store.close()


async def do_download(db: str, src_db: str, hash_hex: str) -> None:
    h = bytes.fromhex(hash_hex)
    src = await ChunkStore.open(src_db)
    dst = await ChunkStore.open(db)
    say("ready")
    try:
        await dst.put_manifest(await src.get_manifest(h), expected_hash=h)
        missing = [i for a, b in (await dst.have(h)).ranges(present=False) for i in range(a, b)]
        stored = dups = 0
        for k in range(0, len(missing), 32):
            batch = [(i, *(await src.get_piece(h, i))) for i in missing[k : k + 32]]
            r = await dst.put_pieces(h, verify_pieces(await dst.manifest(h), batch))
            stored += r.stored
            dups += r.duplicates
            say(f"p {(await dst.get_download_state(h)).have}")
        say(f"done written={stored} duplicates={dups}")
    finally:
        await src.close()
        await dst.close()


def main(argv: list[str]) -> int:
    mode = argv[0]
    try:
        if mode == "import":
            if "--fsize-limit" in argv:
                limit = int(argv[argv.index("--fsize-limit") + 1])
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            asyncio.run(do_import(argv[1], argv[2], "--encrypt" in argv))
        elif mode == "download":
            asyncio.run(do_download(argv[1], argv[2], argv[3]))
        else:
            return 2
    except StorageError as exc:
        say(f"error {exc.kind} {exc}")
        return 3
    finally:
        say(f"hwm {peak_rss_kib()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
