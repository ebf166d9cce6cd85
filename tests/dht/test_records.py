"""dht.records: canonical encoding, size limits, signatures, expiry (DESIGN §3, §8)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.keys import provider_key
from dht.records import (
    MAX_RECORD_SIZE,
    RECORD_CONTEXT,
    InvalidRecord,
    PeerRecord,
    ProviderRecord,
    Route,
    decode_record,
    decode_valid,
    validate,
)
from peer.errors import UnknownVersion, UsageError, WireError
from peer.wire.buffer import Writer

from .helpers import NOW, identity, peer, provider

RNG = random.Random(11)
ALICE = identity(RNG)
MALLORY = identity(RNG)
KEY = provider_key(b"some hash_name")

printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
routes = st.builds(
    Route,
    st.lists(st.tuples(st.sampled_from(["webrtc", "tls", "ws", "udp"]), printable), max_size=3).map(tuple),
    st.lists(printable, max_size=2).map(tuple),
)


@given(routes, st.integers(0, 2**64 - 1), st.binary(min_size=64, max_size=64))
def test_provider_roundtrip(route: Route, expiry: int, sig: bytes) -> None:
    rec = ProviderRecord(KEY, ALICE.public, bytes(32), bytes(32), route, expiry, sig)
    data = rec.encode()
    assert decode_record(data) == rec
    assert data[0] == 1 and data[1] == 1


@given(
    routes,
    st.lists(st.binary(min_size=20, max_size=20), max_size=8, unique=True),
    st.booleans(),
    st.booleans(),
)
def test_peer_roundtrip(route: Route, neighbours: list[bytes], stable: bool, exit_: bool) -> None:
    rec = PeerRecord(
        ALICE.public, bytes(32), bytes(32), route, tuple(neighbours), stable, 5, bytes(64), exit_
    )
    assert decode_record(rec.encode()) == rec


@given(st.binary(max_size=1200))
def test_decoder_never_raises_anything_else(data: bytes) -> None:
    try:
        rec = decode_record(data)
    except WireError:
        return
    assert rec.encode() == data  # anything accepted is canonical


def test_signed_records_validate() -> None:
    for rec in (provider(ALICE, KEY), peer(ALICE)):
        validate(rec, NOW)
        assert decode_valid(rec.encode(), NOW) == rec
    validate(provider(ALICE, KEY), NOW, key=KEY)
    assert peer(ALICE).dht_key == ALICE.node_id


def test_forged_record_fails() -> None:
    rec = provider(ALICE, KEY)
    for forged in (
        replace(rec, route=Route((("udp", "127.6.6.6:6"),))),
        replace(rec, expiry=rec.expiry + 1),
        replace(rec, signature=bytes(64)),
        replace(rec, ntor_key=bytes(32)),
    ):
        with pytest.raises(InvalidRecord):
            validate(forged, NOW)


def test_wrong_signer_fails() -> None:
    # Alice's identity key in the record, Mallory's signature over it.
    unsigned = replace(provider(ALICE, KEY), signature=b"")
    forged = replace(unsigned, signature=MALLORY.sign(RECORD_CONTEXT, unsigned.signed_part()))
    with pytest.raises(InvalidRecord):
        validate(forged, NOW)
    with pytest.raises(UsageError):
        unsigned.sign(MALLORY)


def test_expired_and_far_future_fail() -> None:
    with pytest.raises(InvalidRecord, match="expired"):
        validate(provider(ALICE, KEY, expiry=NOW - 1), NOW)
    with pytest.raises(InvalidRecord, match="future"):
        validate(provider(ALICE, KEY, expiry=NOW + 10 * 24 * 3600), NOW)


def test_wrong_key_fails() -> None:
    with pytest.raises(InvalidRecord):
        validate(provider(ALICE, KEY), NOW, key=provider_key(b"other"))
    with pytest.raises(InvalidRecord):
        validate(peer(ALICE), NOW, key=MALLORY.node_id)


def test_provider_record_and_peer_record_signatures_do_not_cross() -> None:
    # The kind byte is signed: a provider signature never validates a peer record's bytes.
    prov = provider(ALICE, KEY)
    assert prov.signed_part()[1] == 1 and peer(ALICE).signed_part()[1] == 2


def oversized_peer_record() -> bytes:
    """A correctly signed record over MAX_RECORD_SIZE (built by hand: the encoder refuses it)."""
    w = Writer().push_u8(1).push_u8(2).push_bytes(ALICE.public).push_bytes(bytes(64)).push_u8(0)
    w.push_u64(int(NOW + 60))
    w.push_u8(6)
    for i in range(6):
        w.push_u8(1).push_var8(b"a" * 60 + bytes([0x41 + i]))
    w.push_u8(3)
    for i in range(3):
        w.push_var8(b"b" * 120 + bytes([0x41 + i]))
    w.push_u8(0)
    signed = w.getvalue()
    return signed + ALICE.sign(RECORD_CONTEXT, signed)


def test_oversized_record_refused() -> None:
    data = oversized_peer_record()
    assert len(data) > MAX_RECORD_SIZE
    with pytest.raises(WireError):
        decode_record(data)
    with pytest.raises(UsageError):
        Route(tuple(("udp", "x" * 65) for _ in range(1)))


def test_unknown_version_and_kind() -> None:
    data = bytearray(provider(ALICE, KEY).encode())
    data[0] = 2
    with pytest.raises(UnknownVersion):
        decode_record(bytes(data))
    data[0], data[1] = 1, 9
    with pytest.raises(WireError):
        decode_record(bytes(data))


def test_non_canonical_refused() -> None:
    data = provider(ALICE, KEY).encode()
    with pytest.raises(WireError):
        decode_record(data + b"\x00")
    rec = peer(ALICE)
    raw = bytearray(rec.encode())
    raw[1 + 1 + 96] = 0x85  # unknown flag bit
    with pytest.raises(WireError):
        decode_record(bytes(raw))


def test_route_limits() -> None:
    with pytest.raises(UsageError):
        Route((("carrier-pigeon", "x"),))
    with pytest.raises(UsageError):
        Route((("udp", "has space"),))
    with pytest.raises(UsageError):
        Route(tuple(("udp", f"h{i}") for i in range(7)))
    with pytest.raises(UsageError):
        PeerRecord(ALICE.public, bytes(32), bytes(32), Route(), (bytes(20), bytes(20)), False, 1)
