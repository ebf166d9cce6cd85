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

The store is reached only through :class:`storage.ports.ImportTarget`.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Callable, Iterator
from typing import IO

from peer.crypto.identity import RandBytes, SigningKey
from peer.errors import UsageError
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
from storage.ports import ImportPiece, ImportTarget, SourceVersion
from storage.sharelink import ShareLink
from storage.types import ImportResult

DEFAULT_MIME = "application/octet-stream"
Batch = list[ImportPiece]


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
        out.append(ImportPiece(i, leaf_hash(data), data))
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
    store: ImportTarget,
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

    source = SourceVersion(src, st.st_size, st.st_mtime_ns, encrypt, piece_size)
    record = await store.find_import(source)
    if record is not None and record.manifest is not None:  # already imported, unchanged: nothing to do
        m = Manifest.decode(record.manifest)
        return ImportResult(m.hash_name, ShareLink(m.hash_name, m.name or None, record.link_key), m, 0, count)
    if record is None:
        # A different version of this file was being imported: its pieces are useless now.
        await store.drop_unfinished_imports(src)
        share_name = truncate_utf8(name if name is not None else os.path.basename(src), 255)
        share_mime = mime if mime is not None else (mimetypes.guess_type(share_name)[0] or DEFAULT_MIME)
        salt, seed = randbytes(SALT_LEN), randbytes(32)
        key = randbytes(32) if encrypt else None
        share_id = await store.start_import(
            source,
            piece_count=count,
            link_key=key,
            publisher_seed=seed,
            salt=salt,
            name=share_name,
            mime=share_mime,
        )
        created_day = 0
    else:
        share_id, key, seed, salt = record.share_id, record.link_key, record.publisher_seed, record.salt
        share_name, share_mime, created_day = record.name, record.mime, record.created_day

    # Leaves of the pieces an interrupted run already stored.
    leaves = bytearray(HASH_LEN * count)
    have = bytearray(count)
    for i, leaf in await store.stored_leaves(share_id):
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
        try:
            while pending is not None:
                rows = await pending
                pending = start(next(batches, None))
                await store.add_import_pieces(share_id, rows)
                for p in rows:
                    leaves[p.index * HASH_LEN : (p.index + 1) * HASH_LEN] = p.leaf
                written += len(rows)
                if progress is not None:
                    progress(reused + written, count)
        except BaseException:  # a failed write, a failed read, cancellation or the progress callback
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            raise
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
    await store.finish_import(share_id, manifest, tree.encoded_proofs())
    link = ShareLink(hash_name, None if encrypt else (share_name or None), key)
    return ImportResult(hash_name, link, manifest, written, reused)
