"""Make relay CERTS cells (types 2, 4, 5, 7) with fresh keys, for validator tests (cert-spec §2)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from peer.tor.certs import (
    CERTTYPE_ED_ID_SIGN,
    CERTTYPE_ED_SIGN_LINK,
    EXT_SIGNED_WITH_ED25519_KEY,
    KEYTYPE_ED25519,
    KEYTYPE_SHA256_X509,
    Ed25519Cert,
    Ed25519Extension,
    RsaCrossCert,
)
from peer.wire.cells import CertEntry, Certs


def rsa_sign_tor(key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    """Tor-style RSA signature: PKCS#1 v1.5 type-1 padding around the bare digest."""
    nums = key.private_numbers()
    k = (key.key_size + 7) // 8
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    sig = pow(int.from_bytes(block, "big"), nums.d, nums.public_numbers.n)
    return sig.to_bytes(k, "big")


def _raw(pub: ed25519.Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_ed_cert(
    signer: ed25519.Ed25519PrivateKey,
    cert_type: int,
    key_type: int,
    certified: bytes,
    expires_hours: int,
    *,
    with_signer_ext: bool,
) -> Ed25519Cert:
    exts = (
        (Ed25519Extension(EXT_SIGNED_WITH_ED25519_KEY, 0, _raw(signer.public_key())),)
        if with_signer_ext
        else ()
    )
    unsigned = Ed25519Cert(cert_type, expires_hours, key_type, certified, exts, bytes(64))
    return Ed25519Cert(
        cert_type, expires_hours, key_type, certified, exts, signer.sign(unsigned.signed_part())
    )


def make_relay_certs(tls_fp: bytes, now: float, *, lifetime_hours: int = 48, rsa_bits: int = 1024) -> Certs:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example-relay.net")])
    t = datetime.datetime.fromtimestamp(now, datetime.UTC)
    x509_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(t - datetime.timedelta(days=1))
        .not_valid_after(t + datetime.timedelta(days=365))
        .sign(rsa_key, hashes.SHA256())
    )
    identity = ed25519.Ed25519PrivateKey.generate()
    signing = ed25519.Ed25519PrivateKey.generate()
    expires = int(now // 3600) + lifetime_hours
    type4 = make_ed_cert(
        identity,
        CERTTYPE_ED_ID_SIGN,
        KEYTYPE_ED25519,
        _raw(signing.public_key()),
        expires,
        with_signer_ext=True,
    )
    type5 = make_ed_cert(
        signing, CERTTYPE_ED_SIGN_LINK, KEYTYPE_SHA256_X509, tls_fp, expires, with_signer_ext=False
    )
    cross = RsaCrossCert(_raw(identity.public_key()), expires, b"")
    cross_key = (
        rsa_key if rsa_bits == 1024 else rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    cross = RsaCrossCert(cross.ed25519_key, expires, rsa_sign_tor(cross_key, cross.digest()))
    return Certs(
        (
            CertEntry(2, x509_cert.public_bytes(Encoding.DER)),
            CertEntry(4, type4.encode()),
            CertEntry(5, type5.encode()),
            CertEntry(7, cross.encode()),
        )
    )
