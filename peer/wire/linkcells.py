"""Private link-level cells: bridges and introducers (DESIGN §4 "Link-level messages", docs/bridge.md).

They are variable-length cells (commands 200-208, circuit id 0) sent on a peer link, or
one per binary WebSocket message to a bridge.  Every body starts with ``VERSION[1]`` = 1;
an unknown version is :class:`~peer.errors.UnknownVersion`.  Integers are big-endian.

- DB_FIND_PEER (200): ``VERSION[1] TARGET[20]``
- DB_FOUND_PEER (201): ``VERSION[1] COUNT[1]`` then COUNT x ``LEN[2] RECORD`` (opaque signed records)
- DB_INTRODUCE (202): ``VERSION[1] TARGET[20] LEN[2] BLOB``
- DB_INTRODUCED (203): ``VERSION[1] SOURCE[20] LEN[2] BLOB`` (an empty BLOB from a bridge: "not reachable")
- DB_HELLO (204, bridge -> peer): ``VERSION[1] NONCE[32]``
- DB_REGISTER (205, peer -> bridge): ``VERSION[1] LEN[2] RECORD SIGNATURE[64]``
- DB_REGISTERED (206, bridge -> peer): ``VERSION[1] STATUS[1] LEN[1] REASON`` (printable ASCII)
- DB_LINK_CLOSING (207, peer -> peer): ``VERSION[1] CODE[1] LEN[1] REASON`` (printable ASCII): why
  the sender is about to close the link (it is full, it stops, it rotates the link), so the other
  side knows when to ask again
- DB_LINK_KEEP (208, peer -> neighbour): ``VERSION[1] FLAGS[1]``; flag 1: "you are one of my
  guards": the receiver does not drop this link to rotate or to make room (other flags: 0)

The DB_REGISTER signature is Ed25519 by the record's identity key, context
``peersm/bridge-register/v1``, over :func:`register_message` = ``NONCE || URL || RECORD``:
it binds the registration to one bridge connection (the nonce) and one bridge (its URL).

Blobs are opaque here (sealed offers and answers, :mod:`peer.crypto.seal`); records are
opaque here (signed peer records, validated by the runtime).  Decoders raise
:class:`~peer.errors.WireError` (or a subclass) on malformed input and nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Self

from peer.errors import UnknownVersion, WireError
from peer.wire.buffer import Reader, Writer, exact
from peer.wire.commands import CellCommand

__all__ = [
    "LINK_MESSAGE_CLASSES",
    "MAX_BLOB_LEN",
    "NONCE_LEN",
    "PRIVATE_CELL_VERSION",
    "REGISTER_CONTEXT",
    "FindPeer",
    "FoundPeer",
    "Hello",
    "Introduce",
    "Introduced",
    "LinkCellMessage",
    "LinkCloseCode",
    "LinkClosing",
    "LinkKeep",
    "Register",
    "RegisterStatus",
    "Registered",
    "register_message",
]

PRIVATE_CELL_VERSION = 1  # version byte of our private link cells (DESIGN §3)
NODE_ID_LEN = 20  # DESIGN §3
NONCE_LEN = 32
SIGNATURE_LEN = 64  # Ed25519
#: Policy limit on a relayed blob (bridges and introducers), well below the codec's 64 KiB.
MAX_BLOB_LEN = 16 * 1024
REGISTER_CONTEXT = "peersm/bridge-register/v1"


class RegisterStatus(enum.IntEnum):
    """DB_REGISTERED status codes; a decoder keeps unknown codes as plain ``int``."""

    OK = 0
    BAD_RECORD = 1  # not a canonical, signed, unexpired peer record
    BAD_SIGNATURE = 2  # the registration proof does not verify (wrong key, nonce or URL)
    FULL = 3  # the bridge's registry is at its cap
    PROTOCOL = 4  # the connection broke the protocol; the bridge closes it
    RATE_LIMITED = 5  # too many requests; the bridge closes the connection
    REPLACED = 6  # the same NodeID registered on a newer connection
    SHUTDOWN = 7  # the bridge is stopping


def register_message(nonce: bytes, url: str, record: bytes) -> bytes:
    """What DB_REGISTER signs: ``NONCE[32] || URL (ASCII) || RECORD``."""
    return exact(nonce, NONCE_LEN, "bridge nonce") + url.encode("ascii") + record


def _check_version(version: int, what: str) -> None:
    if version != PRIVATE_CELL_VERSION:
        raise UnknownVersion(f"{what}: unknown version {version}")


def _pull_version(r: Reader, what: str) -> int:
    version = r.pull_u8()
    _check_version(version, what)
    return version


def _check_reason(reason: bytes) -> str:
    if any(not 0x20 <= c <= 0x7E for c in reason):
        raise WireError("a reason is not printable ASCII")
    return reason.decode("ascii")


def _encode_code_reason(version: int, what: str, code: int, reason: str) -> bytes:
    """``VERSION[1] CODE[1] LEN[1] REASON`` (printable ASCII): DB_REGISTERED and DB_LINK_CLOSING."""
    _check_version(version, what)
    if not 0 <= code <= 0xFF:
        raise WireError(f"{what} code {code} does not fit in 1 byte")
    try:
        raw = reason.encode("ascii")
    except UnicodeEncodeError as exc:
        raise WireError(f"{what} reason is not ASCII") from exc
    _check_reason(raw)
    return Writer().push_u8(version).push_u8(code).push_var8(raw).getvalue()


def _decode_code_reason(payload: bytes, what: str) -> tuple[int, int, str]:
    """(version, code, reason) of a ``VERSION[1] CODE[1] LEN[1] REASON`` body."""
    r = Reader(payload)
    version = _pull_version(r, what)
    code = r.pull_u8()
    reason = _check_reason(r.pull_var8())
    r.expect_end(what)
    return version, code, reason


@dataclass(frozen=True, slots=True)
class FindPeer:
    """DB_FIND_PEER (200): ask a bridge or neighbour for peers close to ``target`` (a NodeID)."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_FIND_PEER
    target: bytes
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_FIND_PEER")
        return bytes((self.version,)) + exact(self.target, NODE_ID_LEN, "DB_FIND_PEER target")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_FIND_PEER")
        target = r.pull_bytes(NODE_ID_LEN)
        r.expect_end("DB_FIND_PEER")
        return cls(target, version=version)


@dataclass(frozen=True, slots=True)
class FoundPeer:
    """DB_FOUND_PEER (201): up to 255 opaque peer records (signed, checked by the caller)."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_FOUND_PEER
    records: tuple[bytes, ...]
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_FOUND_PEER")
        if len(self.records) > 0xFF:
            raise WireError(f"{len(self.records)} records do not fit a 1-byte count")
        w = Writer().push_u8(self.version).push_u8(len(self.records))
        for record in self.records:
            w.push_var16(record)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_FOUND_PEER")
        records = tuple(r.pull_var16() for _ in range(r.pull_u8()))
        r.expect_end("DB_FOUND_PEER")
        return cls(records, version=version)


@dataclass(frozen=True, slots=True)
class Introduce:
    """DB_INTRODUCE (202): relay ``blob`` (a sealed, signed offer/answer) to the peer ``target``."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_INTRODUCE
    target: bytes
    blob: bytes
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_INTRODUCE")
        w = Writer().push_u8(self.version).push_bytes(exact(self.target, NODE_ID_LEN, "DB_INTRODUCE target"))
        return w.push_var16(self.blob).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_INTRODUCE")
        target = r.pull_bytes(NODE_ID_LEN)
        blob = r.pull_var16()
        r.expect_end("DB_INTRODUCE")
        return cls(target, blob, version=version)


@dataclass(frozen=True, slots=True)
class Introduced:
    """DB_INTRODUCED (203): ``blob`` relayed to us from the peer ``source``."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_INTRODUCED
    source: bytes
    blob: bytes
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_INTRODUCED")
        w = Writer().push_u8(self.version).push_bytes(exact(self.source, NODE_ID_LEN, "DB_INTRODUCED source"))
        return w.push_var16(self.blob).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_INTRODUCED")
        source = r.pull_bytes(NODE_ID_LEN)
        blob = r.pull_var16()
        r.expect_end("DB_INTRODUCED")
        return cls(source, blob, version=version)


@dataclass(frozen=True, slots=True)
class Hello:
    """DB_HELLO (204): the bridge's greeting, a fresh nonce the registration must sign."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_HELLO
    nonce: bytes
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_HELLO")
        return bytes((self.version,)) + exact(self.nonce, NONCE_LEN, "DB_HELLO nonce")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_HELLO")
        nonce = r.pull_bytes(NONCE_LEN)
        r.expect_end("DB_HELLO")
        return cls(nonce, version=version)


@dataclass(frozen=True, slots=True)
class Register:
    """DB_REGISTER (205): our signed peer record and the proof that we hold its identity key."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_REGISTER
    record: bytes
    signature: bytes
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_REGISTER")
        w = Writer().push_u8(self.version).push_var16(self.record)
        return w.push_bytes(exact(self.signature, SIGNATURE_LEN, "DB_REGISTER signature")).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_REGISTER")
        record = r.pull_var16()
        signature = r.pull_bytes(SIGNATURE_LEN)
        r.expect_end("DB_REGISTER")
        return cls(record, signature, version=version)


@dataclass(frozen=True, slots=True)
class Registered:
    """DB_REGISTERED (206): the answer to DB_REGISTER, or the bridge's notice before it closes.

    ``status`` is 0 (OK) or a :class:`RegisterStatus` (unknown codes are kept as ``int``);
    ``reason`` is a short printable ASCII text for humans.
    """

    CMD: ClassVar[CellCommand] = CellCommand.DB_REGISTERED
    status: int
    reason: str = ""
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    @property
    def ok(self) -> bool:
        return self.status == RegisterStatus.OK

    def encode_payload(self) -> bytes:
        return _encode_code_reason(self.version, "DB_REGISTERED", self.status, self.reason)

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        version, status, reason = _decode_code_reason(payload, "DB_REGISTERED")
        return cls(status, reason, version=version)


class LinkCloseCode(enum.IntEnum):
    """DB_LINK_CLOSING codes; a decoder keeps unknown codes as plain ``int``."""

    FULL = 1  # the sender holds its maximum of links: ask again later
    SHUTDOWN = 2  # the sender is stopping
    ROTATED = 3  # the sender replaces this link by another (slow rotation)


@dataclass(frozen=True, slots=True)
class LinkClosing:
    """DB_LINK_CLOSING (207): the sender closes the link next, and says why."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_LINK_CLOSING
    code: int
    reason: str = ""
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        return _encode_code_reason(self.version, "DB_LINK_CLOSING", self.code, self.reason)

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        version, code, reason = _decode_code_reason(payload, "DB_LINK_CLOSING")
        return cls(code, reason, version=version)


@dataclass(frozen=True, slots=True)
class LinkKeep:
    """DB_LINK_KEEP (208): the sender asks the receiver to keep this link (flag 1: a guard link)."""

    CMD: ClassVar[CellCommand] = CellCommand.DB_LINK_KEEP
    GUARD: ClassVar[int] = 1
    flags: int = 1
    version: int = field(default=PRIVATE_CELL_VERSION, kw_only=True)

    def encode_payload(self) -> bytes:
        _check_version(self.version, "DB_LINK_KEEP")
        if not 0 <= self.flags <= 0xFF:
            raise WireError(f"DB_LINK_KEEP flags {self.flags} do not fit in 1 byte")
        return bytes((self.version, self.flags))

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        version = _pull_version(r, "DB_LINK_KEEP")
        flags = r.pull_u8()
        r.expect_end("DB_LINK_KEEP")
        return cls(flags, version=version)


LinkCellMessage = (
    FindPeer | FoundPeer | Introduce | Introduced | Hello | Register | Registered | LinkClosing | LinkKeep
)

#: The private link cells, for the cell registry in :mod:`peer.wire.cells`.
LINK_MESSAGE_CLASSES = (
    FindPeer,
    FoundPeer,
    Introduce,
    Introduced,
    Hello,
    Register,
    Registered,
    LinkClosing,
    LinkKeep,
)
