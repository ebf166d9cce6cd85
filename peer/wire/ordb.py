"""The ORDB messages (DESIGN §6; layouts in docs/ordb-protocol.md): DB_* relay bodies.

Every message starts with a version byte (1); an unknown version raises UnknownVersion.
Integers are big-endian with fixed widths; hash_names are 32 raw bytes (SHA-256).
DB_INFO, DB_QUERY, DB_CONNECTED and DB_END are self-contained, one per relay cell;
DB_DATA cells carry raw slices of one framed delivery (see :class:`PieceFrame`).

Streams: only an OP opens a stream (it picks the stream id); the first DB_INFO, DB_QUERY or
DB_CONNECTED on a new stream id opens it at the ORDB.  A holder's announce stream carries
DB_INFO up and forwarded DB_QUERYs down; the holder answers each forwarded query on a new
stream of its own that starts with DB_CONNECTED carrying the query's transaction id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Self

from peer.errors import UnknownVersion, WireError
from peer.wire.buffer import Reader, Writer
from peer.wire.commands import RelayCommand
from peer.wire.relay import RELAY_DATA_MAX

VERSION = 1
HASH_LEN = 32
TXID_LEN = 16
MAX_COUNTER = 5  # an ORDB that would forward at 5 answers DB_END instead


class DbEndReason(enum.IntEnum):
    UNAVAILABLE = 0  # nobody can serve it
    FINISHED = 1  # the requester stops
    DESTROYED = 2  # the server stops
    RESET = 3  # another holder continues
    BAD_PIECE = 4  # the requester got a piece that failed verification
    LOOP = 5  # the forwarding counter reached its limit
    OVERLOAD = 6  # a quota was hit


class DeliveryKind(enum.IntEnum):
    MANIFEST = 0
    PIECES = 1


def _version(r: Reader, what: str) -> None:
    v = r.pull_u8()
    if v != VERSION:
        raise UnknownVersion(f"{what} version {v}")


def _hash(value: bytes) -> bytes:
    if len(value) != HASH_LEN:
        raise WireError("a hash_name is 32 bytes")
    return value


def _txid(value: bytes) -> bytes:
    if len(value) != TXID_LEN:
        raise WireError("a transaction id is 16 bytes")
    return value


@dataclass(frozen=True, slots=True)
class PieceRange:
    """Pieces ``start`` (inclusive) to ``end`` (exclusive)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end < 1 << 32:
            raise WireError(f"bad piece range {self.start}..{self.end}")


@dataclass(frozen=True, slots=True)
class InfoEntry:
    hash_name: bytes
    piece_count: int
    ranges: tuple[PieceRange, ...]


@dataclass(frozen=True, slots=True)
class DbInfo:
    """DB_INFO: ``version flags[1] n[1] {hash_name[32] piece_count[4] nr[1] {start[4] end[4]}*}*``.

    flags bit 0: the sender is a stable facilitator.
    """

    CMD: ClassVar[RelayCommand] = RelayCommand.DB_INFO
    entries: tuple[InfoEntry, ...]
    facilitator: bool = False

    def encode(self) -> bytes:
        w = Writer().push_u8(VERSION).push_u8(1 if self.facilitator else 0).push_u8(len(self.entries))
        for e in self.entries:
            w.push_bytes(_hash(e.hash_name)).push_u32(e.piece_count).push_u8(len(e.ranges))
            for rg in e.ranges:
                w.push_u32(rg.start).push_u32(rg.end)
        out = w.getvalue()
        if len(out) > RELAY_DATA_MAX:
            raise WireError("DB_INFO does not fit one relay cell: announce fewer hash_names")
        return out

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        _version(r, "DB_INFO")
        flags = r.pull_u8()
        entries = []
        for _ in range(r.pull_u8()):
            h = r.pull_bytes(HASH_LEN)
            count = r.pull_u32()
            ranges = tuple(PieceRange(r.pull_u32(), r.pull_u32()) for _ in range(r.pull_u8()))
            if any(rg.end > count for rg in ranges):
                raise WireError("DB_INFO range beyond the piece count")
            entries.append(InfoEntry(h, count, ranges))
        r.expect_end("DB_INFO")
        return cls(tuple(entries), bool(flags & 1))


@dataclass(frozen=True, slots=True)
class DbQuery:
    """DB_QUERY: ``version txid[16] hash_name[32] first[4] count[4] counter[1]``.

    ``first = count = 0`` asks for the manifest.  The requester sends a zero txid; the ORDB
    sets one when it passes the query to a holder.
    """

    CMD: ClassVar[RelayCommand] = RelayCommand.DB_QUERY
    hash_name: bytes
    first: int
    count: int
    counter: int
    txid: bytes = bytes(TXID_LEN)

    @property
    def wants_manifest(self) -> bool:
        return self.first == 0 and self.count == 0

    def encode(self) -> bytes:
        if not 0 <= self.counter <= MAX_COUNTER:
            raise WireError("DB_QUERY counter is 0..5")
        return (
            Writer()
            .push_u8(VERSION)
            .push_bytes(_txid(self.txid))
            .push_bytes(_hash(self.hash_name))
            .push_u32(self.first)
            .push_u32(self.count)
            .push_u8(self.counter)
            .getvalue()
        )

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        _version(r, "DB_QUERY")
        txid = r.pull_bytes(TXID_LEN)
        h = r.pull_bytes(HASH_LEN)
        first, count, counter = r.pull_u32(), r.pull_u32(), r.pull_u8()
        r.expect_end("DB_QUERY")
        if counter > MAX_COUNTER:
            raise WireError("DB_QUERY counter above 5")
        return cls(h, first, count, counter, txid)


@dataclass(frozen=True, slots=True)
class DbConnected:
    """DB_CONNECTED: ``version txid[16] kind[1] first[4] count[4] length[8]``.

    Starts a delivery of ``length`` bytes in DB_DATA cells: the manifest (kind 0) or the
    frames of pieces ``first .. first+count`` (kind 1).
    """

    CMD: ClassVar[RelayCommand] = RelayCommand.DB_CONNECTED
    txid: bytes
    kind: int
    first: int
    count: int
    length: int

    def encode(self) -> bytes:
        return (
            Writer()
            .push_u8(VERSION)
            .push_bytes(_txid(self.txid))
            .push_u8(self.kind)
            .push_u32(self.first)
            .push_u32(self.count)
            .push_u64(self.length)
            .getvalue()
        )

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        _version(r, "DB_CONNECTED")
        out = cls(r.pull_bytes(TXID_LEN), r.pull_u8(), r.pull_u32(), r.pull_u32(), r.pull_u64())
        r.expect_end("DB_CONNECTED")
        if out.kind not in (DeliveryKind.MANIFEST, DeliveryKind.PIECES):
            raise WireError(f"DB_CONNECTED of unknown kind {out.kind}")
        return out


@dataclass(frozen=True, slots=True)
class DbEnd:
    """DB_END: ``version reason[1] txid[16]`` (zero txid when none applies)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.DB_END
    reason: int
    txid: bytes = bytes(TXID_LEN)

    def encode(self) -> bytes:
        return Writer().push_u8(VERSION).push_u8(self.reason).push_bytes(_txid(self.txid)).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        _version(r, "DB_END")
        out = cls(r.pull_u8(), r.pull_bytes(TXID_LEN))
        r.expect_end("DB_END")
        return out


@dataclass(frozen=True, slots=True)
class PieceFrame:
    """One piece inside a delivery: ``version index[4] proof_len[2] proof piece_len[4] piece``.

    ``proof`` is the Merkle proof (or a live piece's signature block); the receiver verifies
    the piece against the manifest before it keeps it.
    """

    index: int
    proof: bytes
    piece: bytes

    def encode(self) -> bytes:
        return (
            Writer()
            .push_u8(VERSION)
            .push_u32(self.index)
            .push_var16(self.proof)
            .push_u32(len(self.piece))
            .push_bytes(self.piece)
            .getvalue()
        )


class FrameReader:
    """Reassembles :class:`PieceFrame`s from DB_DATA slices (sans-I/O, bounded)."""

    def __init__(self, max_piece: int) -> None:
        self._buf = bytearray()
        self._max = max_piece

    def feed(self, data: bytes) -> list[PieceFrame]:
        self._buf += data
        out: list[PieceFrame] = []
        while True:
            b = self._buf
            if len(b) < 7:
                break
            if b[0] != VERSION:
                raise UnknownVersion(f"piece frame version {b[0]}")
            plen = int.from_bytes(b[5:7], "big")
            head = 7 + plen + 4
            if len(b) < head:
                break
            size = int.from_bytes(b[7 + plen : head], "big")
            if size > self._max:
                raise WireError(f"piece of {size} bytes is larger than the manifest allows")
            if len(b) < head + size:
                break
            out.append(
                PieceFrame(
                    int.from_bytes(b[1:5], "big"), bytes(b[7 : 7 + plen]), bytes(b[head : head + size])
                )
            )
            del b[: head + size]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def slices(data: bytes) -> list[bytes]:
    """Split a delivery into DB_DATA payloads of at most 498 bytes."""
    return [data[i : i + RELAY_DATA_MAX] for i in range(0, len(data), RELAY_DATA_MAX)]
