"""Cells (tor-spec §3 "Cell Packet format", link protocol v4/v5) and typed cell messages.

Framing::

    fixed cell     CircID[4] Command[1] Payload[509]            (514 bytes)
    variable cell  CircID[4] Command[1] Length[2] Payload[Length]   (command 7 or >= 128)

Link protocol v3 and the first VERSIONS cell use a 2-byte CircID (``circid_len=2``).

:class:`Cell` is the framed unit; the typed messages below are its payloads:
``encode_payload()`` gives the body (unpadded), ``decode_payload(payload)`` parses it.
For fixed cells the payload is 509 bytes and whatever follows the body (NUL padding) is
ignored, so ``encode(decode(b)) == b`` holds on canonical bytes (body + NULs). Variable
cells must be consumed exactly.

Bodies (tor-spec section in brackets):

- PADDING [§3]: ignored. VPADDING [§3]: any bytes.
- VERSIONS [§4.1]: ``u16`` list.  CERTS [§4.2]: ``N[1]`` then ``CertType[1] CLEN[2] Cert``.
- AUTH_CHALLENGE [§4.3]: ``Challenge[32] N_Methods[2] Methods[2*N]``.
- AUTHENTICATE [§4.4]: ``AuthType[2] AuthLen[2] Authentication``.  AUTHORIZE: opaque.
- NETINFO [§4.5]: ``TIME[4] OTHERADDR NMYADDR[1] MYADDR*``, address = ``ATYPE[1] ALEN[1] AVAL``.
- CREATE2 [§5.1]: ``HTYPE[2] HLEN[2] HDATA``; CREATED2: ``HLEN[2] HDATA``.
- CREATE_FAST / CREATED_FAST [§5.1.5]: ``X[20]`` / ``Y[20] KH[20]``.  DESTROY [§5.4]: ``reason[1]``.
- PADDING_NEGOTIATE [padding-spec §2.2]: ``version[1] command[1] ito_low_ms[2] ito_high_ms[2]``.
- RELAY / RELAY_EARLY [§6.1]: 509 opaque (encrypted) bytes.

Private link-level cells (DESIGN §4: DB_FIND_PEER ... DB_REGISTERED, commands 200-206) live in
:mod:`peer.wire.linkcells`; they are re-exported here and decoded by :func:`decode_message`.

Every decoder raises :class:`~peer.errors.WireError` (or a subclass) on malformed input
and nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from peer.errors import WireError
from peer.wire.buffer import Reader, Writer, exact
from peer.wire.commands import CellCommand, build_registry, is_variable
from peer.wire.linkcells import (
    LINK_MESSAGE_CLASSES,
    PRIVATE_CELL_VERSION,
    FindPeer,
    FoundPeer,
    Hello,
    Introduce,
    Introduced,
    LinkClosing,
    LinkKeep,
    Register,
    Registered,
)

__all__ = [
    "CELL_LEN",
    "CIRCID_LEN",
    "MAX_VAR_PAYLOAD",
    "PAYLOAD_LEN",
    "PRIVATE_CELL_VERSION",
    "VERSIONS_CIRCID_LEN",
    "AuthChallenge",
    "Authenticate",
    "Authorize",
    "Cell",
    "CellMessage",
    "CertEntry",
    "Certs",
    "Create2",
    "CreateFast",
    "Created2",
    "CreatedFast",
    "Destroy",
    "FindPeer",
    "FoundPeer",
    "Hello",
    "Introduce",
    "Introduced",
    "LinkClosing",
    "LinkKeep",
    "NetAddress",
    "Netinfo",
    "Padding",
    "PaddingNegotiate",
    "Register",
    "Registered",
    "Relay",
    "RelayEarly",
    "UnknownCellMessage",
    "VPadding",
    "Versions",
    "decode_message",
    "encode_message",
    "encode_versions_cell",
    "pull_cell",
    "pull_cells",
]

CELL_LEN = 514  # tor-spec §0.2: CELL_LEN(v) = 514 for link protocol v >= 4
PAYLOAD_LEN = 509  # tor-spec §0.2
CIRCID_LEN = 4  # tor-spec §3, link protocol v >= 4
VERSIONS_CIRCID_LEN = 2  # tor-spec §4.1: VERSIONS always uses a 2-byte CircID
MAX_VAR_PAYLOAD = 0xFFFF  # Length[2]


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Cell:
    """One framed cell. Fixed cells read from the wire keep their full 509-byte payload."""

    circ_id: int
    command: int
    payload: bytes

    def encode(self, circid_len: int = CIRCID_LEN) -> bytes:
        """Wire bytes; a fixed cell's payload is padded with NULs to 509 bytes."""
        if circid_len not in (2, 4):
            raise WireError(f"circuit id length must be 2 or 4, not {circid_len}")
        if not 0 <= self.circ_id < 1 << (8 * circid_len):
            raise WireError(f"circuit id {self.circ_id} does not fit in {circid_len} bytes")
        if not 0 <= self.command <= 0xFF:
            raise WireError(f"cell command {self.command} does not fit in 1 byte")
        head = self.circ_id.to_bytes(circid_len, "big") + bytes((self.command,))
        n = len(self.payload)
        if is_variable(self.command):
            if n > MAX_VAR_PAYLOAD:
                raise WireError(f"variable cell payload of {n} bytes exceeds {MAX_VAR_PAYLOAD}")
            return head + n.to_bytes(2, "big") + self.payload
        if n > PAYLOAD_LEN:
            raise WireError(f"fixed cell payload of {n} bytes exceeds {PAYLOAD_LEN}")
        if n == PAYLOAD_LEN:
            return head + self.payload
        return head + self.payload + bytes(PAYLOAD_LEN - n)


def _pull_at(buf: bytes | bytearray | memoryview, pos: int, circid_len: int) -> tuple[Cell, int] | None:
    """The cell starting at ``buf[pos]`` and the offset just after it, or None if incomplete."""
    n = len(buf)
    start = pos + circid_len + 1
    if n < start:
        return None
    command = buf[start - 1]
    if command == 7 or command >= 128:
        if n < start + 2:
            return None
        end = start + 2 + ((buf[start] << 8) | buf[start + 1])
        start += 2
    else:
        end = start + PAYLOAD_LEN
    if n < end:
        return None
    circ_id = int.from_bytes(buf[pos : pos + circid_len], "big")
    return Cell(circ_id, command, bytes(buf[start:end])), end


def _check_circid_len(buf: bytes | bytearray | memoryview, circid_len: int) -> bytes | bytearray | memoryview:
    if circid_len not in (2, 4):
        raise WireError(f"circuit id length must be 2 or 4, not {circid_len}")
    if isinstance(buf, memoryview) and (buf.format != "B" or buf.ndim != 1):
        return buf.tobytes()
    return buf


def pull_cell(buf: bytes | bytearray | memoryview, circid_len: int = CIRCID_LEN) -> tuple[Cell, int] | None:
    """Parse one cell at the start of ``buf``: ``(cell, bytes consumed)``, or None if incomplete.

    ``circid_len`` is 2 before the VERSIONS exchange (and for link protocol 3), 4 after
    v4/v5 was negotiated; the caller switches it between two calls.  Framing never fails:
    any command and length are accepted (the 2-byte length bounds a variable cell).
    """
    return _pull_at(_check_circid_len(buf, circid_len), 0, circid_len)


def pull_cells(buf: bytes | bytearray | memoryview, circid_len: int = CIRCID_LEN) -> tuple[list[Cell], int]:
    """Every whole cell at the start of ``buf`` and the bytes they used (the rest is incomplete).

    Do not use it across the VERSIONS exchange, where ``circid_len`` changes between cells.
    """
    buf = _check_circid_len(buf, circid_len)
    cells: list[Cell] = []
    pos = 0
    while (got := _pull_at(buf, pos, circid_len)) is not None:
        cells.append(got[0])
        pos = got[1]
    return cells, pos


def encode_versions_cell(versions: Sequence[int]) -> bytes:
    """The opening VERSIONS cell: ``CircID[2]=0 Command[1]=7 Length[2] u16*`` (tor-spec §4.1)."""
    return Cell(0, CellCommand.VERSIONS, Versions(tuple(versions)).encode_payload()).encode(
        VERSIONS_CIRCID_LEN
    )


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- link handshake


@dataclass(frozen=True, slots=True)
class Padding:
    """PADDING (0): link padding; the payload is ignored."""

    CMD: ClassVar[CellCommand] = CellCommand.PADDING

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class VPadding:
    """VPADDING (128): variable-length padding; any bytes, kept so that they round-trip."""

    CMD: ClassVar[CellCommand] = CellCommand.VPADDING
    payload: bytes

    def encode_payload(self) -> bytes:
        return self.payload

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class Versions:
    """VERSIONS (7): the link protocol versions the sender speaks (tor-spec §4.1)."""

    CMD: ClassVar[CellCommand] = CellCommand.VERSIONS
    versions: tuple[int, ...]

    def encode_payload(self) -> bytes:
        w = Writer()
        for v in self.versions:
            w.push_u16(v)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        if len(payload) % 2:
            raise WireError("VERSIONS payload has an odd length")
        return cls(tuple(int.from_bytes(payload[i : i + 2], "big") for i in range(0, len(payload), 2)))


@dataclass(frozen=True, slots=True)
class CertEntry:
    """One certificate of a CERTS cell; its body is parsed by the certificate validator."""

    cert_type: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Certs:
    """CERTS (129): ``N[1]`` then N x ``CertType[1] CLEN[2] Certificate`` (tor-spec §4.2).

    Duplicate types are the validator's concern, not the decoder's.
    """

    CMD: ClassVar[CellCommand] = CellCommand.CERTS
    certs: tuple[CertEntry, ...]

    def encode_payload(self) -> bytes:
        if len(self.certs) > 0xFF:
            raise WireError(f"{len(self.certs)} certificates do not fit a 1-byte count")
        w = Writer().push_u8(len(self.certs))
        for cert in self.certs:
            w.push_u8(cert.cert_type).push_var16(cert.body)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        certs = tuple(CertEntry(r.pull_u8(), r.pull_var16()) for _ in range(r.pull_u8()))
        r.expect_end("CERTS")
        return cls(certs)


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """AUTH_CHALLENGE (130): ``Challenge[32] N_Methods[2] Methods[2*N]`` (tor-spec §4.3)."""

    CMD: ClassVar[CellCommand] = CellCommand.AUTH_CHALLENGE
    challenge: bytes
    methods: tuple[int, ...]

    def encode_payload(self) -> bytes:
        if len(self.methods) > 0xFFFF:
            raise WireError("too many AUTH_CHALLENGE methods")
        w = Writer().push_bytes(exact(self.challenge, 32, "AUTH_CHALLENGE challenge"))
        w.push_u16(len(self.methods))
        for m in self.methods:
            w.push_u16(m)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        challenge = r.pull_bytes(32)
        methods = tuple(r.pull_u16() for _ in range(r.pull_u16()))
        r.expect_end("AUTH_CHALLENGE")
        return cls(challenge, methods)


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE (131): ``AuthType[2] AuthLen[2] Authentication`` (tor-spec §4.4)."""

    CMD: ClassVar[CellCommand] = CellCommand.AUTHENTICATE
    auth_type: int
    authentication: bytes

    def encode_payload(self) -> bytes:
        return Writer().push_u16(self.auth_type).push_var16(self.authentication).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        msg = cls(r.pull_u16(), r.pull_var16())
        r.expect_end("AUTHENTICATE")
        return msg


@dataclass(frozen=True, slots=True)
class Authorize:
    """AUTHORIZE (132): reserved by tor-spec, no format defined; kept opaque."""

    CMD: ClassVar[CellCommand] = CellCommand.AUTHORIZE
    payload: bytes

    def encode_payload(self) -> bytes:
        return self.payload

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(bytes(payload))


_ADDR_LEN = {4: 4, 6: 16}  # NETINFO ATYPE -> ALEN (tor-spec §4.5)


@dataclass(frozen=True, slots=True)
class NetAddress:
    """A NETINFO address: ``ATYPE[1] ALEN[1] AVAL`` (4 -> IPv4[4], 6 -> IPv6[16], others opaque)."""

    atype: int
    value: bytes

    @classmethod
    def from_ip(cls, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> NetAddress:
        """From ``"127.0.0.1"``, ``"::1"`` or an :mod:`ipaddress` object."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        return cls(4 if ip.version == 4 else 6, ip.packed)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address as an :mod:`ipaddress` object, or None for an unknown type."""
        if self.atype == 4 and len(self.value) == 4:
            return ipaddress.IPv4Address(self.value)
        if self.atype == 6 and len(self.value) == 16:
            return ipaddress.IPv6Address(self.value)
        return None

    def push(self, w: Writer) -> None:
        want = _ADDR_LEN.get(self.atype)
        if want is not None:
            exact(self.value, want, f"NETINFO address of type {self.atype}")
        w.push_u8(self.atype).push_var8(self.value)

    @classmethod
    def pull(cls, r: Reader) -> NetAddress:
        atype = r.pull_u8()
        value = r.pull_var8()
        want = _ADDR_LEN.get(atype)
        if want is not None and len(value) != want:
            raise WireError(f"NETINFO address of type {atype} has length {len(value)}, not {want}")
        return cls(atype, value)


@dataclass(frozen=True, slots=True)
class Netinfo:
    """NETINFO (8): ``TIME[4] OTHERADDR NMYADDR[1] MYADDR*`` (tor-spec §4.5). Clients send TIME 0."""

    CMD: ClassVar[CellCommand] = CellCommand.NETINFO
    timestamp: int
    other_address: NetAddress
    my_addresses: tuple[NetAddress, ...]

    def encode_payload(self) -> bytes:
        if len(self.my_addresses) > 0xFF:
            raise WireError(f"{len(self.my_addresses)} NETINFO addresses do not fit a 1-byte count")
        w = Writer().push_u32(self.timestamp)
        self.other_address.push(w)
        w.push_u8(len(self.my_addresses))
        for a in self.my_addresses:
            a.push(w)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        timestamp = r.pull_u32()
        other = NetAddress.pull(r)
        mine = tuple(NetAddress.pull(r) for _ in range(r.pull_u8()))
        return cls(timestamp, other, mine)


@dataclass(frozen=True, slots=True)
class PaddingNegotiate:
    """PADDING_NEGOTIATE (12): ``version[1]=0 command[1] ito_low_ms[2] ito_high_ms[2]`` (padding-spec §2.2)."""

    CMD: ClassVar[CellCommand] = CellCommand.PADDING_NEGOTIATE
    version: int
    command: int  # 1 stop, 2 start
    ito_low_ms: int
    ito_high_ms: int

    def encode_payload(self) -> bytes:
        w = Writer().push_u8(self.version).push_u8(self.command)
        return w.push_u16(self.ito_low_ms).push_u16(self.ito_high_ms).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        return cls(r.pull_u8(), r.pull_u8(), r.pull_u16(), r.pull_u16())


# --------------------------------------------------------------------------- circuits


@dataclass(frozen=True, slots=True)
class Create2:
    """CREATE2 (10): ``HTYPE[2] HLEN[2] HDATA`` (tor-spec §5.1); HTYPE 2 = ntor."""

    CMD: ClassVar[CellCommand] = CellCommand.CREATE2
    htype: int
    hdata: bytes

    def encode_payload(self) -> bytes:
        return Writer().push_u16(self.htype).push_var16(self.hdata).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        return cls(r.pull_u16(), r.pull_var16())


@dataclass(frozen=True, slots=True)
class Created2:
    """CREATED2 (11): ``HLEN[2] HDATA`` (tor-spec §5.1)."""

    CMD: ClassVar[CellCommand] = CellCommand.CREATED2
    hdata: bytes

    def encode_payload(self) -> bytes:
        return Writer().push_var16(self.hdata).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(Reader(payload).pull_var16())


@dataclass(frozen=True, slots=True)
class CreateFast:
    """CREATE_FAST (5): ``X[20]`` (tor-spec §5.1.5). Decoded, never sent (DESIGN §5)."""

    CMD: ClassVar[CellCommand] = CellCommand.CREATE_FAST
    x: bytes

    def encode_payload(self) -> bytes:
        return exact(self.x, 20, "CREATE_FAST X")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(Reader(payload).pull_bytes(20))


@dataclass(frozen=True, slots=True)
class CreatedFast:
    """CREATED_FAST (6): ``Y[20] KH[20]`` (tor-spec §5.1.5)."""

    CMD: ClassVar[CellCommand] = CellCommand.CREATED_FAST
    y: bytes
    kh: bytes

    def encode_payload(self) -> bytes:
        return exact(self.y, 20, "CREATED_FAST Y") + exact(self.kh, 20, "CREATED_FAST KH")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        r = Reader(payload)
        return cls(r.pull_bytes(20), r.pull_bytes(20))


@dataclass(frozen=True, slots=True)
class Destroy:
    """DESTROY (4): ``reason[1]`` (tor-spec §5.4); compare ``reason`` with DestroyReason."""

    CMD: ClassVar[CellCommand] = CellCommand.DESTROY
    reason: int

    def encode_payload(self) -> bytes:
        return Writer().push_u8(self.reason).getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(Reader(payload).pull_u8())


@dataclass(frozen=True, slots=True)
class Relay:
    """RELAY (3): the 509-byte onion-encrypted relay payload, opaque at this layer."""

    CMD: ClassVar[CellCommand] = CellCommand.RELAY
    payload: bytes

    def encode_payload(self) -> bytes:
        return exact(self.payload, PAYLOAD_LEN, "relay cell payload")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(exact(bytes(payload), PAYLOAD_LEN, "relay cell payload"))


@dataclass(frozen=True, slots=True)
class RelayEarly:
    """RELAY_EARLY (9): as RELAY, counted against the limit of 8 per circuit (tor-spec §5.6)."""

    CMD: ClassVar[CellCommand] = CellCommand.RELAY_EARLY
    payload: bytes

    def encode_payload(self) -> bytes:
        return exact(self.payload, PAYLOAD_LEN, "relay cell payload")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls(exact(bytes(payload), PAYLOAD_LEN, "relay cell payload"))


@dataclass(frozen=True, slots=True)
class UnknownCellMessage:
    """A cell whose command we do not decode (tor: drop it; the channel decides)."""

    command: int
    payload: bytes

    def encode_payload(self) -> bytes:
        return self.payload


# --------------------------------------------------------------------------- dispatch

CellMessage = (
    Padding
    | VPadding
    | Versions
    | Certs
    | AuthChallenge
    | Authenticate
    | Authorize
    | Netinfo
    | PaddingNegotiate
    | Create2
    | Created2
    | CreateFast
    | CreatedFast
    | Destroy
    | Relay
    | RelayEarly
    | FindPeer
    | FoundPeer
    | Introduce
    | Introduced
    | Hello
    | Register
    | Registered
    | LinkClosing
    | LinkKeep
    | UnknownCellMessage
)


class _CellCodec(Protocol):
    CMD: ClassVar[CellCommand]

    @classmethod
    def decode_payload(cls, payload: bytes) -> CellMessage: ...


MESSAGE_CLASSES: tuple[type[_CellCodec], ...] = (
    Padding,
    VPadding,
    Versions,
    Certs,
    AuthChallenge,
    Authenticate,
    Authorize,
    Netinfo,
    PaddingNegotiate,
    Create2,
    Created2,
    CreateFast,
    CreatedFast,
    Destroy,
    Relay,
    RelayEarly,
    *LINK_MESSAGE_CLASSES,
)

_DECODERS: Mapping[int, Callable[[bytes], CellMessage]] = build_registry(
    ((cls.CMD, cls.decode_payload) for cls in MESSAGE_CLASSES), "cell command"
)


def decode_message(cell: Cell) -> CellMessage:
    """The typed message of ``cell``; an unknown command gives :class:`UnknownCellMessage`."""
    decode = _DECODERS.get(cell.command)
    if decode is None:
        return UnknownCellMessage(cell.command, cell.payload)
    return decode(cell.payload)


def encode_message(msg: CellMessage, circ_id: int) -> Cell:
    """The cell carrying ``msg`` on circuit ``circ_id`` (0 for link-level cells).

    A fixed cell's payload is padded with NULs to 509 bytes, as :func:`pull_cell` returns it.
    """
    command = msg.command if isinstance(msg, UnknownCellMessage) else int(msg.CMD)
    payload = msg.encode_payload()
    if not is_variable(command):
        n = len(payload)
        if n > PAYLOAD_LEN:
            raise WireError(f"fixed cell payload of {n} bytes exceeds {PAYLOAD_LEN}")
        if n < PAYLOAD_LEN:
            payload += bytes(PAYLOAD_LEN - n)
    elif len(payload) > MAX_VAR_PAYLOAD:
        raise WireError(f"variable cell payload of {len(payload)} bytes exceeds {MAX_VAR_PAYLOAD}")
    return Cell(circ_id, command, payload)
