"""EXTEND2 link specifiers (tor-spec §5.1.2 "EXTEND and EXTENDED cells").

Layout: ``NSPEC[1]`` then NSPEC times ``LSTYPE[1] LSLEN[1] LSPEC[LSLEN]``.

| type | name | body |
|---|---|---|
| 00 | IPv4 | ``addr[4] port[2]`` |
| 01 | IPv6 | ``addr[16] port[2]`` |
| 02 | legacy RSA identity | ``SHA1[20]`` |
| 03 | Ed25519 identity | ``key[32]`` |
| C8 | peersm: peer by NodeID (private, DESIGN §5) | ``node_id[20]`` |

A known type with the wrong length is a :class:`~peer.errors.WireError`; unknown types
are kept as :class:`LinkSpecUnknown` (relays "MUST ignore unrecognized specifiers").
tor-spec recommends sending them in the order 00, 02, 03, 01; this module keeps the
caller's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from peer.errors import WireError
from peer.wire.buffer import Reader, Writer, exact
from peer.wire.commands import LinkSpecType

__all__ = [
    "LinkSpec",
    "LinkSpecEd25519",
    "LinkSpecIPv4",
    "LinkSpecIPv6",
    "LinkSpecLegacyId",
    "LinkSpecPeerNodeId",
    "LinkSpecUnknown",
    "decode_link_spec",
    "encode_link_specs",
    "pull_link_specs",
]


def _port(port: int) -> bytes:
    if not 0 <= port <= 0xFFFF:
        raise WireError(f"port {port} does not fit in 2 bytes")
    return port.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class LinkSpecIPv4:
    """Type 00: IPv4 address and port of the next hop."""

    LSTYPE: ClassVar[LinkSpecType] = LinkSpecType.IPV4
    address: bytes
    port: int

    def encode_data(self) -> bytes:
        return exact(self.address, 4, "IPv4 link specifier address") + _port(self.port)

    @classmethod
    def decode_data(cls, data: bytes) -> LinkSpecIPv4:
        exact(data, 6, "IPv4 link specifier")
        return cls(data[:4], int.from_bytes(data[4:], "big"))


@dataclass(frozen=True, slots=True)
class LinkSpecIPv6:
    """Type 01: IPv6 address and port of the next hop."""

    LSTYPE: ClassVar[LinkSpecType] = LinkSpecType.IPV6
    address: bytes
    port: int

    def encode_data(self) -> bytes:
        return exact(self.address, 16, "IPv6 link specifier address") + _port(self.port)

    @classmethod
    def decode_data(cls, data: bytes) -> LinkSpecIPv6:
        exact(data, 18, "IPv6 link specifier")
        return cls(data[:16], int.from_bytes(data[16:], "big"))


@dataclass(frozen=True, slots=True)
class LinkSpecLegacyId:
    """Type 02: SHA-1 of the next hop's RSA identity key."""

    LSTYPE: ClassVar[LinkSpecType] = LinkSpecType.LEGACY_ID
    rsa_id: bytes

    def encode_data(self) -> bytes:
        return exact(self.rsa_id, 20, "legacy identity link specifier")

    @classmethod
    def decode_data(cls, data: bytes) -> LinkSpecLegacyId:
        return cls(exact(data, 20, "legacy identity link specifier"))


@dataclass(frozen=True, slots=True)
class LinkSpecEd25519:
    """Type 03: the next hop's Ed25519 identity key."""

    LSTYPE: ClassVar[LinkSpecType] = LinkSpecType.ED25519_ID
    key: bytes

    def encode_data(self) -> bytes:
        return exact(self.key, 32, "Ed25519 identity link specifier")

    @classmethod
    def decode_data(cls, data: bytes) -> LinkSpecEd25519:
        return cls(exact(data, 32, "Ed25519 identity link specifier"))


@dataclass(frozen=True, slots=True)
class LinkSpecPeerNodeId:
    """Type 0xC8 (private): the next hop is the peer with this NodeID; the OR finds its link."""

    LSTYPE: ClassVar[LinkSpecType] = LinkSpecType.PEER_NODE_ID
    node_id: bytes

    def encode_data(self) -> bytes:
        return exact(self.node_id, 20, "peer NodeID link specifier")

    @classmethod
    def decode_data(cls, data: bytes) -> LinkSpecPeerNodeId:
        return cls(exact(data, 20, "peer NodeID link specifier"))


@dataclass(frozen=True, slots=True)
class LinkSpecUnknown:
    """A specifier of a type we do not know, kept as is (so it can be forwarded or ignored)."""

    lstype: int
    data: bytes

    def encode_data(self) -> bytes:
        if self.lstype in _KNOWN:
            raise WireError(f"link specifier type {self.lstype} is known: use its own class")
        return self.data


LinkSpec = (
    LinkSpecIPv4 | LinkSpecIPv6 | LinkSpecLegacyId | LinkSpecEd25519 | LinkSpecPeerNodeId | LinkSpecUnknown
)

_KNOWN = {
    int(cls.LSTYPE): cls.decode_data
    for cls in (LinkSpecIPv4, LinkSpecIPv6, LinkSpecLegacyId, LinkSpecEd25519, LinkSpecPeerNodeId)
}


def _lstype(spec: LinkSpec) -> int:
    return spec.lstype if isinstance(spec, LinkSpecUnknown) else int(spec.LSTYPE)


def decode_link_spec(lstype: int, data: bytes) -> LinkSpec:
    """One specifier from its type and body."""
    decode = _KNOWN.get(lstype)
    if decode is None:
        return LinkSpecUnknown(lstype, data)
    return decode(data)


def encode_link_specs(specs: Iterable[LinkSpec]) -> bytes:
    """``NSPEC[1]`` then each ``LSTYPE[1] LSLEN[1] LSPEC``."""
    specs = tuple(specs)
    if len(specs) > 0xFF:
        raise WireError(f"{len(specs)} link specifiers do not fit a 1-byte count")
    w = Writer().push_u8(len(specs))
    for spec in specs:
        lstype = _lstype(spec)
        if not 0 <= lstype <= 0xFF:
            raise WireError(f"link specifier type {lstype} does not fit in 1 byte")
        w.push_u8(lstype).push_var8(spec.encode_data())
    return w.getvalue()


def pull_link_specs(reader: Reader) -> tuple[LinkSpec, ...]:
    """Read ``NSPEC[1]`` and that many specifiers from ``reader``."""
    count = reader.pull_u8()
    out: list[LinkSpec] = []
    for _ in range(count):
        lstype = reader.pull_u8()
        out.append(decode_link_spec(lstype, reader.pull_var8()))
    return tuple(out)
