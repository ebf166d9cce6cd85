"""EXTEND2 link specifiers (tor-spec §5.1.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import WireError
from peer.wire.buffer import Reader
from peer.wire.linkspec import (
    LinkSpec,
    LinkSpecEd25519,
    LinkSpecIPv4,
    LinkSpecIPv6,
    LinkSpecLegacyId,
    LinkSpecPeerNodeId,
    LinkSpecUnknown,
    encode_link_specs,
    pull_link_specs,
)

from .strategies import link_specs

H = bytes.fromhex


def test_layout_of_each_type() -> None:
    specs = (
        LinkSpecIPv4(H("7f000001"), 443),
        LinkSpecIPv6(bytes(15) + b"\x01", 80),
        LinkSpecLegacyId(b"\x11" * 20),
        LinkSpecEd25519(b"\x22" * 32),
        LinkSpecPeerNodeId(b"\x33" * 20),
        LinkSpecUnknown(0x42, b"hi"),
    )
    expect = (
        H("06")
        + H("00 06 7f000001 01bb")
        + H("01 12")
        + bytes(15)
        + H("01 0050")
        + H("02 14")
        + b"\x11" * 20
        + H("03 20")
        + b"\x22" * 32
        + H("c8 14")
        + b"\x33" * 20
        + H("42 02")
        + b"hi"
    )
    assert encode_link_specs(specs) == expect
    r = Reader(expect + b"rest")
    assert pull_link_specs(r) == specs
    assert r.pull_rest() == b"rest"


@pytest.mark.parametrize(
    "wire",
    [
        H("01 00 05 7f00000101"),  # IPv4 of 5 bytes
        H("01 01 10") + bytes(16),  # IPv6 without port
        H("01 02 13") + bytes(19),  # legacy id of 19 bytes
        H("01 03 21") + bytes(33),  # ed25519 of 33 bytes
        H("01 c8 15") + bytes(21),  # NodeID of 21 bytes
        H("02 00 06 7f0000010050"),  # says 2 specifiers, has 1
        H("01 42 05 0000"),  # truncated body
    ],
)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(WireError):
        pull_link_specs(Reader(wire))


@pytest.mark.parametrize(
    "spec",
    [
        LinkSpecIPv4(bytes(3), 1),
        LinkSpecIPv4(bytes(4), 1 << 16),
        LinkSpecIPv6(bytes(4), 1),
        LinkSpecLegacyId(bytes(32)),
        LinkSpecEd25519(bytes(20)),
        LinkSpecPeerNodeId(bytes(32)),
        LinkSpecUnknown(2, bytes(20)),  # a known type must use its own class
        LinkSpecUnknown(256, b""),
        LinkSpecUnknown(0x42, bytes(256)),
    ],
)
def test_encode_refuses_bad_fields(spec: LinkSpec) -> None:
    with pytest.raises(WireError):
        encode_link_specs([spec])


def test_encode_refuses_too_many() -> None:
    with pytest.raises(WireError):
        encode_link_specs([LinkSpecLegacyId(bytes(20))] * 256)


@given(st.lists(link_specs(), max_size=8).map(tuple))
def test_round_trip(specs: tuple[LinkSpec, ...]) -> None:
    wire = encode_link_specs(specs)
    r = Reader(wire)
    assert pull_link_specs(r) == specs
    assert r.eof()


@given(st.binary(max_size=400))
def test_arbitrary_bytes(wire: bytes) -> None:
    r = Reader(wire)
    try:
        specs = pull_link_specs(r)
    except WireError:
        return
    assert encode_link_specs(specs) == wire[: r.position]
