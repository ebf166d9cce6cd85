"""The chunk store: manifests, verified pieces and download state in SQLite (DESIGN §9; docs/storage.md).

One :class:`ChunkStore` owns one database file, opened through aiosqlite in WAL
mode with ``synchronous=NORMAL`` (``FULL`` on request).  It keeps two connections:
a writer, serialised by an :class:`asyncio.Lock` so that transactions of different
tasks never interleave, and a reader that only ever sees committed data.

Crash safety (argued in docs/storage.md): every change is one ``BEGIN IMMEDIATE``
... ``COMMIT`` transaction, a piece row and its bytes are always written together,
and only pieces that verified are written, so a ``kill -9`` loses at most the
batch in flight and never leaves a half-written or unverified piece.

Importing and exporting files live in :mod:`storage.importer` and
:mod:`storage.export`, which reach the store only through the narrow views of
:mod:`storage.ports` (implemented here by ``_Importing`` and ``_Exporting``);
this module holds the rest of the API.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from peer.crypto.identity import RandBytes
from peer.errors import StorageError, UsageError
from storage import export, importer, schema
from storage.encryption import PieceCipher, decrypt_metadata
from storage.errors import (
    CorruptPiece,
    DiskFullError,
    KeyRequired,
    PieceMissing,
    SchemaError,
    ShareNotFound,
    StoreWriteError,
)
from storage.manifest import DEFAULT_PIECE_SIZE, Manifest, parse_manifest
from storage.merkle import MerkleProof
from storage.ports import ExportShare, ImportPiece, ImportRecord, SourceVersion
from storage.sharelink import ShareLink
from storage.types import (
    Bitfield,
    ByteRange,
    DownloadInfo,
    DownloadState,
    ImportResult,
    Origin,
    PutResult,
    ShareInfo,
    StoreStats,
)
from storage.verify import VerifiedPiece, assemble, check_rows

Synchronous = Literal["NORMAL", "FULL"]
MAX_RANGE = 64 << 20  # largest read_range, bytes
_PIPELINE_BYTES = 2 << 20  # reads are fetched and re-verified in runs of this many bytes, overlapped
_INLINE_BYTES = 256 << 10  # runs up to this size are re-verified on the event loop, without a thread hop
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def _mapped(exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    if code == _SQLITE_FULL:
        return DiskFullError("the store is full (disk space or quota): free space, then retry")
    if code & 0xFF == _SQLITE_IOERR:
        return StoreWriteError(f"the store cannot write ({exc}): disk full, file-size limit or I/O error")
    return StorageError(f"the store failed: {exc}")


@dataclass(slots=True)
class _Share:
    id: int
    manifest: Manifest
    key: bytes | None = field(repr=False)
    cipher: PieceCipher | None = field(default=None, repr=False)

    def piece_cipher(self, key: bytes | None) -> PieceCipher | None:
        """The cipher for this share's pieces, or None for a plain share; KeyRequired if unknown."""
        m = self.manifest
        if not m.encrypted:
            return None
        if key is not None and key != self.key:
            decrypt_metadata(key, m.salt, m.meta)  # DecryptError early on a wrong key
            return PieceCipher(key, m.salt, m.piece_count)
        if self.key is None:
            raise KeyRequired("this share is encrypted: its link key is needed")
        if self.cipher is None:
            self.cipher = PieceCipher(self.key, m.salt, m.piece_count)
        return self.cipher


class ChunkStore:
    """The content store of one peer.  Create with ``await ChunkStore.open(path)``."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self._w = writer
        self._r = reader
        self._clock = clock
        self._lock = asyncio.Lock()
        self._shares: dict[bytes, _Share] = {}
        self._importing: set[str] = set()  # absolute paths being imported by this store object
        self.batch_bytes = 4 << 20  # bytes of pieces per import/export batch

    # ----------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        synchronous: Synchronous = "NORMAL",
        *,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ChunkStore:
        """Open (creating if needed, mode 0600) the store at ``path``; ``max_bytes`` caps the database size."""
        if synchronous not in ("NORMAL", "FULL"):
            raise UsageError("synchronous is NORMAL or FULL")
        p = Path(path)
        fresh = not p.exists() or p.stat().st_size == 0
        if fresh:
            try:
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StorageError(f"cannot create the store: {exc.strerror}") from exc
        try:
            w = await aiosqlite.connect(p, isolation_level=None)
        except sqlite3.Error as exc:
            raise _mapped(exc) from exc
        r: aiosqlite.Connection | None = None
        try:
            if fresh:
                for pragma in schema.CREATE_PRAGMAS:
                    await w.execute(pragma)
            mode = await (await w.execute("PRAGMA journal_mode = WAL")).fetchone()
            if not mode or str(mode[0]).lower() != "wal":
                raise StorageError("the store needs WAL mode")
            for pragma in (
                f"PRAGMA synchronous = {synchronous}",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 10000",
            ):
                await w.execute(pragma)
            await cls._migrate(w)
            r = await aiosqlite.connect(p, isolation_level=None)
            await r.execute("PRAGMA busy_timeout = 10000")
            await r.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            await w.close()
            if r is not None:
                await r.close()
            if isinstance(exc, sqlite3.Error):
                raise _mapped(exc) from exc
            raise
        store = cls(p, w, r, clock)
        if max_bytes is not None:
            await store.set_quota(max_bytes)
        return store

    @staticmethod
    async def _migrate(w: aiosqlite.Connection) -> None:
        row = await (await w.execute("PRAGMA user_version")).fetchone()
        version = int(row[0]) if row else 0
        if version > schema.LATEST:
            raise SchemaError(f"store schema {version} is newer than this peersm ({schema.LATEST})")
        for target in range(version + 1, schema.LATEST + 1):
            await w.execute("BEGIN IMMEDIATE")
            try:
                for stmt in schema.MIGRATIONS[target - 1]:
                    await w.execute(stmt)
                await w.execute(f"PRAGMA user_version = {target}")
                await w.execute("COMMIT")
            except BaseException:
                await w.rollback()
                raise

    async def close(self) -> None:
        """Close both connections (a clean close checkpoints the WAL into the database)."""
        await self._r.close()
        await self._w.close()

    async def __aenter__(self) -> ChunkStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def set_quota(self, max_bytes: int | None) -> None:
        """Cap the database at ``max_bytes`` (None: no cap); writes past it raise DiskFullError."""
        pages = 0x7FFF_FFFE if max_bytes is None else max(1, max_bytes // schema.PAGE_SIZE)
        async with self._lock:
            await self._w.execute(f"PRAGMA max_page_count = {int(pages)}")

    # ----------------------------------------------------------------- plumbing
    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; sqlite errors become typed StorageErrors and roll it back."""
        async with self._lock:
            try:
                await self._w.execute("BEGIN IMMEDIATE")
                yield self._w
                await self._w.execute("COMMIT")
            except BaseException as exc:
                if self._w.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self._w.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _mapped(exc) from exc
                raise

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _mapped(exc) from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._query(sql, params)
        return rows[0] if rows else None

    async def _share(self, hash_name: bytes) -> _Share:
        share = self._shares.get(hash_name)
        if share is not None:
            return share
        row = await self._one("SELECT id, manifest, link_key FROM shares WHERE hash_name = ?", (hash_name,))
        if row is None:
            raise ShareNotFound("no such share in the store")
        share = _Share(row[0], parse_manifest(row[1], hash_name), row[2])
        self._shares[hash_name] = share
        return share

    # ----------------------------------------------------------------- manifests
    async def put_manifest(
        self, data: bytes, *, expected_hash: bytes | None = None, key: bytes | None = None
    ) -> Manifest:
        """Verify a signed manifest and record the share as WANTED (idempotent); nothing written if it fails.

        ``key`` (encrypted shares) is checked against the encrypted metadata and kept for export.
        """
        m = parse_manifest(data, expected_hash)
        if key is not None and m.encrypted:
            decrypt_metadata(key, m.salt, m.meta)
        elif key is not None:
            raise UsageError("a plain share has no key")
        h = m.hash_name
        async with self._tx() as w:
            await w.execute(
                "INSERT INTO shares(hash_name, manifest, origin, state, piece_count, have_count, link_key, added)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT(hash_name) DO UPDATE SET"
                " link_key = coalesce(link_key, excluded.link_key)",
                (
                    h,
                    data,
                    int(Origin.DOWNLOADED),
                    int(DownloadState.COMPLETE if m.piece_count == 0 else DownloadState.WANTED),
                    m.piece_count,
                    key,
                    self._clock(),
                ),
            )
        self._shares.pop(h, None)
        return m

    async def get_manifest(self, hash_name: bytes) -> bytes:
        """The signed manifest bytes (what a requester verifies against the hash_name)."""
        return (await self._share(hash_name)).manifest.encode()

    async def manifest(self, hash_name: bytes) -> Manifest:
        return (await self._share(hash_name)).manifest

    # ----------------------------------------------------------------- pieces
    async def put_pieces(self, hash_name: bytes, pieces: Iterable[VerifiedPiece]) -> PutResult:
        """Store pieces verified for this share (by :func:`storage.verify.verify_pieces`) in one transaction.

        Nothing is hashed again here.  Pieces already stored are ignored; a repeated index counts once.
        """
        share = await self._share(hash_name)
        rows: dict[int, VerifiedPiece] = {}
        for p in pieces:
            if not isinstance(p, VerifiedPiece) or p.hash_name != hash_name:
                raise UsageError("put_pieces takes pieces verified for this share by verify_pieces")
            rows.setdefault(p.index, p)
        lo, _ = schema.share_range(share.id)
        async with self._tx() as w:
            cur = await w.executemany(
                "INSERT OR IGNORE INTO pieces(id, leaf, proof) VALUES (?, ?, ?)",
                [(lo | p.index, p.leaf, p.proof) for p in rows.values()],
            )
            stored = cur.rowcount
            await w.executemany(
                "INSERT OR IGNORE INTO piece_data(id, data) VALUES (?, ?)",
                [(lo | p.index, p.piece) for p in rows.values()],
            )
            counts = await w.execute_fetchall(
                "UPDATE shares SET have_count = have_count + ?,"
                " state = CASE WHEN have_count + ? >= piece_count THEN ? ELSE state END WHERE id = ?"
                " RETURNING have_count, piece_count",
                (stored, stored, int(DownloadState.COMPLETE), share.id),
            )
            if not counts:  # raising rolls the whole batch back
                raise ShareNotFound("the share was removed")
        have, total = next(iter(counts))
        return PutResult(stored, len(rows) - stored, have >= total)

    async def _drop_piece(self, share: _Share, index: int) -> None:
        key = schema.piece_key(share.id, index)
        async with self._tx() as w:
            cur = await w.execute("DELETE FROM pieces WHERE id = ?", (key,))
            await w.execute("DELETE FROM piece_data WHERE id = ?", (key,))
            if cur.rowcount:
                await w.execute(
                    "UPDATE shares SET have_count = have_count - 1,"
                    " state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?",
                    (int(DownloadState.COMPLETE), int(DownloadState.WANTED), share.id),
                )

    async def _fetch(
        self, share: _Share, first: int, last: int, *, proofs: bool
    ) -> tuple[dict[int, tuple[bytes, MerkleProof | None]], list[int]]:
        """Stored pieces ``first..last`` (inclusive), re-verified, and the corrupt ones, which are dropped.

        With ``proofs`` each piece is checked against the Merkle root through its stored proof (what
        we serve to others); without, against its stored leaf hash, itself checked against the root
        when the piece was stored (what we read ourselves).  Pieces are read in runs of about
        ``_PIPELINE_BYTES``; a run is hashed in a worker thread while the next one is read (small runs
        are hashed in place).  Nothing is returned before every piece of the range has been checked.
        """
        lo, _ = schema.share_range(share.id)
        root = share.manifest.root if proofs else None
        step = max(1, _PIPELINE_BYTES // share.manifest.piece_size)
        good: dict[int, tuple[bytes, MerkleProof | None]] = {}
        bad: list[int] = []
        checking: asyncio.Future[tuple[dict[int, tuple[bytes, MerkleProof | None]], list[int]]] | None = None
        try:
            # Read run k+1 (reader connection's thread) while run k is hashed (a worker thread).
            for a in range(first, last + 1, step):
                rows = await self._query(
                    "SELECT p.id, p.leaf, p.proof, d.data FROM pieces p JOIN piece_data d ON d.id = p.id"
                    " WHERE p.id BETWEEN ? AND ? AND p.proof IS NOT NULL",
                    (lo | a, lo | min(last, a + step - 1)),
                )
                if checking is not None:
                    g, b = await checking
                    good.update(g)
                    bad += b
                    checking = None
                if len(rows) * share.manifest.piece_size <= _INLINE_BYTES:
                    # A small run (such as one piece): hashing it here costs less than a thread hop.
                    g, b = check_rows(rows, root)
                    good.update(g)
                    bad += b
                else:
                    checking = asyncio.ensure_future(asyncio.to_thread(check_rows, rows, root))
            if checking is not None:
                g, b = await checking
                good.update(g)
                bad += b
                checking = None
        finally:
            if checking is not None:
                await asyncio.gather(checking, return_exceptions=True)
        for index in bad:
            await self._drop_piece(share, index)
        return good, bad

    async def _load(self, share: _Share, first: int, last: int) -> dict[int, bytes]:
        good, _ = await self._fetch(share, first, last, proofs=False)
        return {i: d for i, (d, _) in good.items()}

    async def get_piece(self, hash_name: bytes, index: int) -> tuple[bytes, MerkleProof]:
        """A stored piece (as stored: ciphertext for encrypted shares) and its proof, re-verified.

        PieceMissing if it is not stored; CorruptPiece if it no longer verifies (it is then dropped).
        """
        share = await self._share(hash_name)
        if not 0 <= index < share.manifest.piece_count:
            raise UsageError(f"piece {index} outside the share")
        got, dropped = await self._fetch(share, index, index, proofs=True)
        if dropped:
            raise CorruptPiece(f"stored piece {index} was corrupt and has been dropped")
        if index not in got:
            raise PieceMissing(f"piece {index} is not stored")
        data, proof = got[index]
        assert proof is not None
        return data, proof

    async def get_pieces(
        self, hash_name: bytes, first: int, last: int
    ) -> list[tuple[int, bytes, MerkleProof]]:
        """Every stored piece in ``first..last`` (inclusive) with its proof, re-verified; missing ones skipped."""
        share = await self._share(hash_name)
        got, _ = await self._fetch(
            share, max(0, first), min(last, share.manifest.piece_count - 1), proofs=True
        )
        return [(i, d, p) for i, (d, p) in sorted(got.items()) if p is not None]

    async def recheck(self, hash_name: bytes) -> int:
        """Re-verify every stored piece against the Merkle root; drop and count the corrupt ones."""
        share = await self._share(hash_name)
        before = (await self.get_download_state(hash_name)).have
        step = max(1, self.batch_bytes // share.manifest.piece_size)
        for first in range(0, share.manifest.piece_count, step):
            await self._fetch(share, first, first + step - 1, proofs=True)
        return before - (await self.get_download_state(hash_name)).have

    async def have(self, hash_name: bytes) -> Bitfield:
        share = await self._share(hash_name)
        lo, hi = schema.share_range(share.id)
        rows = await self._query(
            "SELECT id FROM pieces WHERE id BETWEEN ? AND ? AND proof IS NOT NULL", (lo, hi)
        )
        return Bitfield.from_indices(share.manifest.piece_count, [r[0] & 0xFFFF_FFFF for r in rows])

    async def read_range(
        self, hash_name: bytes, start: int, end: int, *, key: bytes | None = None
    ) -> ByteRange:
        """Verified (and decrypted) bytes of [start, end) in file offsets, up to the first missing piece."""
        share = await self._share(hash_name)
        m = share.manifest
        end = min(end, m.size)
        if not 0 <= start <= end or end - start > MAX_RANGE:
            raise UsageError(f"bad range [{start}, {end}) (at most {MAX_RANGE} bytes within {m.size})")
        if start == end:
            return ByteRange(start, b"", ())
        cipher = share.piece_cipher(key)
        ps = m.piece_size
        first, last = start // ps, (end - 1) // ps
        pieces = await self._load(share, first, last)
        data, missing = await asyncio.to_thread(assemble, pieces, start, end, ps, cipher)
        return ByteRange(start, data, missing)

    # ----------------------------------------------------------------- files
    async def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        encrypt: bool,
        randbytes: RandBytes,
        piece_size: int = DEFAULT_PIECE_SIZE,
        name: str | None = None,
        mime: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Import a local file in one pass (see :func:`storage.importer.import_file`)."""
        src = os.path.abspath(path)
        if src in self._importing:
            raise UsageError("this file is already being imported")
        self._importing.add(src)
        try:
            return await importer.import_file(
                _Importing(self),
                src,
                encrypt=encrypt,
                randbytes=randbytes,
                piece_size=piece_size,
                name=name,
                mime=mime,
                progress=progress,
            )
        finally:
            self._importing.discard(src)

    async def export(self, hash_name: bytes, dest: str | os.PathLike[str], key: bytes | None = None) -> Path:
        """Write the share's plaintext to a file atomically (see :func:`storage.export.export_share`)."""
        return await export.export_share(_Exporting(self), hash_name, Path(dest), key)

    # ----------------------------------------------------------------- shares
    async def link(self, hash_name: bytes) -> ShareLink:
        """The share link, with the key when we know it (the name only for plain shares)."""
        share = await self._share(hash_name)
        m = share.manifest
        return ShareLink(hash_name, m.name or None, share.key if m.encrypted else None)

    async def list(self) -> list[ShareInfo]:
        rows = await self._query(
            "SELECT s.hash_name, s.manifest, s.origin, s.state, s.seeding, s.piece_count, s.have_count,"
            " s.link_key, i.name, i.mime, i.source_size, i.encrypt FROM shares s"
            " LEFT JOIN imports i ON i.share_id = s.id ORDER BY s.id"
        )
        out = []
        for h, raw, origin, state, seeding, count, have, key, iname, imime, isize, ienc in rows:
            if raw is None:
                out.append(
                    ShareInfo(
                        None,
                        iname,
                        imime,
                        isize,
                        count,
                        have,
                        DownloadState(state),
                        bool(seeding),
                        bool(ienc),
                        Origin(origin),
                    )
                )
                continue
            m = Manifest.decode(raw)
            name, mime = (m.name, m.mime) if not m.encrypted else (None, None)
            if m.encrypted and key is not None:
                meta = decrypt_metadata(key, m.salt, m.meta)
                name, mime = meta.name, meta.mime
            out.append(
                ShareInfo(
                    h,
                    name,
                    mime,
                    m.size,
                    count,
                    have,
                    DownloadState(state),
                    bool(seeding),
                    m.encrypted,
                    Origin(origin),
                )
            )
        return out

    async def remove(self, hash_name: bytes) -> None:
        """Delete a share and its pieces; the space is reused by later writes (see :meth:`compact`)."""
        share = await self._share(hash_name)
        await self._remove_id(share.id)
        self._shares.pop(hash_name, None)

    async def _remove_id(self, share_id: int) -> None:
        lo, hi = schema.share_range(share_id)
        async with self._tx() as w:
            await w.execute("DELETE FROM piece_data WHERE id BETWEEN ? AND ?", (lo, hi))
            await w.execute("DELETE FROM pieces WHERE id BETWEEN ? AND ?", (lo, hi))
            await w.execute("DELETE FROM shares WHERE id = ?", (share_id,))

    async def compact(self, max_bytes: int | None = None) -> None:
        """Give free pages back to the file system (all of them, or about ``max_bytes``)."""
        pages = 0 if max_bytes is None else max(1, max_bytes // schema.PAGE_SIZE)
        async with self._lock:
            try:
                # executescript steps the pragma to completion (execute() would free one page only).
                await self._w.executescript(f"PRAGMA incremental_vacuum({pages});")
                await self._w.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise _mapped(exc) from exc

    async def stats(self) -> StoreStats:
        row = await self._one(
            "SELECT count(*), coalesce(sum(state = ?), 0), coalesce(sum(have_count), 0) FROM shares",
            (int(DownloadState.COMPLETE),),
        )
        size = await self._one("SELECT coalesce(sum(length(data)), 0) FROM piece_data")
        pages = await self._one("PRAGMA page_count")
        free = await self._one("PRAGMA freelist_count")
        return StoreStats(
            row[0], row[1], row[2], size[0], pages[0] * schema.PAGE_SIZE, free[0] * schema.PAGE_SIZE
        )

    # ----------------------------------------------------------------- download state
    async def set_download_state(self, hash_name: bytes, state: DownloadState) -> None:
        """WANTED or PAUSED; a COMPLETE share stays COMPLETE."""
        if state not in (DownloadState.WANTED, DownloadState.PAUSED):
            raise UsageError("only WANTED and PAUSED can be set; COMPLETE follows from the pieces")
        share = await self._share(hash_name)
        async with self._tx() as w:
            await w.execute(
                "UPDATE shares SET state = ? WHERE id = ? AND state != ?",
                (int(state), share.id, int(DownloadState.COMPLETE)),
            )

    async def set_seeding(self, hash_name: bytes, seeding: bool) -> None:
        """Opt a share in or out of serving its pieces to others."""
        share = await self._share(hash_name)
        async with self._tx() as w:
            await w.execute("UPDATE shares SET seeding = ? WHERE id = ?", (int(seeding), share.id))

    async def get_download_state(self, hash_name: bytes) -> DownloadInfo:
        share = await self._share(hash_name)
        row = await self._one(
            "SELECT state, seeding, have_count, piece_count FROM shares WHERE id = ?", (share.id,)
        )
        if row is None:
            raise ShareNotFound("the share was removed")
        return DownloadInfo(DownloadState(row[0]), bool(row[1]), row[2], row[3])

    async def downloads(self, state: DownloadState = DownloadState.WANTED) -> builtins.list[bytes]:
        """hash_names of the shares in ``state`` (e.g. what to resume fetching after a restart)."""
        rows = await self._query(
            "SELECT hash_name FROM shares WHERE state = ? AND hash_name IS NOT NULL ORDER BY id",
            (int(state),),
        )
        return [r[0] for r in rows]


class _Importing:
    """:class:`storage.ports.ImportTarget` over one store: what :mod:`storage.importer` may do to it."""

    def __init__(self, store: ChunkStore) -> None:
        self._store = store

    @property
    def batch_bytes(self) -> int:
        return self._store.batch_bytes

    async def find_import(self, source: SourceVersion) -> ImportRecord | None:
        row = await self._store._one(
            "SELECT s.id, s.manifest, s.link_key, s.publisher_seed, i.salt, i.name, i.mime, i.created_day"
            " FROM imports i JOIN shares s ON s.id = i.share_id WHERE i.source = ? AND i.source_size = ?"
            " AND i.source_mtime_ns = ? AND i.encrypt = ? AND i.piece_size = ?",
            (source.path, source.size, source.mtime_ns, int(source.encrypt), source.piece_size),
        )
        return None if row is None else ImportRecord(*row)

    async def drop_unfinished_imports(self, path: str) -> None:
        for (stale,) in await self._store._query(
            "SELECT i.share_id FROM imports i JOIN shares s ON s.id = i.share_id"
            " WHERE i.source = ? AND s.hash_name IS NULL",
            (path,),
        ):
            await self._store._remove_id(stale)

    async def start_import(
        self,
        source: SourceVersion,
        *,
        piece_count: int,
        link_key: bytes | None,
        publisher_seed: bytes,
        salt: bytes,
        name: str,
        mime: str,
    ) -> int:
        async with self._store._tx() as w:
            cur = await w.execute(
                "INSERT INTO shares(origin, state, piece_count, link_key, publisher_seed, added)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    int(Origin.IMPORTED),
                    int(DownloadState.IMPORTING),
                    piece_count,
                    link_key,
                    publisher_seed,
                    self._store._clock(),
                ),
            )
            share_id = cur.lastrowid
            assert share_id is not None
            await w.execute(
                "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    share_id,
                    source.path,
                    source.size,
                    source.mtime_ns,
                    int(source.encrypt),
                    source.piece_size,
                    salt,
                    name,
                    mime,
                ),
            )
        return share_id

    async def stored_leaves(self, share_id: int) -> list[tuple[int, bytes]]:
        lo, hi = schema.share_range(share_id)
        rows = await self._store._query("SELECT id, leaf FROM pieces WHERE id BETWEEN ? AND ?", (lo, hi))
        return [(rowid & 0xFFFF_FFFF, leaf) for rowid, leaf in rows]

    async def add_import_pieces(self, share_id: int, pieces: Sequence[ImportPiece]) -> None:
        lo, _ = schema.share_range(share_id)
        async with self._store._tx() as w:
            await w.executemany(
                "INSERT INTO pieces(id, leaf, proof) VALUES (?, ?, NULL)",
                [(lo | p.index, p.leaf) for p in pieces],
            )
            await w.executemany(
                "INSERT INTO piece_data(id, data) VALUES (?, ?)", [(lo | p.index, p.data) for p in pieces]
            )
            await w.execute(
                "UPDATE shares SET have_count = have_count + ? WHERE id = ?", (len(pieces), share_id)
            )

    async def finish_import(self, share_id: int, manifest: Manifest, proofs: Iterable[bytes]) -> None:
        lo, _ = schema.share_range(share_id)
        async with self._store._tx() as w:
            await w.executemany(
                "UPDATE pieces SET proof = ? WHERE id = ?", ((p, lo | i) for i, p in enumerate(proofs))
            )
            await w.execute(
                "UPDATE shares SET hash_name = ?, manifest = ?, state = ? WHERE id = ?",
                (manifest.hash_name, manifest.encode(), int(DownloadState.COMPLETE), share_id),
            )


class _Exporting:
    """:class:`storage.ports.ExportSource` over one store: what :mod:`storage.export` may read."""

    def __init__(self, store: ChunkStore) -> None:
        self._store = store

    @property
    def batch_bytes(self) -> int:
        return self._store.batch_bytes

    async def export_share(self, hash_name: bytes, key: bytes | None) -> ExportShare:
        share = await self._store._share(hash_name)
        cipher = share.piece_cipher(key)
        return ExportShare(share.manifest, cipher, key if key is not None else share.key)

    async def get_download_state(self, hash_name: bytes) -> DownloadInfo:
        return await self._store.get_download_state(hash_name)

    async def verified_pieces(self, hash_name: bytes, first: int, last: int) -> dict[int, bytes]:
        return await self._store._load(await self._store._share(hash_name), first, last)
