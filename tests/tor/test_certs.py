"""CERTS validation (tor-spec §4.2, cert-spec §2) against a CERTS cell captured from a real tor
relay (tests/tor/data/relay_certs.json), tampered variants of it, and the Ed25519 cert codec."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import HandshakeError, UnknownVersion, WireError
from peer.tor.certs import (
    BadRelayCerts,
    CertExpired,
    CertSignatureInvalid,
    Ed25519Cert,
    Ed25519Extension,
    IdentityMismatch,
    RsaCrossCert,
    TlsCertMismatch,
    check_expected_identity,
    validate_relay_certs,
)
from peer.wire.cells import CertEntry, Certs

DATA = json.loads((Path(__file__).parent / "data" / "relay_certs.json").read_text())
CERTS = Certs.decode_payload(bytes.fromhex(DATA["certs_payload"]))
TLS_FP = bytes.fromhex(DATA["tls_cert_sha256"])
NOW = float(DATA["captured_at"])


def body(certs: Certs, cert_type: int) -> bytes:
    return next(e.body for e in certs.certs if e.cert_type == cert_type)


def with_body(certs: Certs, cert_type: int, new: bytes) -> Certs:
    return Certs(
        tuple(CertEntry(e.cert_type, new if e.cert_type == cert_type else e.body) for e in certs.certs)
    )


def test_real_relay_certs_validate() -> None:
    ident = validate_relay_certs(CERTS, TLS_FP, NOW)
    assert ident.rsa_id == bytes.fromhex(DATA["rsa_id"])
    assert ident.ed25519_id == bytes.fromhex(DATA["ed25519_id"])
    check_expected_identity(ident, bytes.fromhex(DATA["rsa_id"]), bytes.fromhex(DATA["ed25519_id"]))


def test_identity_mismatch_with_consensus_is_refused() -> None:
    ident = validate_relay_certs(CERTS, TLS_FP, NOW)
    with pytest.raises(IdentityMismatch, match="RSA identity"):
        check_expected_identity(ident, bytes(20), None)
    with pytest.raises(IdentityMismatch, match="Ed25519"):
        check_expected_identity(ident, ident.rsa_id, bytes(32))


def test_other_tls_certificate_is_refused() -> None:
    with pytest.raises(TlsCertMismatch):
        validate_relay_certs(CERTS, bytes(32), NOW)


def test_expired_certs_are_refused() -> None:
    with pytest.raises(CertExpired):
        validate_relay_certs(CERTS, TLS_FP, NOW + 3 * 365 * 86400)


@pytest.mark.parametrize("cert_type", [2, 4, 5, 7])
def test_missing_cert_type_is_refused(cert_type: int) -> None:
    certs = Certs(tuple(e for e in CERTS.certs if e.cert_type != cert_type))
    with pytest.raises(BadRelayCerts, match=f"type {cert_type}"):
        validate_relay_certs(certs, TLS_FP, NOW)


def test_duplicate_cert_type_is_refused() -> None:
    certs = Certs((*CERTS.certs, CERTS.certs[0]))
    with pytest.raises(BadRelayCerts, match="more than one"):
        validate_relay_certs(certs, TLS_FP, NOW)


@pytest.mark.parametrize("cert_type", [2, 4, 5, 7])
def test_flipped_signature_byte_is_refused(cert_type: int) -> None:
    raw = bytearray(body(CERTS, cert_type))
    raw[-3] ^= 0x01  # inside the signature of every format
    with pytest.raises(HandshakeError):
        validate_relay_certs(with_body(CERTS, cert_type, bytes(raw)), TLS_FP, NOW)


def test_type4_signed_by_other_key_is_refused() -> None:
    cert = Ed25519Cert.decode(body(CERTS, 4))
    ext = tuple(replace(e, data=bytes(32)) if e.ext_type == 4 else e for e in cert.extensions)
    forged = replace(cert, extensions=ext)
    with pytest.raises(CertSignatureInvalid):
        validate_relay_certs(with_body(CERTS, 4, forged.encode()), TLS_FP, NOW)


def test_cross_cert_for_other_identity_is_refused() -> None:
    cross = RsaCrossCert.decode(body(CERTS, 7))
    forged = replace(cross, ed25519_key=bytes(32))
    with pytest.raises(BadRelayCerts, match="another Ed25519 identity"):
        validate_relay_certs(with_body(CERTS, 7, forged.encode()), TLS_FP, NOW)


def test_certs_from_another_relay_do_not_mix() -> None:
    """Type 4/5 of the captured relay with a freshly made type 2: RSA cross-cert check fails."""
    from tests.tor.certfactory import make_relay_certs

    other = make_relay_certs(TLS_FP, NOW)
    mixed = with_body(CERTS, 2, body(other, 2))
    with pytest.raises(CertSignatureInvalid, match="type-7"):
        validate_relay_certs(mixed, TLS_FP, NOW)


def test_generated_certs_validate_and_expire() -> None:
    from tests.tor.certfactory import make_relay_certs

    certs = make_relay_certs(TLS_FP, NOW, lifetime_hours=10)
    validate_relay_certs(certs, TLS_FP, NOW)
    with pytest.raises(CertExpired):
        validate_relay_certs(certs, TLS_FP, NOW + 11 * 3600)


def test_rsa_identity_must_be_1024_bits() -> None:
    from tests.tor.certfactory import make_relay_certs

    certs = make_relay_certs(TLS_FP, NOW, rsa_bits=2048)
    with pytest.raises(BadRelayCerts, match="1024-bit"):
        validate_relay_certs(certs, TLS_FP, NOW)


# ----- Ed25519 certificate codec (cert-spec §2.1) ------------------------------------------------
extensions = st.builds(Ed25519Extension, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40))
ed_certs = st.builds(
    Ed25519Cert,
    cert_type=st.integers(0, 255),
    expiration_hours=st.integers(0, 2**32 - 1),
    key_type=st.integers(0, 255),
    certified_key=st.binary(min_size=32, max_size=32),
    extensions=st.lists(extensions, max_size=4).map(tuple),
    signature=st.binary(min_size=64, max_size=64),
)


@given(ed_certs)
def test_ed25519_cert_roundtrip(cert: Ed25519Cert) -> None:
    assert Ed25519Cert.decode(cert.encode()) == cert


@given(st.binary(max_size=300))
def test_ed25519_cert_garbage_gives_cert_or_wire_error(data: bytes) -> None:
    try:
        cert = Ed25519Cert.decode(data)
    except WireError:
        return
    assert cert.encode() == data


def test_ed25519_cert_unknown_version() -> None:
    raw = bytearray(body(CERTS, 4))
    raw[0] = 2
    with pytest.raises(UnknownVersion):
        Ed25519Cert.decode(bytes(raw))


def test_real_type4_cert_decodes_and_reencodes() -> None:
    raw = body(CERTS, 4)
    cert = Ed25519Cert.decode(raw)
    assert cert.encode() == raw
    assert cert.cert_type == 4 and cert.signing_key == bytes.fromhex(DATA["ed25519_id"])


@given(st.data())
def test_any_bit_flip_in_checked_certs_is_refused(data: st.DataObject) -> None:
    """Flipping any bit of a type 2/4/5/7 certificate makes validation fail with a HandshakeError.

    (The captured cell also carries a type-1 link certificate, which an initiator ignores.)"""
    entry = data.draw(st.sampled_from([e for e in CERTS.certs if e.cert_type in (2, 4, 5, 7)]))
    i = data.draw(st.integers(0, len(entry.body) - 1))
    bit = data.draw(st.integers(0, 7))
    raw = bytearray(entry.body)
    raw[i] ^= 1 << bit
    with pytest.raises(HandshakeError):
        validate_relay_certs(with_body(CERTS, entry.cert_type, bytes(raw)), TLS_FP, NOW)
