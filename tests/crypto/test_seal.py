"""Sealed signalling: only the target opens it, nobody can alter it, the sender is proven."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.identity import Identity
from peer.crypto.keys import X25519KeyPair
from peer.crypto.seal import SealError, SealKind, open_sealed, seal
from peer.errors import WireError

NOW = 1_800_000_000.0
SENDER = Identity.generate(os.urandom)
TARGET = X25519KeyPair.generate(os.urandom)
SDP = b"v=0\r\na=fingerprint:sha-256 AA:BB\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"


def test_round_trip_proves_the_sender() -> None:
    blob = seal(SENDER, TARGET.public, SealKind.OFFER, SDP, now=NOW, randbytes=os.urandom)
    opened = open_sealed(TARGET, blob, now=NOW + 5)
    assert opened.payload == SDP and opened.kind == SealKind.OFFER
    assert opened.sender_node_id == SENDER.node_id
    assert b"candidate" not in blob and b"127.0.0.1" not in blob  # a bridge sees no ICE candidate


def test_another_key_cannot_open_it() -> None:
    blob = seal(SENDER, TARGET.public, SealKind.ANSWER, SDP, now=NOW, randbytes=os.urandom)
    with pytest.raises(SealError):
        open_sealed(X25519KeyPair.generate(os.urandom), blob, now=NOW)


@pytest.mark.parametrize("position", [0, 1, 20, 40, 100, -1])
def test_any_changed_byte_is_refused(position: int) -> None:
    blob = bytearray(seal(SENDER, TARGET.public, SealKind.OFFER, SDP, now=NOW, randbytes=os.urandom))
    blob[position] ^= 0x01
    with pytest.raises((SealError, WireError)):
        open_sealed(TARGET, bytes(blob), now=NOW)


def test_stale_blob_is_refused() -> None:
    blob = seal(SENDER, TARGET.public, SealKind.OFFER, SDP, now=NOW, randbytes=os.urandom)
    with pytest.raises(SealError, match="stale"):
        open_sealed(TARGET, blob, now=NOW + 3600)


@given(st.binary(max_size=300))
def test_garbage_gives_a_typed_error(data: bytes) -> None:
    with pytest.raises((SealError, WireError)):
        open_sealed(TARGET, data, now=NOW)
