"""Relay cells (tor-spec §6.1 "Relay cells") and relay message bodies (§5.1.2, §5.4, §6.2-6.3, §7.3).

Decrypted relay payload (509 bytes)::

    Command[1] Recognized[2] StreamID[2] Digest[4] Length[2] Data[Length] Padding[498-Length]

Padding: up to 4 zero bytes, then random bytes (tor-spec §6.1).  :func:`relay_payload`
builds a plaintext with Recognized = 0 and Digest = 0 for the crypto layer to fill in;
:func:`peek_header` reads the header without building objects (the hot path).

Message bodies (``Data[Length]``); decoders are strict unless noted:

- BEGIN (1) [§6.2]: ``ADDRPORT "\\0" [FLAGS[4]]``, ADDRPORT = ``host:port`` or ``[ipv6]:port``
  (ASCII, port 1-65535 in canonical decimal); FLAGS absent round-trips as ``flags=None``.
- DATA (2): bytes.  DROP (10): bytes (ignored by the receiver).
- END (3) [§6.3]: ``reason[1]``, and for EXITPOLICY optionally ``IPv4[4]`` or ``IPv6[16]``
  each optionally followed by ``TTL[4]``. An empty body is read as MISC, as tor does.
- CONNECTED (4) [§6.2]: empty, ``IPv4[4] [TTL[4]]`` (IPv4 not 0.0.0.0), or
  ``00000000 06 IPv6[16] TTL[4]``.
- SENDME (5) [§7.3.1]: empty (version 0) or ``VERSION[1] DATA_LEN[2] DATA``; v1 data is the
  20-byte digest; other versions keep their data opaque.
- EXTEND2 (14) [§5.1.2]: link specifiers (see :mod:`peer.wire.linkspec`), ``HTYPE[2] HLEN[2] HDATA``.
- EXTENDED2 (15): ``HLEN[2] HDATA``.  TRUNCATED (9) [§5.4]: ``reason[1]``.
- TRUNCATE (8), BEGIN_DIR (13): empty; any body is ignored, as tor does.

Anything else (including our DB_* block, whose bodies another module defines) decodes as
:class:`UnknownRelayMessage`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from peer.errors import WireError
from peer.wire.buffer import Reader, Writer, exact
from peer.wire.commands import EndReason, RelayCommand, build_registry
from peer.wire.linkspec import LinkSpec, encode_link_specs, pull_link_specs

__all__ = [
    "RELAY_DATA_MAX",
    "RELAY_HEADER_LEN",
    "RELAY_PAYLOAD_LEN",
    "SENDME_V1_DIGEST_LEN",
    "Begin",
    "BeginDir",
    "BeginFlags",
    "Connected",
    "Data",
    "Drop",
    "End",
    "Extend2",
    "Extended2",
    "RelayCell",
    "RelayMessage",
    "Sendme",
    "Truncate",
    "Truncated",
    "UnknownRelayMessage",
    "decode_relay_message",
    "peek_header",
    "relay_payload",
    "relay_payload_for",
]

RELAY_HEADER_LEN = 11  # Command[1] Recognized[2] StreamID[2] Digest[4] Length[2]
RELAY_PAYLOAD_LEN = 509  # PAYLOAD_LEN
RELAY_DATA_MAX = RELAY_PAYLOAD_LEN - RELAY_HEADER_LEN  # 498
SENDME_V1_DIGEST_LEN = 20  # tor-spec §7.3.1
_ZERO_PAD = 4  # tor-spec §6.1: padding starts with up to 4 zero bytes

_HEADER = struct.Struct(">BHH4sH")


class BeginFlags(enum.IntFlag):
    """BEGIN flags (tor-spec §6.2; bit 1 is the least significant)."""

    IPV6_OK = 1
    IPV4_NOT_OK = 2
    IPV6_PREFERRED = 4


# --------------------------------------------------------------------------- the relay cell


@dataclass(frozen=True, slots=True)
class RelayCell:
    """A decrypted relay payload split into its fields."""

    command: int
    recognized: int
    stream_id: int
    digest: bytes
    data: bytes
    padding: bytes

    def encode(self) -> bytes:
        """Exactly 509 bytes."""
        n = len(self.data)
        if n > RELAY_DATA_MAX:
            raise WireError(f"relay data of {n} bytes exceeds {RELAY_DATA_MAX}")
        if n + len(self.padding) != RELAY_DATA_MAX:
            raise WireError(f"relay data + padding must be {RELAY_DATA_MAX} bytes")
        if len(self.digest) != 4:
            raise WireError("relay digest is 4 bytes")
        return _pack_header(self.command, self.recognized, self.stream_id, self.digest, n) + (
            self.data + self.padding
        )

    @classmethod
    def decode(cls, payload: bytes) -> RelayCell:
        command, recognized, stream_id, digest, length = peek_header(payload)
        end = RELAY_HEADER_LEN + length
        return cls(command, recognized, stream_id, digest, payload[RELAY_HEADER_LEN:end], payload[end:])

    def message(self) -> RelayMessage:
        """The typed body (see :func:`decode_relay_message`)."""
        return decode_relay_message(self.command, self.data)


def _pack_header(command: int, recognized: int, stream_id: int, digest: bytes, length: int) -> bytes:
    if not 0 <= command <= 0xFF:
        raise WireError(f"relay command {command} does not fit in 1 byte")
    if not 0 <= recognized <= 0xFFFF or not 0 <= stream_id <= 0xFFFF:
        raise WireError("recognized and stream id are 2-byte fields")
    return _HEADER.pack(command, recognized, stream_id, digest, length)


def peek_header(payload: bytes) -> tuple[int, int, int, bytes, int]:
    """``(command, recognized, stream_id, digest4, length)`` of a 509-byte plaintext payload.

    Raises WireError if the payload is not 509 bytes or Length exceeds 498.
    """
    if len(payload) != RELAY_PAYLOAD_LEN:
        raise WireError(f"relay payload is {RELAY_PAYLOAD_LEN} bytes, got {len(payload)}")
    command, recognized, stream_id, digest, length = _HEADER.unpack_from(payload)
    if length > RELAY_DATA_MAX:
        raise WireError(f"relay Length {length} exceeds {RELAY_DATA_MAX}")
    return command, recognized, stream_id, digest, length


def relay_payload(command: int, stream_id: int, data: bytes, randbytes: Callable[[int], bytes]) -> bytes:
    """A 509-byte plaintext: Recognized = 0, Digest = 0, padding = up to 4 NULs then random."""
    n = len(data)
    if n > RELAY_DATA_MAX:
        raise WireError(f"relay data of {n} bytes exceeds {RELAY_DATA_MAX}")
    header = _pack_header(command, 0, stream_id, b"\0\0\0\0", n)
    pad = RELAY_DATA_MAX - n
    if pad <= _ZERO_PAD:
        return header + data + bytes(pad)
    return header + data + bytes(_ZERO_PAD) + randbytes(pad - _ZERO_PAD)


# --------------------------------------------------------------------------- message bodies


def _host_ok(host: str) -> bool:
    """Printable ASCII without brackets (the brackets belong to the ADDRPORT syntax)."""
    return bool(host) and all(0x21 <= ord(c) <= 0x7E and c not in "[]" for c in host)


def _parse_port(text: str) -> int:
    if not (1 <= len(text) <= 5 and text.isascii() and text.isdigit() and text[0] != "0"):
        raise WireError("BEGIN port is not a canonical decimal number")
    port = int(text)
    if port > 0xFFFF:
        raise WireError(f"BEGIN port {port} is out of range")
    return port


@dataclass(frozen=True, slots=True)
class Begin:
    """BEGIN (1): open a stream to ``address:port``; IPv6 literals are given without brackets."""

    CMD: ClassVar[RelayCommand] = RelayCommand.BEGIN
    address: str
    port: int
    flags: int | None = None

    def encode(self) -> bytes:
        if not _host_ok(self.address):
            raise WireError("BEGIN address must be printable ASCII without brackets")
        if not 1 <= self.port <= 0xFFFF:
            raise WireError(f"BEGIN port {self.port} is out of range")
        host = f"[{self.address}]" if ":" in self.address else self.address
        out = f"{host}:{self.port}".encode("ascii") + b"\0"
        if self.flags is not None:
            if not 0 <= self.flags <= 0xFFFFFFFF:
                raise WireError("BEGIN flags are 4 bytes")
            out += self.flags.to_bytes(4, "big")
        return out

    @classmethod
    def decode(cls, body: bytes) -> Self:
        nul = body.find(b"\0")
        if nul < 0:
            raise WireError("BEGIN address is not NUL-terminated")
        raw, rest = body[:nul], body[nul + 1 :]
        if len(rest) not in (0, 4):
            raise WireError(f"BEGIN has {len(rest)} bytes after the address; flags are 4")
        if not raw.isascii():
            raise WireError("BEGIN address is not ASCII")
        target = raw.decode("ascii")
        if target.startswith("["):
            close = target.find("]")
            host, tail = target[1:close], target[close + 1 :]
            if close < 0 or ":" not in host or not tail.startswith(":"):
                raise WireError("BEGIN address has a malformed [IPv6]:port")
            port_text = tail[1:]
        else:
            host, sep, port_text = target.rpartition(":")
            if not sep:
                raise WireError("BEGIN address has no port")
            if ":" in host:
                raise WireError("BEGIN IPv6 address must be in brackets")
        if not _host_ok(host):
            raise WireError("BEGIN address must be printable ASCII without brackets")
        port = _parse_port(port_text)
        flags = int.from_bytes(rest, "big") if rest else None
        return cls(host, port, flags)


@dataclass(frozen=True, slots=True)
class BeginDir:
    """BEGIN_DIR (13): open a directory stream to this hop; empty body (any body is ignored)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.BEGIN_DIR

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Data:
    """DATA (2): stream bytes (at most 498 per cell)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.DATA
    data: bytes

    def encode(self) -> bytes:
        if len(self.data) > RELAY_DATA_MAX:
            raise WireError(f"DATA of {len(self.data)} bytes exceeds {RELAY_DATA_MAX}")
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls(bytes(body))


@dataclass(frozen=True, slots=True)
class End:
    """END (3): close a stream; EXITPOLICY may carry the refused address and a TTL."""

    CMD: ClassVar[RelayCommand] = RelayCommand.END
    reason: int
    address: bytes | None = None
    ttl: int | None = None

    def encode(self) -> bytes:
        w = Writer().push_u8(self.reason)
        if self.address is None:
            if self.ttl is not None:
                raise WireError("END TTL needs an address")
            return w.getvalue()
        if self.reason != EndReason.EXITPOLICY:
            raise WireError("only an EXITPOLICY END carries an address")
        if len(self.address) not in (4, 16):
            raise WireError("END address is IPv4[4] or IPv6[16]")
        w.push_bytes(self.address)
        if self.ttl is not None:
            w.push_u32(self.ttl)
        return w.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if not body:
            return cls(int(EndReason.MISC))  # tor reads an empty END as MISC
        reason, rest = body[0], body[1:]
        if not rest:
            return cls(reason)
        if reason != EndReason.EXITPOLICY:
            raise WireError(f"END with reason {reason} has {len(rest)} extra bytes")
        if len(rest) in (4, 16):
            return cls(reason, bytes(rest))
        if len(rest) in (8, 20):
            return cls(reason, bytes(rest[:-4]), int.from_bytes(rest[-4:], "big"))
        raise WireError(f"END EXITPOLICY address part has length {len(rest)}")


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNECTED (4): the stream is open; optionally the address connected to and a TTL."""

    CMD: ClassVar[RelayCommand] = RelayCommand.CONNECTED
    address: bytes | None = None
    ttl: int | None = None

    def encode(self) -> bytes:
        if self.address is None:
            if self.ttl is not None:
                raise WireError("CONNECTED TTL needs an address")
            return b""
        w = Writer()
        if len(self.address) == 4:
            if self.address == bytes(4):
                raise WireError("CONNECTED IPv4 address 0.0.0.0 cannot be encoded")
            w.push_bytes(self.address)
            if self.ttl is not None:
                w.push_u32(self.ttl)
            return w.getvalue()
        if len(self.address) != 16 or self.ttl is None:
            raise WireError("CONNECTED address is IPv4[4] or IPv6[16] with a TTL")
        return w.push_bytes(bytes(4)).push_u8(6).push_bytes(self.address).push_u32(self.ttl).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if not body:
            return cls()
        r = Reader(body)
        first = r.pull_bytes(4)
        if first != bytes(4):
            ttl = r.pull_u32() if r.remaining else None
            r.expect_end("CONNECTED")
            return cls(first, ttl)
        if r.pull_u8() != 6:
            raise WireError("CONNECTED has an unknown address type")
        address = r.pull_bytes(16)
        ttl = r.pull_u32()
        r.expect_end("CONNECTED")
        return cls(address, ttl)


@dataclass(frozen=True, slots=True)
class Sendme:
    """SENDME (5): version 0 = empty body; version 1 carries the 20-byte digest (tor-spec §7.3.1)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.SENDME
    version: int = 0
    digest: bytes = b""

    @classmethod
    def v1(cls, digest: bytes) -> Sendme:
        return cls(1, digest)

    def encode(self) -> bytes:
        if self.version == 0 and not self.digest:
            return b""
        if self.version == 1:
            exact(self.digest, SENDME_V1_DIGEST_LEN, "SENDME v1 digest")
        return Writer().push_u8(self.version).push_var16(self.digest).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if not body:
            return cls()
        r = Reader(body)
        version = r.pull_u8()
        data = r.pull_var16()
        r.expect_end("SENDME")
        if version == 1 and len(data) != SENDME_V1_DIGEST_LEN:
            raise WireError(f"SENDME v1 digest is {SENDME_V1_DIGEST_LEN} bytes, got {len(data)}")
        return cls(version, data)


@dataclass(frozen=True, slots=True)
class Extend2:
    """EXTEND2 (14): extend the circuit to the hop named by ``link_specs`` (tor-spec §5.1.2)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.EXTEND2
    link_specs: tuple[LinkSpec, ...]
    htype: int
    hdata: bytes

    def encode(self) -> bytes:
        w = Writer().push_bytes(encode_link_specs(self.link_specs))
        return w.push_u16(self.htype).push_var16(self.hdata).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        specs = pull_link_specs(r)
        htype = r.pull_u16()
        hdata = r.pull_var16()
        r.expect_end("EXTEND2")
        return cls(specs, htype, hdata)


@dataclass(frozen=True, slots=True)
class Extended2:
    """EXTENDED2 (15): the CREATED2 body of the new hop, ``HLEN[2] HDATA``."""

    CMD: ClassVar[RelayCommand] = RelayCommand.EXTENDED2
    hdata: bytes

    def encode(self) -> bytes:
        return Writer().push_var16(self.hdata).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        hdata = r.pull_var16()
        r.expect_end("EXTENDED2")
        return cls(hdata)


@dataclass(frozen=True, slots=True)
class Truncate:
    """TRUNCATE (8): ask this hop to drop the rest of the circuit; empty (any body is ignored)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.TRUNCATE

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Truncated:
    """TRUNCATED (9): ``reason[1]`` (a DestroyReason)."""

    CMD: ClassVar[RelayCommand] = RelayCommand.TRUNCATED
    reason: int

    def encode(self) -> bytes:
        return Writer().push_u8(self.reason).getvalue()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body)
        reason = r.pull_u8()
        r.expect_end("TRUNCATED")
        return cls(reason)


@dataclass(frozen=True, slots=True)
class Drop:
    """DROP (10): long-range padding; the receiver ignores it."""

    CMD: ClassVar[RelayCommand] = RelayCommand.DROP
    data: bytes = b""

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls(bytes(body))


@dataclass(frozen=True, slots=True)
class UnknownRelayMessage:
    """A relay message we do not decode here; tor drops it (still counted in digests and windows)."""

    command: int
    body: bytes

    def encode(self) -> bytes:
        return self.body


# --------------------------------------------------------------------------- dispatch

RelayMessage = (
    Begin
    | BeginDir
    | Data
    | End
    | Connected
    | Sendme
    | Extend2
    | Extended2
    | Truncate
    | Truncated
    | Drop
    | UnknownRelayMessage
)


class _RelayCodec(Protocol):
    CMD: ClassVar[RelayCommand]

    @classmethod
    def decode(cls, body: bytes) -> RelayMessage: ...


MESSAGE_CLASSES: tuple[type[_RelayCodec], ...] = (
    Begin,
    BeginDir,
    Data,
    End,
    Connected,
    Sendme,
    Extend2,
    Extended2,
    Truncate,
    Truncated,
    Drop,
)

_DECODERS: Mapping[int, Callable[[bytes], RelayMessage]] = build_registry(
    ((cls.CMD, cls.decode) for cls in MESSAGE_CLASSES), "relay command"
)


def decode_relay_message(command: int, body: bytes) -> RelayMessage:
    """The typed message for ``command``; an unknown command gives :class:`UnknownRelayMessage`."""
    decode = _DECODERS.get(command)
    if decode is None:
        return UnknownRelayMessage(command, bytes(body))
    return decode(body)


def relay_payload_for(msg: RelayMessage, stream_id: int, randbytes: Callable[[int], bytes]) -> bytes:
    """:func:`relay_payload` for a typed message."""
    command = msg.command if isinstance(msg, UnknownRelayMessage) else int(msg.CMD)
    return relay_payload(command, stream_id, msg.encode(), randbytes)
