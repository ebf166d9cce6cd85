"""SQLite schema of the chunk store and its migrations (DESIGN §9; docs/storage.md "Schema").

The schema version lives in ``PRAGMA user_version``; each migration runs in one
transaction together with the version bump, so a crash leaves either the old or
the new schema.  A database from a newer peersm (a higher version) is refused.

A piece is stored only once verified (a download: against the Merkle root with its
proof, both written in one transaction; an import: hashed as it is read, its proof
filled in by the transaction that publishes the manifest).  Pieces are keyed by ``piece_key(share_id, index) = share_id << 32 | index``
so that one rowid B-tree serves both lookups and whole-share range scans.
"""

from __future__ import annotations

from collections.abc import Sequence

PAGE_SIZE = 16384

# Run once on a new, empty database, before any table exists (page size and
# auto-vacuum cannot change later in WAL mode).
CREATE_PRAGMAS: Sequence[str] = (
    f"PRAGMA page_size = {PAGE_SIZE}",
    "PRAGMA auto_vacuum = INCREMENTAL",
)

MIGRATIONS: Sequence[Sequence[str]] = (
    # version 1
    (
        """CREATE TABLE shares (
            id INTEGER PRIMARY KEY,
            hash_name BLOB UNIQUE,             -- NULL while an import is running
            manifest BLOB,                     -- signed manifest bytes (NULL while importing)
            origin INTEGER NOT NULL,           -- 1 = imported here, 2 = downloaded
            state INTEGER NOT NULL,            -- DownloadState
            seeding INTEGER NOT NULL DEFAULT 1,
            piece_count INTEGER NOT NULL,
            have_count INTEGER NOT NULL DEFAULT 0,
            link_key BLOB,                     -- 32 bytes, encrypted shares whose key we know
            publisher_seed BLOB,               -- 32 bytes, shares we published
            added REAL NOT NULL
        )""",
        """CREATE TABLE imports (
            share_id INTEGER PRIMARY KEY REFERENCES shares(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            source_size INTEGER NOT NULL,
            source_mtime_ns INTEGER NOT NULL,
            encrypt INTEGER NOT NULL,
            piece_size INTEGER NOT NULL,
            salt BLOB NOT NULL,
            name TEXT NOT NULL,
            mime TEXT NOT NULL,
            created_day INTEGER NOT NULL
        )""",
        "CREATE INDEX imports_source ON imports(source)",
        # One small row per stored piece (scanned for bitfields) ...
        "CREATE TABLE pieces (id INTEGER PRIMARY KEY, leaf BLOB NOT NULL, proof BLOB)",
        # ... and its bytes apart, so that scans and proof updates never touch the 64 KiB blobs.
        "CREATE TABLE piece_data (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    ),
)

LATEST = len(MIGRATIONS)


def piece_key(share_id: int, index: int) -> int:
    return share_id << 32 | index


def share_range(share_id: int) -> tuple[int, int]:
    """Inclusive rowid bounds of every piece of ``share_id``."""
    return share_id << 32, share_id << 32 | 0xFFFF_FFFF
