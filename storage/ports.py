"""The narrow views of the chunk store that the importer and the exporter work through (docs/storage.md).

:class:`storage.chunkstore.ChunkStore` hands :func:`storage.importer.import_file` an
:class:`ImportTarget` and :func:`storage.export.export_share` an :class:`ExportSource`; neither
module imports the store, and neither can do more to it than these methods allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from storage.encryption import PieceCipher
from storage.manifest import Manifest
from storage.types import DownloadInfo


@dataclass(frozen=True, slots=True)
class SourceVersion:
    """One version of a local file to import, with the import's options."""

    path: str  # absolute
    size: int
    mtime_ns: int
    encrypt: bool
    piece_size: int


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """The recorded import of a :class:`SourceVersion`: finished (``manifest`` set) or interrupted."""

    share_id: int
    manifest: bytes | None  # the signed manifest once the import finished
    link_key: bytes | None = field(repr=False)  # encrypted shares
    publisher_seed: bytes = field(repr=False)
    salt: bytes
    name: str
    mime: str
    created_day: int


@dataclass(frozen=True, slots=True)
class ImportPiece:
    """A piece read from the source (encrypted for an encrypted share) and its leaf hash."""

    index: int
    leaf: bytes
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ExportShare:
    """A stored share as the exporter reads it."""

    manifest: Manifest
    cipher: PieceCipher | None  # None for a plain share
    key: bytes | None = field(repr=False)  # the link key (given, else stored) of an encrypted share


class ImportTarget(Protocol):
    """What an import may do to the store: record a source, add its pieces, publish its manifest."""

    @property
    def batch_bytes(self) -> int:
        """Bytes of pieces to write per transaction."""
        ...

    async def find_import(self, source: SourceVersion) -> ImportRecord | None:
        """The import of exactly this source version, finished or not."""
        ...

    async def drop_unfinished_imports(self, path: str) -> None:
        """Delete the unfinished imports of ``path`` (of other versions of the file) and their pieces."""
        ...

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
        """Record a new import (state IMPORTING, no hash_name yet) in one transaction; its share id."""
        ...

    async def stored_leaves(self, share_id: int) -> list[tuple[int, bytes]]:
        """(index, leaf hash) of every piece the import already stored."""
        ...

    async def add_import_pieces(self, share_id: int, pieces: Sequence[ImportPiece]) -> None:
        """Store a batch of the import's pieces (no proofs yet) in one transaction."""
        ...

    async def finish_import(self, share_id: int, manifest: Manifest, proofs: Iterable[bytes]) -> None:
        """Set every piece's encoded proof (in index order) and publish the manifest, in one transaction."""
        ...


class ExportSource(Protocol):
    """What an export may read from the store."""

    @property
    def batch_bytes(self) -> int:
        """Bytes of pieces to read per batch."""
        ...

    async def export_share(self, hash_name: bytes, key: bytes | None) -> ExportShare:
        """The share's manifest and cipher; ShareNotFound, KeyRequired, DecryptError (a wrong key)."""
        ...

    async def get_download_state(self, hash_name: bytes) -> DownloadInfo: ...

    async def verified_pieces(self, hash_name: bytes, first: int, last: int) -> dict[int, bytes]:
        """Stored pieces ``first..last`` (inclusive) as stored, checked against their leaf hashes.

        A corrupt piece is dropped from the store and left out.
        """
        ...
