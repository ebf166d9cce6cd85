"""Live-stream pieces (DESIGN §7; docs/formats.md §5).

A live stream is named hash_name = SHA-256(``peersm/live/v1`` || publisher key ||
stream name).  Each piece carries a full Ed25519 signature by the publisher key,
context ``peersm/live-piece/v1``, over

    hash_name(32) || u64 index || u64 timestamp_ms || SHA-256(payload)

:class:`LiveWindow` verifies arriving pieces and keeps only a window of the most
recent ones (DESIGN: 4x the fetch window), dropping older pieces.  Sans-I/O: the
current time is passed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from peer.crypto.identity import ED25519_SIG_LEN, SigningKey, verify
from peer.errors import CryptoError, UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer
from storage.errors import LivePieceError, LiveVerifyError
from storage.manifest import live_hash_name

LIVE_PIECE_VERSION = 1
LIVE_PIECE_CONTEXT = "peersm/live-piece/v1"
MAX_LIVE_PAYLOAD = 1 << 20
MAX_CLOCK_SKEW_MS = 60_000


def _signed_part(hash_name: bytes, index: int, timestamp_ms: int, payload: bytes) -> bytes:
    return (
        hash_name
        + index.to_bytes(8, "big")
        + timestamp_ms.to_bytes(8, "big")
        + hashlib.sha256(payload).digest()
    )


@dataclass(frozen=True, slots=True)
class LivePiece:
    """One signed piece of a live stream."""

    hash_name: bytes
    index: int
    timestamp_ms: int
    payload: bytes
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.hash_name) != 32 or len(self.signature) != ED25519_SIG_LEN:
            raise LivePieceError("live piece: bad hash_name or signature length")
        if not (0 <= self.index < 1 << 64 and 0 <= self.timestamp_ms < 1 << 64):
            raise LivePieceError("live piece: index or timestamp out of range")
        if len(self.payload) > MAX_LIVE_PAYLOAD:
            raise LivePieceError("live piece: payload too large")

    @classmethod
    def sign(
        cls, key: SigningKey, stream_name: str, index: int, timestamp_ms: int, payload: bytes
    ) -> LivePiece:
        hash_name = live_hash_name(key.public, stream_name)
        sig = key.sign(LIVE_PIECE_CONTEXT, _signed_part(hash_name, index, timestamp_ms, payload))
        return cls(hash_name, index, timestamp_ms, payload, sig)

    def verify(self, publisher: bytes, hash_name: bytes | None = None) -> None:
        """Raise LiveVerifyError unless signed by ``publisher`` (and, if given, for ``hash_name``)."""
        if hash_name is not None and self.hash_name != hash_name:
            raise LiveVerifyError("live piece belongs to another stream")
        try:
            verify(
                publisher,
                LIVE_PIECE_CONTEXT,
                _signed_part(self.hash_name, self.index, self.timestamp_ms, self.payload),
                self.signature,
            )
        except CryptoError as exc:
            raise LiveVerifyError(f"live piece {self.index}: bad signature") from exc

    def encode(self) -> bytes:
        w = Writer().push_u8(LIVE_PIECE_VERSION).push_bytes(self.hash_name)
        w.push_u64(self.index).push_u64(self.timestamp_ms).push_u32(len(self.payload)).push_bytes(
            self.payload
        )
        return w.push_bytes(self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> LivePiece:
        r = Reader(data)
        try:
            version = r.pull_u8()
        except WireError as exc:
            raise LivePieceError("empty live piece") from exc
        if version != LIVE_PIECE_VERSION:
            raise UnknownVersion(f"live piece version {version} is unknown")
        try:
            hash_name, index, ts = r.pull_bytes(32), r.pull_u64(), r.pull_u64()
            n = r.pull_u32()
            if n > MAX_LIVE_PAYLOAD:
                raise LivePieceError("live piece: payload too large")
            payload = r.pull_bytes(n)
            sig = r.pull_bytes(ED25519_SIG_LEN)
            r.expect_end("live piece")
        except LivePieceError:
            raise
        except WireError as exc:
            raise LivePieceError(f"live piece: {exc}") from exc
        return cls(hash_name, index, ts, payload, sig)


class LiveWindow:
    """The verified recent pieces of one stream; older than ``capacity`` behind the newest are dropped."""

    __slots__ = ("_capacity", "_hash_name", "_newest", "_pieces", "_publisher")

    def __init__(self, publisher: bytes, stream_name: str, capacity: int) -> None:
        if capacity < 1:
            raise UsageError("a live window holds at least one piece")
        self._publisher = publisher
        self._hash_name = live_hash_name(publisher, stream_name)
        self._capacity = capacity
        self._pieces: dict[int, LivePiece] = {}
        self._newest = -1

    @property
    def hash_name(self) -> bytes:
        return self._hash_name

    @property
    def newest(self) -> int | None:
        return self._newest if self._newest >= 0 else None

    def oldest_kept(self) -> int:
        return max(0, self._newest - self._capacity + 1)

    def add(self, piece: LivePiece | bytes, now: float) -> LivePiece:
        """Verify and keep a piece; LiveVerifyError if forged, foreign, from the future or too old."""
        p = piece if isinstance(piece, LivePiece) else LivePiece.decode(piece)
        p.verify(self._publisher, self._hash_name)
        if p.timestamp_ms > int(now * 1000) + MAX_CLOCK_SKEW_MS:
            raise LiveVerifyError(f"live piece {p.index} is dated in the future")
        if self._newest >= 0 and p.index < self.oldest_kept():
            raise LiveVerifyError(f"live piece {p.index} is older than the window")
        self._pieces[p.index] = p
        if p.index > self._newest:
            self._newest = p.index
            low = self.oldest_kept()
            for i in [i for i in self._pieces if i < low]:
                del self._pieces[i]
        return p

    def get(self, index: int) -> LivePiece | None:
        return self._pieces.get(index)

    def indices(self) -> list[int]:
        return sorted(self._pieces)

    def __len__(self) -> int:
        return len(self._pieces)
