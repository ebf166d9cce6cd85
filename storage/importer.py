"""Importing a local file into the chunk store (DESIGN §7, §9; docs/storage.md "Import").

One pass over the file, in batches of about ``store.batch_bytes``: each piece is read,
encrypted for an encrypted share, hashed into its Merkle leaf and written with the
leaf in one transaction per batch.  Reading and hashing the next batch (in a worker
thread) overlaps the write of the current one; at most two batches are in memory,
plus 32 bytes of leaf hash per piece.

The import is resumable: the share row, the source's size and mtime, the salt, the
link key and the publisher key are committed before the first piece, so calling
:func:`import_file` again for the same unchanged file skips every stored piece
(it reads their leaf hashes back from the database) and carries on.  The final
transaction fills in every proof and publishes the signed manifest at once.
A publisher key is made fresh for each share.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

from peer.crypto.identity import RandBytes, SigningKey
from peer.errors import UsageError
from storage import schema
from storage.encryption import Metadata, PieceCipher, encrypt_metadata
from storage.errors import SourceChanged
from storage.manifest import (
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    SALT_LEN,
    Flags,
    Manifest,
    pieces_for,
    sign_manifest,
)
from storage.merkle import HASH_LEN, MAX_PIECES, MerkleTree, leaf_hash
from storage.names import truncate_utf8
from storage.sharelink import ShareLink
from storage.types import DownloadState, ImportResult, Origin

if TYPE_CHECKING:
    from storage.chunkstore import ChunkStore

DEFAULT_MIME = "application/octet-stream"
Batch = list[tuple[int, bytes, bytes]]


def _read_batch(
    f: IO[bytes], indices: list[int], piece_size: int, size: int, cipher: PieceCipher | None
) -> Batch:
    out = []
    for i in indices:
        want = min(piece_size, size - i * piece_size)
        f.seek(i * piece_size)
        data = f.read(want)
        if len(data) != want:
            raise SourceChanged("the file shrank while it was imported")
        if cipher is not None:
            data = cipher.encrypt(i, data)
        out.append((i, leaf_hash(data), data))
    return out


def _batches(have: bytearray, per_batch: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for i, present in enumerate(have):
        if not present:
            batch.append(i)
            if len(batch) == per_batch:
                yield batch
                batch = []
    if batch:
        yield batch


async def import_file(
    store: ChunkStore,
    path: str | os.PathLike[str],
    *,
    encrypt: bool,
    randbytes: RandBytes,
    piece_size: int,
    name: str | None,
    mime: str | None,
    progress: Callable[[int, int], None] | None,
) -> ImportResult:
    """Import ``path`` (resuming an interrupted import of the same unchanged file)."""
    src = os.path.abspath(path)
    st = os.stat(src)
    if not os.path.isfile(src):
        raise UsageError("only regular files can be imported")
    if not (MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE) or piece_size & (piece_size - 1):
        raise UsageError("piece size must be a power of two between 1 KiB and 16 MiB")
    count = pieces_for(st.st_size, piece_size)
    if count > MAX_PIECES:
        raise UsageError("file too large for this piece size")

    row = await store._one(
        "SELECT s.id, s.hash_name, s.manifest, s.link_key, s.publisher_seed, i.salt, i.name, i.mime, i.created_day"
        " FROM imports i JOIN shares s ON s.id = i.share_id WHERE i.source = ? AND i.source_size = ?"
        " AND i.source_mtime_ns = ? AND i.encrypt = ? AND i.piece_size = ?",
        (src, st.st_size, st.st_mtime_ns, int(encrypt), piece_size),
    )
    if row is not None and row[1] is not None:  # already imported, unchanged: nothing to do
        m = Manifest.decode(row[2])
        return ImportResult(row[1], ShareLink(row[1], m.name or None, row[3]), m, 0, count)
    if row is None:
        # A different version of this file was being imported: its pieces are useless now.
        for (stale,) in await store._query(
            "SELECT i.share_id FROM imports i JOIN shares s ON s.id = i.share_id"
            " WHERE i.source = ? AND s.hash_name IS NULL",
            (src,),
        ):
            await store._remove_id(stale)
        share_name = truncate_utf8(name if name is not None else os.path.basename(src), 255)
        share_mime = mime if mime is not None else (mimetypes.guess_type(share_name)[0] or DEFAULT_MIME)
        salt, seed = randbytes(SALT_LEN), randbytes(32)
        key = randbytes(32) if encrypt else None
        async with store._tx() as w:
            cur = await w.execute(
                "INSERT INTO shares(origin, state, piece_count, link_key, publisher_seed, added) VALUES (?, ?, ?, ?, ?, ?)",
                (int(Origin.IMPORTED), int(DownloadState.IMPORTING), count, key, seed, store._clock()),
            )
            share_id = cur.lastrowid
            await w.execute(
                "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    share_id,
                    src,
                    st.st_size,
                    st.st_mtime_ns,
                    int(encrypt),
                    piece_size,
                    salt,
                    share_name,
                    share_mime,
                ),
            )
        created_day = 0
    else:
        share_id, key, seed, salt, share_name, share_mime, created_day = (
            row[0],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
        )
    assert share_id is not None

    # Leaves of the pieces an interrupted run already stored.
    leaves = bytearray(HASH_LEN * count)
    have = bytearray(count)
    lo, hi = schema.share_range(share_id)
    for rowid, leaf in await store._query("SELECT id, leaf FROM pieces WHERE id BETWEEN ? AND ?", (lo, hi)):
        i = rowid & 0xFFFF_FFFF
        leaves[i * HASH_LEN : (i + 1) * HASH_LEN] = leaf
        have[i] = 1
    reused = sum(have)
    written = 0
    cipher = PieceCipher(key, salt, count) if key is not None else None
    per_batch = max(1, store.batch_bytes // piece_size)

    with open(src, "rb", buffering=0) as f:
        batches = _batches(have, per_batch)

        def start(indices: list[int] | None) -> asyncio.Future[Batch] | None:
            if indices is None:
                return None
            return asyncio.ensure_future(
                asyncio.to_thread(_read_batch, f, indices, piece_size, st.st_size, cipher)
            )

        pending = start(next(batches, None))
        while pending is not None:
            rows = await pending
            pending = start(next(batches, None))
            try:
                async with store._tx() as w:
                    await w.executemany(
                        "INSERT INTO pieces(id, leaf, proof) VALUES (?, ?, NULL)",
                        [
                            (
                                lo | i,
                                lf,
                            )
                            for i, lf, _ in rows
                        ],
                    )
                    await w.executemany(
                        "INSERT INTO piece_data(id, data) VALUES (?, ?)", [(lo | i, d) for i, _, d in rows]
                    )
                    await w.execute(
                        "UPDATE shares SET have_count = have_count + ? WHERE id = ?", (len(rows), share_id)
                    )
            except BaseException:
                if pending is not None:
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)
                raise
            for i, lf, _ in rows:
                leaves[i * HASH_LEN : (i + 1) * HASH_LEN] = lf
            written += len(rows)
            if progress is not None:
                progress(reused + written, count)
        after = os.fstat(f.fileno())
    if after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns:
        raise SourceChanged("the file changed while it was imported; import it again")

    tree = MerkleTree(leaves)
    publisher = SigningKey(seed)
    flags = Flags.ENCRYPTED if encrypt else Flags.NONE
    meta = (
        encrypt_metadata(key, salt, Metadata(share_name, share_mime), randbytes) if key is not None else b""
    )
    unsigned = Manifest(
        st.st_size,
        piece_size,
        count,
        tree.root,
        publisher.public,
        flags,
        salt,
        created_day,
        "" if encrypt else share_name,
        "" if encrypt else share_mime,
        meta,
    )
    manifest = sign_manifest(unsigned, publisher)
    hash_name = manifest.hash_name

    def proofs() -> Iterator[tuple[bytes, int]]:
        for i, proof in enumerate(tree.encoded_proofs()):
            yield proof, lo | i

    async with store._tx() as w:
        await w.executemany("UPDATE pieces SET proof = ? WHERE id = ?", proofs())
        await w.execute(
            "UPDATE shares SET hash_name = ?, manifest = ?, state = ? WHERE id = ?",
            (hash_name, manifest.encode(), int(DownloadState.COMPLETE), share_id),
        )
    link = ShareLink(hash_name, None if encrypt else (share_name or None), key)
    return ImportResult(hash_name, link, manifest, written, reused)
