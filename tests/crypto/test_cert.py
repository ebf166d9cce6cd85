"""The peer certificate (DESIGN §3-4): issue, verify, tamper, expiry, fingerprint, codec properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.cert import (
    CONTEXT,
    ENCODED_LEN,
    CertificateExpired,
    FingerprintMismatch,
    KeyReuse,
    PeerCertificate,
    issue_peer_certificate,
)
from peer.crypto.identity import Identity, verify
from peer.errors import CryptoError, HandshakeError, UnknownVersion, UsageError, WireError

RNG = random.Random(0xCE27)
IDENTITY = Identity.generate(RNG.randbytes)
NTOR = RNG.randbytes(32)
SEAL = RNG.randbytes(32)
FINGERPRINT = RNG.randbytes(32)
EXPIRES = 1_900_000_000
NOW = 1_800_000_000.5


def _cert() -> PeerCertificate:
    return issue_peer_certificate(IDENTITY, NTOR, SEAL, FINGERPRINT, EXPIRES)


def test_issue_and_verify() -> None:
    cert = _cert()
    assert cert.verify(NOW) == IDENTITY.node_id
    assert cert.verify(NOW, FINGERPRINT) == IDENTITY.node_id
    assert cert.node_id == IDENTITY.node_id


def test_byte_layout() -> None:
    cert = _cert()
    data = cert.encode()
    assert len(data) == ENCODED_LEN == 201
    assert data[0] == 1
    assert data[1:33] == IDENTITY.public
    assert data[33:65] == NTOR
    assert data[65:97] == SEAL
    assert data[97:129] == FINGERPRINT
    assert data[129:137] == EXPIRES.to_bytes(8, "big")
    assert data[137:] == cert.signature
    # The signature covers bytes 0..136 under the context string.
    verify(IDENTITY.public, CONTEXT, data[:137], data[137:])
    assert PeerCertificate.decode(data) == cert


@pytest.mark.parametrize("position", range(1, ENCODED_LEN))
def test_any_tampered_byte_fails(position: int) -> None:
    data = bytearray(_cert().encode())
    data[position] ^= 0x01
    cert = PeerCertificate.decode(bytes(data))
    with pytest.raises(CryptoError):
        cert.verify(NOW)


def test_signature_from_another_identity_fails() -> None:
    other = Identity.generate(random.Random(1).randbytes)
    forged = issue_peer_certificate(other, NTOR, SEAL, FINGERPRINT, EXPIRES)
    swapped = PeerCertificate.decode(_cert().encode()[:137] + forged.signature)
    with pytest.raises(CryptoError):
        swapped.verify(NOW)


def test_signature_with_another_context_fails() -> None:
    cert = _cert()
    wrong = IDENTITY.sign("peersm/dht-record/v1", cert.signed_bytes())
    with pytest.raises(CryptoError):
        PeerCertificate.decode(cert.signed_bytes() + wrong).verify(NOW)


def test_expiry() -> None:
    cert = _cert()
    cert.verify(EXPIRES - 0.001)
    with pytest.raises(CertificateExpired):
        cert.verify(EXPIRES)
    with pytest.raises(HandshakeError):
        cert.verify(EXPIRES + 3600.0)


def test_fingerprint_mismatch() -> None:
    wrong = bytes(b ^ 0xFF for b in FINGERPRINT)
    with pytest.raises(FingerprintMismatch):
        _cert().verify(NOW, wrong)
    with pytest.raises(FingerprintMismatch):
        _cert().verify(NOW, FINGERPRINT[:31])


def test_key_reuse_refused() -> None:
    with pytest.raises(UsageError):
        issue_peer_certificate(IDENTITY, NTOR, NTOR, FINGERPRINT, EXPIRES)
    # A correctly signed certificate (made by hand) that reuses a key is refused on verify.
    signed = bytes([1]) + IDENTITY.public + NTOR + NTOR + FINGERPRINT + EXPIRES.to_bytes(8, "big")
    cert = PeerCertificate.decode(signed + IDENTITY.sign(CONTEXT, signed))
    with pytest.raises(KeyReuse):
        cert.verify(NOW)


def test_issue_bad_arguments() -> None:
    with pytest.raises(UsageError):
        issue_peer_certificate(IDENTITY, NTOR[:31], SEAL, FINGERPRINT, EXPIRES)
    with pytest.raises(UsageError):
        issue_peer_certificate(IDENTITY, NTOR, SEAL, FINGERPRINT + b"x", EXPIRES)
    with pytest.raises(UsageError):
        issue_peer_certificate(IDENTITY, NTOR, SEAL, FINGERPRINT, 1 << 64)
    with pytest.raises(UsageError):
        issue_peer_certificate(IDENTITY, NTOR, SEAL, FINGERPRINT, -1)


def test_decode_errors() -> None:
    data = _cert().encode()
    with pytest.raises(WireError):
        PeerCertificate.decode(b"")
    with pytest.raises(WireError):
        PeerCertificate.decode(data[:-1])
    with pytest.raises(WireError):
        PeerCertificate.decode(data + b"\x00")
    for version in (0, 2, 255):
        with pytest.raises(UnknownVersion):
            PeerCertificate.decode(bytes([version]) + data[1:])


def test_repr_is_short_and_names_node() -> None:
    text = repr(_cert())
    assert IDENTITY.node_id.hex()[:8] in text
    assert _cert().signature.hex() not in text


_b32 = st.binary(min_size=32, max_size=32)
_certs = st.builds(
    PeerCertificate,
    version=st.just(1),
    identity_key=_b32,
    ntor_key=_b32,
    seal_key=_b32,
    link_fingerprint=_b32,
    expires=st.integers(0, (1 << 64) - 1),
    signature=st.binary(min_size=64, max_size=64),
)


@given(cert=_certs)
def test_round_trip(cert: PeerCertificate) -> None:
    data = cert.encode()
    assert len(data) == ENCODED_LEN
    assert PeerCertificate.decode(data) == cert


@given(
    data=st.one_of(st.binary(max_size=300), st.binary(min_size=200, max_size=200).map(lambda b: b"\x01" + b))
)
def test_garbage_decodes_or_raises_wire_error(data: bytes) -> None:
    try:
        cert = PeerCertificate.decode(data)
    except WireError:  # includes UnknownVersion
        return
    assert cert.encode() == data
    # Random bytes never carry a valid signature; verify fails cleanly.
    with pytest.raises((CryptoError, HandshakeError)):
        cert.verify(NOW)
