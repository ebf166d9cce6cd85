"""Signed manifests (storage/manifest.py, docs/formats.md §2)."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.identity import SigningKey
from peer.errors import IntegrityError, UnknownVersion, UsageError, WireError
from storage.errors import HashMismatch, ManifestError, ManifestSignatureError
from storage.manifest import (
    MANIFEST_CONTEXT,
    Flags,
    Manifest,
    live_hash_name,
    parse_manifest,
    pieces_for,
    sign_manifest,
)
from storage.merkle import EMPTY_ROOT

KEY = SigningKey(bytes(range(32)))


def make(**kw: object) -> Manifest:
    fields: dict[str, object] = dict(
        size=200_000,
        piece_size=65536,
        piece_count=4,
        root=b"r" * 32,
        publisher=KEY.public,
        flags=Flags.NONE,
        salt=b"s" * 32,
        name="film.mkv",
        mime="video/x-matroska",
    )
    fields.update(kw)
    return sign_manifest(Manifest(**fields), KEY)  # type: ignore[arg-type]


def test_round_trip_and_hash_name() -> None:
    m = make()
    raw = m.encode()
    assert parse_manifest(raw) == m
    assert m.hash_name == hashlib.sha256(raw).digest()
    assert parse_manifest(raw, m.hash_name) == m
    assert raw[0] == 1  # version byte first


def test_layout_offsets() -> None:
    m = make(created_day=20000)
    raw = m.encode()
    assert raw[1] == 0
    assert int.from_bytes(raw[2:10], "big") == 200_000
    assert int.from_bytes(raw[10:14], "big") == 65536
    assert int.from_bytes(raw[14:18], "big") == 4
    assert raw[18:50] == b"r" * 32 and raw[50:82] == KEY.public and raw[82:114] == b"s" * 32
    assert int.from_bytes(raw[114:118], "big") == 20000
    assert raw[118] == len("film.mkv") and raw[119:127] == b"film.mkv"
    assert len(raw) == 118 + 1 + 8 + 1 + 16 + 64


def test_signature_has_its_own_context() -> None:
    m = make()
    assert KEY.sign(MANIFEST_CONTEXT, m.body()) == m.signature
    wrong_context = dataclasses.replace(m, signature=KEY.sign("peersm/dht-record/v1", m.body()))
    with pytest.raises(ManifestSignatureError):
        parse_manifest(wrong_context.encode())


def test_wrong_signature_truncation_and_hash_mismatch() -> None:
    m = make()
    other = SigningKey(b"\x07" * 32)
    forged = dataclasses.replace(m, signature=other.sign(MANIFEST_CONTEXT, m.body()))
    with pytest.raises(ManifestSignatureError):
        parse_manifest(forged.encode())
    for cut in (0, 1, 50, len(m.encode()) - 1):
        with pytest.raises(ManifestError):
            parse_manifest(m.encode()[:cut])
    with pytest.raises(HashMismatch):
        parse_manifest(m.encode(), b"\x00" * 32)
    with pytest.raises(UsageError):
        sign_manifest(m, other)


def test_every_single_byte_flip_is_rejected() -> None:
    raw = make().encode()
    rng = random.Random(5)
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 1 << rng.randrange(8)
        with pytest.raises((WireError, IntegrityError)):
            parse_manifest(bytes(bad))


def test_field_rules() -> None:
    with pytest.raises(ManifestError):
        make(piece_count=5)  # does not cover the size
    with pytest.raises(ManifestError):
        make(piece_size=3000)  # not a power of two
    with pytest.raises(ManifestError):
        make(flags=Flags.ENCRYPTED)  # encrypted with a clear name
    with pytest.raises(ManifestError):
        make(size=0, piece_count=0)  # empty share needs the empty root
    assert make(size=0, piece_count=0, root=EMPTY_ROOT).piece_count == 0
    with pytest.raises(ManifestError):
        make(mime="text/plain\n")
    enc = make(flags=Flags.ENCRYPTED, name="", mime="", meta=b"m" * 64)
    assert parse_manifest(enc.encode()).meta == b"m" * 64
    with pytest.raises(UnknownVersion):
        Manifest.decode(b"\x02" + enc.encode()[1:])
    with pytest.raises(ManifestError):
        Manifest.decode(enc.encode()[:1] + b"\x80" + enc.encode()[2:])


def test_stored_piece_len() -> None:
    m = make()
    assert [m.stored_piece_len(i) for i in range(4)] == [65536, 65536, 65536, 200_000 - 3 * 65536]
    enc = make(flags=Flags.ENCRYPTED, name="", mime="", meta=b"m" * 64)
    assert enc.stored_piece_len(3) == 200_000 - 3 * 65536 + 16


def test_live_descriptor_is_named_by_publisher_and_stream() -> None:
    m = make(size=0, piece_count=0, root=bytes(32), flags=Flags.LIVE, name="cam1")
    assert m.hash_name == live_hash_name(KEY.public, "cam1")
    assert m.hash_name == hashlib.sha256(b"peersm/live/v1" + KEY.public + b"cam1").digest()
    assert parse_manifest(m.encode(), m.hash_name) == m


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    piece_size = 1 << draw(st.integers(10, 24))
    size = draw(st.integers(0, piece_size * 0xFFFF_FFFF))
    count = pieces_for(size, piece_size)
    encrypted = draw(st.booleans())
    root = EMPTY_ROOT if count == 0 else draw(st.binary(min_size=32, max_size=32))
    fields = dict(
        size=size,
        piece_size=piece_size,
        piece_count=count,
        root=root,
        publisher=draw(st.binary(min_size=32, max_size=32)),
        flags=Flags.ENCRYPTED if encrypted else Flags.NONE,
        salt=draw(st.binary(min_size=32, max_size=32)),
        created_day=draw(st.integers(0, 0xFFFF_FFFF)),
        signature=draw(st.binary(min_size=64, max_size=64)),
    )
    if encrypted:
        fields["meta"] = draw(st.binary(min_size=28, max_size=1024))
    else:
        fields["name"] = draw(
            st.text(max_size=60).filter(lambda s: "\x00" not in s and len(s.encode()) <= 255)
        )
        fields["mime"] = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
    return Manifest(**fields)  # type: ignore[arg-type]


@given(manifests())
def test_manifest_round_trip(m: Manifest) -> None:
    raw = m.encode()
    assert Manifest.decode(raw) == m
    assert Manifest.decode(raw).encode() == raw


@given(st.binary(max_size=400))
def test_manifest_garbage_gives_typed_error(data: bytes) -> None:
    try:
        m = parse_manifest(data)
    except (WireError, IntegrityError):
        return
    assert m.encode() == data
