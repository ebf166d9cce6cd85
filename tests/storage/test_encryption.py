"""Encrypted shares (storage/encryption.py, DESIGN §7)."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import UnknownVersion, WireError
from storage.encryption import (
    Metadata,
    PieceCipher,
    decrypt_metadata,
    derive_key,
    encrypt_metadata,
    new_link_key,
)
from storage.errors import DecryptError, MetadataError

KEY = bytes(range(32))
SALT = b"\x5a" * 32


def test_piece_construction_matches_the_design() -> None:
    """piece key = HKDF(link key, salt, 'peersm/piece/v1'); nonce = index (96-bit BE); AAD = salt||idx||count."""
    pk = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=b"peersm/piece/v1").derive(KEY)
    expected = AESGCM(pk).encrypt(
        (7).to_bytes(12, "big"), b"hello", SALT + (7).to_bytes(4, "big") + (9).to_bytes(4, "big")
    )
    assert PieceCipher(KEY, SALT, 9).encrypt(7, b"hello") == expected
    assert derive_key(KEY, SALT, b"peersm/meta/v1") != pk


def test_piece_binding() -> None:
    c = PieceCipher(KEY, SALT, 9)
    ct = c.encrypt(3, b"x" * 100)
    assert len(ct) == 116
    assert c.decrypt(3, ct) == b"x" * 100
    with pytest.raises(DecryptError):
        c.decrypt(4, ct)  # moved to another index
    with pytest.raises(DecryptError):
        PieceCipher(KEY, SALT, 10).decrypt(3, ct)  # share of another length
    with pytest.raises(DecryptError):
        PieceCipher(bytes(32), SALT, 9).decrypt(3, ct)  # wrong key
    with pytest.raises(DecryptError):
        c.decrypt(3, ct[:-1] + bytes([ct[-1] ^ 1]))


def test_metadata_round_trip_and_padding() -> None:
    rng = random.Random(1)
    rb = rng.randbytes
    blob = encrypt_metadata(KEY, SALT, Metadata("a.txt", "text/plain"), rb)
    blob2 = encrypt_metadata(KEY, SALT, Metadata("a-longer-name.txt", "text/plain"), rb)
    assert len(blob) == len(blob2) == 12 + 64 + 16  # the length hides the name length
    assert decrypt_metadata(KEY, SALT, blob) == Metadata("a.txt", "text/plain")
    with pytest.raises(DecryptError):
        decrypt_metadata(new_link_key(rb), SALT, blob)
    with pytest.raises(MetadataError):
        decrypt_metadata(KEY, SALT, blob[:20])
    # the metadata key is not the piece key
    pk = derive_key(KEY, SALT, b"peersm/piece/v1")
    with pytest.raises(Exception):  # noqa: B017 - any failure will do: it must not decrypt
        AESGCM(pk).decrypt(blob[:12], blob[12:], SALT)


@given(
    st.text(max_size=80).filter(
        lambda s: len(s.encode("utf-8", "replace")) <= 255 and s.encode("utf-8", "ignore").decode() == s
    ),
    st.text(st.characters(max_codepoint=0x7F), max_size=50),
)
def test_metadata_encoding_round_trip(name: str, mime: str) -> None:
    meta = Metadata(name, mime)
    assert Metadata.decode(meta.encode()) == meta


@given(st.binary(max_size=300))
def test_metadata_garbage_gives_typed_error(data: bytes) -> None:
    try:
        meta = Metadata.decode(data)
    except (WireError, UnknownVersion):
        return
    assert meta.encode() == data
