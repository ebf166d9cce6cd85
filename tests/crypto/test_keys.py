"""X25519 key pairs: RFC 7748 vector, degenerate results, redaction."""

from __future__ import annotations

import random

import pytest

from peer.crypto.keys import X25519KeyPair, x25519_public_of
from peer.errors import CryptoError, UsageError
from tests.crypto._support import fixed_randbytes, load_vector

V = load_vector("x25519.json")

# Points of small order on Curve25519 (the usual blocklist): any exchange with them gives zero.
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    ((1 << 255) - 20).to_bytes(32, "little"),  # p - 1
    ((1 << 255) - 19).to_bytes(32, "little"),  # p
]


def test_rfc7748_vector() -> None:
    alice = X25519KeyPair.from_private(bytes.fromhex(V["alice_private"]))
    bob = X25519KeyPair.from_private(bytes.fromhex(V["bob_private"]))
    assert alice.public.hex() == V["alice_public"]
    assert bob.public.hex() == V["bob_public"]
    assert alice.exchange(bob.public).hex() == V["shared"]
    assert bob.exchange(alice.public).hex() == V["shared"]


def test_generate_uses_injected_randomness() -> None:
    priv = bytes.fromhex(V["alice_private"])
    kp = X25519KeyPair.generate(fixed_randbytes(priv))
    assert kp.private == priv
    assert kp.public.hex() == V["alice_public"]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_all_zero_shared_secret_is_refused(point: bytes) -> None:
    kp = X25519KeyPair.generate(random.Random(1).randbytes)
    with pytest.raises(CryptoError):
        kp.exchange(point)


def test_bad_inputs() -> None:
    kp = X25519KeyPair.generate(random.Random(2).randbytes)
    with pytest.raises(CryptoError):
        kp.exchange(bytes(31))
    with pytest.raises(UsageError):
        X25519KeyPair(kp.private, bytes(32))  # public key of another private key
    with pytest.raises(UsageError):
        X25519KeyPair.from_private(bytes(31))
    with pytest.raises(UsageError):
        x25519_public_of(bytes(33))


def test_repr_hides_private_key() -> None:
    kp = X25519KeyPair.generate(random.Random(3).randbytes)
    assert kp.private.hex() not in repr(kp)
    assert repr(kp.private) not in repr(kp)
    assert "redacted" in repr(kp)


def test_equality_ignores_cached_key_object() -> None:
    priv = random.Random(4).randbytes(32)
    assert X25519KeyPair.from_private(priv) == X25519KeyPair.from_private(priv)
