"""Values returned by the chunk store (DESIGN §9; docs/storage.md "API")."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peer.errors import UsageError
from storage.manifest import Manifest
from storage.sharelink import ShareLink


class DownloadState(enum.IntEnum):
    """What the runtime should do with a share; survives restarts."""

    IMPORTING = 0  # a local file is being imported (no hash_name yet)
    WANTED = 1  # fetch missing pieces
    PAUSED = 2  # keep what we have, fetch nothing
    COMPLETE = 3  # every piece stored and verified


class Origin(enum.IntEnum):
    IMPORTED = 1
    DOWNLOADED = 2


@dataclass(frozen=True, slots=True)
class Bitfield:
    """Which pieces of a share are stored; bit i is set when piece i is (MSB first, as BitTorrent)."""

    count: int
    bits: bytes

    def __post_init__(self) -> None:
        if len(self.bits) != (self.count + 7) // 8:
            raise UsageError("bitfield length does not match the piece count")

    @classmethod
    def from_indices(cls, count: int, indices: list[int] | set[int]) -> Bitfield:
        buf = bytearray((count + 7) // 8)
        for i in indices:
            buf[i >> 3] |= 0x80 >> (i & 7)
        return cls(count, bytes(buf))

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.count:
            return False
        return bool(self.bits[index >> 3] & (0x80 >> (index & 7)))

    def have(self) -> int:
        return sum(bin(b).count("1") for b in self.bits)

    @property
    def complete(self) -> bool:
        return self.have() == self.count

    def ranges(self, present: bool = True) -> list[tuple[int, int]]:
        """Half-open index ranges [a, b) of pieces present (or, with ``present=False``, missing)."""
        out: list[tuple[int, int]] = []
        start = None
        for i in range(self.count):
            if (i in self) == present:
                if start is None:
                    start = i
            elif start is not None:
                out.append((start, i))
                start = None
        if start is not None:
            out.append((start, self.count))
        return out


@dataclass(frozen=True, slots=True)
class ImportResult:
    hash_name: bytes
    link: ShareLink
    manifest: Manifest
    pieces_written: int  # pieces read, hashed and written by this call
    pieces_reused: int  # pieces already stored by an interrupted earlier call


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: int  # new pieces written
    duplicates: int  # pieces we already had (ignored)
    complete: bool


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Verified bytes from ``start``: ``data`` runs from ``start`` up to the first missing piece.

    ``missing`` lists the half-open byte ranges of [start, end) that are not stored.
    """

    start: int
    data: bytes
    missing: tuple[tuple[int, int], ...]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True, slots=True)
class ShareInfo:
    hash_name: bytes | None  # None while importing
    name: str | None  # None for an encrypted share whose key we do not have
    mime: str | None
    size: int | None
    piece_count: int
    have_count: int
    state: DownloadState
    seeding: bool
    encrypted: bool
    origin: Origin


@dataclass(frozen=True, slots=True)
class DownloadInfo:
    state: DownloadState
    seeding: bool
    have: int
    total: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    shares: int
    complete: int
    pieces: int
    piece_bytes: int
    db_bytes: int
    free_bytes: int  # pages on the free list, reusable without growing the file
