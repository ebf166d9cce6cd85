"""dht.keys: DHT keys, XOR distance, /16 grouping (DESIGN §3, §8)."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.keys import (
    ID_LEN,
    as_int,
    common_prefix_bits,
    distance,
    prefix16,
    provider_key,
    random_id,
    random_id_in_range,
)
from peer.crypto.identity import node_id_of
from peer.errors import UsageError

ids = st.binary(min_size=ID_LEN, max_size=ID_LEN)


def test_provider_key_is_prefixed_sha256() -> None:
    # Independent restatement of DESIGN §8: SHA-256("peersm/dht/provider/v1" || hash_name)[:20].
    h = bytes.fromhex("aa" * 32)
    assert provider_key(h) == hashlib.sha256(b"peersm/dht/provider/v1" + h).digest()[:20]
    assert provider_key(h) != hashlib.sha1(h).digest()  # not the kademlia package's digest()


def test_provider_key_differs_from_node_id_of_same_bytes() -> None:
    key = bytes(range(32))
    assert provider_key(key) != node_id_of(key)


def test_provider_key_refuses_empty() -> None:
    with pytest.raises(UsageError):
        provider_key(b"")


@given(ids, ids, ids)
def test_xor_metric(a: bytes, b: bytes, c: bytes) -> None:
    assert distance(a, a) == 0
    assert distance(a, b) == distance(b, a)
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    assert distance(a, b) ^ distance(b, c) == distance(a, c)


@given(ids, ids)
def test_common_prefix_bits(a: bytes, b: bytes) -> None:
    n = common_prefix_bits(a, b)
    assert 0 <= n <= 160
    if n < 160:
        assert (as_int(a) >> (159 - n)) & 1 != (as_int(b) >> (159 - n)) & 1
        assert as_int(a) >> (160 - n) == as_int(b) >> (160 - n)


def test_prefix16() -> None:
    assert prefix16("127.5.6.7") == prefix16("127.5.200.1") == "127.5"
    assert prefix16("127.6.0.1") != prefix16("127.5.0.1")
    assert prefix16("2001:db8::1") == prefix16("2001:db8:ffff::1")
    assert prefix16("not-an-address") == "not-an-address"


def test_random_ids_in_range() -> None:
    rng = random.Random(4)
    assert len(random_id(rng)) == ID_LEN
    for _ in range(100):
        v = as_int(random_id_in_range(rng, 2**100, 2**101 - 1))
        assert 2**100 <= v < 2**101
