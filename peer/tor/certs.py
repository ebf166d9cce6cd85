"""Tor relay certificates: the Ed25519 cert codec (cert-spec §2.1) and CERTS validation (tor-spec §4.2).

A non-authenticating initiator (our tor client) accepts a relay's link only if its CERTS cell
holds exactly one certificate of each of these types, all valid at ``now``:

* 2  RSA1024 identity, X.509, self-signed; the RSA key is 1024 bits.
* 4  Ed25519 identity -> Ed25519 signing key, signed by the identity named in its
     signed-with-ed25519-key extension (ExtType 4).
* 5  Ed25519 signing key -> TLS link certificate: the certified "key" is the SHA-256 of the DER
     certificate the TLS layer saw (CERT_KEY_TYPE 3); signed by the type-4 certified key.
* 7  RSA -> Ed25519 cross-certificate (cert-spec §2.3): ``ED25519_KEY[32] EXPIRATION_DATE[4]
     SIGLEN[1] SIGNATURE``, an RSA PKCS#1 v1.5 signature (tor style: no DigestInfo) of
     SHA256("Tor TLS RSA/Ed25519 cross-certificate" | ED25519_KEY | EXPIRATION_DATE), made with
     the type-2 identity key over the type-4 identity.

The result is the relay's RSA identity (SHA-1 of its DER PKCS#1 public key) and Ed25519 identity,
which the caller compares with the consensus (:func:`check_expected_identity`).
Ed25519 certificate layout (cert-spec §2.1)::

    VERSION[1]=1 CERT_TYPE[1] EXPIRATION_DATE[4] (hours since the epoch) CERT_KEY_TYPE[1]
    CERTIFIED_KEY[32] N_EXTENSIONS[1] N x (ExtLength[2] ExtType[1] ExtFlags[1] ExtData[ExtLength])
    SIGNATURE[64]  (Ed25519 over every previous byte)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from peer.crypto.identity import verify_raw
from peer.errors import CryptoError, HandshakeError, UnknownVersion, WireError
from peer.wire.buffer import Reader, Writer
from peer.wire.cells import Certs

ED25519_CERT_VERSION = 1
# CERTS cell certificate types (tor-spec §4.2, cert-spec §A.1 "Certificate types").
CERTTYPE_RSA1024_ID_ID = 2
CERTTYPE_ED_ID_SIGN = 4
CERTTYPE_ED_SIGN_LINK = 5
CERTTYPE_RSA1024_ID_EDID = 7
# CERT_KEY_TYPE (cert-spec §2.1): 1 = Ed25519 key, 3 = SHA-256 of an X.509 certificate.
KEYTYPE_ED25519 = 1
KEYTYPE_SHA256_X509 = 3
EXT_SIGNED_WITH_ED25519_KEY = 4
EXT_FLAG_AFFECTS_VALIDATION = 1
CROSSCERT_PREFIX = b"Tor TLS RSA/Ed25519 cross-certificate"
RSA_ID_BITS = 1024


class BadRelayCerts(HandshakeError):
    """A relay's CERTS cell is malformed, incomplete or fails a check (the message says which)."""

    kind = "relay-certs"


class CertExpired(BadRelayCerts):
    """A certificate of the CERTS cell has expired (or is not yet valid)."""

    kind = "relay-cert-expired"


class CertSignatureInvalid(BadRelayCerts):
    """A certificate signature does not verify."""

    kind = "relay-cert-signature"


class TlsCertMismatch(BadRelayCerts):
    """The type-5 certificate certifies another TLS certificate than the one the link presented."""

    kind = "relay-tls-mismatch"


class IdentityMismatch(BadRelayCerts):
    """The relay proved other identities than the ones the consensus names."""

    kind = "relay-identity-mismatch"


@dataclass(frozen=True, slots=True)
class Ed25519Extension:
    ext_type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Ed25519Cert:
    """An Ed25519 certificate (cert-spec §2.1); ``signature`` covers ``signed_part()``."""

    cert_type: int
    expiration_hours: int
    key_type: int
    certified_key: bytes
    extensions: tuple[Ed25519Extension, ...]
    signature: bytes
    version: int = ED25519_CERT_VERSION

    def signed_part(self) -> bytes:
        w = Writer().push_u8(self.version).push_u8(self.cert_type).push_u32(self.expiration_hours)
        if len(self.certified_key) != 32:
            raise WireError("an Ed25519 certificate certifies a 32-byte key")
        w.push_u8(self.key_type).push_bytes(self.certified_key).push_u8(len(self.extensions))
        for ext in self.extensions:
            w.push_u16(len(ext.data)).push_u8(ext.ext_type).push_u8(ext.flags).push_bytes(ext.data)
        return w.getvalue()

    def encode(self) -> bytes:
        if len(self.signature) != 64:
            raise WireError("an Ed25519 signature is 64 bytes")
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Ed25519Cert:
        r = Reader(data)
        version = r.pull_u8()
        if version != ED25519_CERT_VERSION:
            raise UnknownVersion(f"Ed25519 certificate version {version}")
        cert_type = r.pull_u8()
        expiration = r.pull_u32()
        key_type = r.pull_u8()
        key = r.pull_bytes(32)
        exts = []
        for _ in range(r.pull_u8()):
            length = r.pull_u16()
            ext_type = r.pull_u8()
            flags = r.pull_u8()
            exts.append(Ed25519Extension(ext_type, flags, r.pull_bytes(length)))
        signature = r.pull_bytes(64)
        r.expect_end("Ed25519 certificate")
        return cls(cert_type, expiration, key_type, key, tuple(exts), signature, version)

    @property
    def signing_key(self) -> bytes | None:
        """The key of the signed-with-ed25519-key extension, if present."""
        for ext in self.extensions:
            if ext.ext_type == EXT_SIGNED_WITH_ED25519_KEY and len(ext.data) == 32:
                return ext.data
        return None

    def expires_at(self) -> float:
        return self.expiration_hours * 3600.0

    def check(self, signer: bytes, now: float, what: str) -> None:
        """Signature by ``signer``, expiry, and no unknown extension that affects validation."""
        if now >= self.expires_at():
            raise CertExpired(f"{what} certificate expired")
        for ext in self.extensions:
            if ext.ext_type != EXT_SIGNED_WITH_ED25519_KEY and ext.flags & EXT_FLAG_AFFECTS_VALIDATION:
                raise BadRelayCerts(f"{what} certificate has an unknown critical extension {ext.ext_type}")
        try:
            verify_raw(signer, self.signed_part(), self.signature)
        except CryptoError as exc:
            raise CertSignatureInvalid(f"{what} certificate: bad Ed25519 signature") from exc


@dataclass(frozen=True, slots=True)
class RsaCrossCert:
    """The RSA -> Ed25519 cross-certificate (cert-spec §2.3, CERTS type 7)."""

    ed25519_key: bytes
    expiration_hours: int
    signature: bytes

    def encode(self) -> bytes:
        return (
            Writer()
            .push_bytes(self.ed25519_key)
            .push_u32(self.expiration_hours)
            .push_var8(self.signature)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> RsaCrossCert:
        r = Reader(data)
        key = r.pull_bytes(32)
        expiration = r.pull_u32()
        signature = r.pull_var8()
        r.expect_end("RSA->Ed25519 cross-certificate")
        return cls(key, expiration, signature)

    def digest(self) -> bytes:
        return hashlib.sha256(
            CROSSCERT_PREFIX + self.ed25519_key + self.expiration_hours.to_bytes(4, "big")
        ).digest()


@dataclass(frozen=True, slots=True)
class RelayIdentity:
    """What a relay's CERTS proved: its RSA identity (SHA-1, 20 bytes) and Ed25519 identity (32)."""

    rsa_id: bytes
    ed25519_id: bytes

    def __repr__(self) -> str:
        return f"RelayIdentity(rsa={self.rsa_id.hex()[:8]}…, ed25519={self.ed25519_id.hex()[:8]}…)"


def rsa_key_digest(key: rsa.RSAPublicKey) -> bytes:
    """SHA-1 of the DER PKCS#1 encoding of an RSA public key (tor's identity fingerprint)."""
    return hashlib.sha1(key.public_bytes(Encoding.DER, PublicFormat.PKCS1)).digest()


def rsa_verify_tor(key: rsa.RSAPublicKey, digest: bytes, signature: bytes) -> bool:
    """Tor's RSA signature check: PKCS#1 v1.5 type 1 padding around the bare digest (no DigestInfo)."""
    try:
        recovered = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return False
    return hmac.compare_digest(recovered, digest)


def _one_of_each(certs: Certs) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for entry in certs.certs:
        if entry.cert_type in found:
            raise BadRelayCerts(f"CERTS has more than one certificate of type {entry.cert_type}")
        found[entry.cert_type] = entry.body
    for needed in (
        CERTTYPE_RSA1024_ID_ID,
        CERTTYPE_ED_ID_SIGN,
        CERTTYPE_ED_SIGN_LINK,
        CERTTYPE_RSA1024_ID_EDID,
    ):
        if needed not in found:
            raise BadRelayCerts(f"CERTS lacks a certificate of type {needed}")
    return found


def _rsa_identity(body: bytes, now: float) -> rsa.RSAPublicKey:
    try:
        cert = x509.load_der_x509_certificate(body)
        key = cert.public_key()
        hash_alg = cert.signature_hash_algorithm
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except Exception as exc:  # the X.509 parser raises several unrelated types (InvalidVersion, ...)
        raise BadRelayCerts("type-2 certificate is not a valid X.509 RSA certificate") from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_ID_BITS:
        raise BadRelayCerts("type-2 certificate does not hold a 1024-bit RSA key")
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if not not_before <= when <= not_after:
        raise CertExpired("type-2 (RSA identity) certificate is outside its validity period")
    if hash_alg is None:
        raise BadRelayCerts("type-2 certificate has no signature hash algorithm")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_alg)
    except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
        raise CertSignatureInvalid("type-2 certificate is not self-signed by its key") from exc
    return key


def _ed_cert(body: bytes, cert_type: int, key_type: int) -> Ed25519Cert:
    try:
        cert = Ed25519Cert.decode(body)
    except WireError as exc:
        raise BadRelayCerts(f"type-{cert_type} certificate does not decode: {exc}") from exc
    if cert.cert_type != cert_type or cert.key_type != key_type:
        raise BadRelayCerts(
            f"type-{cert_type} certificate has type {cert.cert_type}/key type {cert.key_type}"
        )
    return cert


def validate_relay_certs(certs: Certs, tls_cert_sha256: bytes, now: float) -> RelayIdentity:
    """Validate a relay's CERTS cell as a non-authenticating initiator (tor-spec §4.2).

    ``tls_cert_sha256`` is the SHA-256 of the DER certificate the relay presented in TLS;
    ``now`` is the current time (seconds since the epoch).  Raises a :class:`BadRelayCerts`.
    """
    found = _one_of_each(certs)
    rsa_key = _rsa_identity(found[CERTTYPE_RSA1024_ID_ID], now)

    id_sign = _ed_cert(found[CERTTYPE_ED_ID_SIGN], CERTTYPE_ED_ID_SIGN, KEYTYPE_ED25519)
    identity = id_sign.signing_key
    if identity is None:
        raise BadRelayCerts("type-4 certificate lacks the signed-with-ed25519-key extension")
    id_sign.check(identity, now, "type-4 (identity->signing)")

    sign_link = _ed_cert(found[CERTTYPE_ED_SIGN_LINK], CERTTYPE_ED_SIGN_LINK, KEYTYPE_SHA256_X509)
    sign_link.check(id_sign.certified_key, now, "type-5 (signing->link)")
    if not hmac.compare_digest(sign_link.certified_key, tls_cert_sha256):
        raise TlsCertMismatch("type-5 certificate does not certify the TLS certificate of this link")

    try:
        cross = RsaCrossCert.decode(found[CERTTYPE_RSA1024_ID_EDID])
    except WireError as exc:
        raise BadRelayCerts(f"type-7 certificate does not decode: {exc}") from exc
    if now >= cross.expiration_hours * 3600.0:
        raise CertExpired("type-7 (RSA->Ed25519) certificate expired")
    if not hmac.compare_digest(cross.ed25519_key, identity):
        raise BadRelayCerts("type-7 certificate certifies another Ed25519 identity than type 4")
    if not rsa_verify_tor(rsa_key, cross.digest(), cross.signature):
        raise CertSignatureInvalid("type-7 certificate: bad RSA signature")
    return RelayIdentity(rsa_id=rsa_key_digest(rsa_key), ed25519_id=identity)


def check_expected_identity(proved: RelayIdentity, rsa_id: bytes, ed25519_id: bytes | None) -> None:
    """Refuse the link if the relay is not the one the consensus (or the caller) expects."""
    if not hmac.compare_digest(proved.rsa_id, rsa_id):
        raise IdentityMismatch("the relay's RSA identity differs from the consensus")
    if ed25519_id is not None and not hmac.compare_digest(proved.ed25519_id, ed25519_id):
        raise IdentityMismatch("the relay's Ed25519 identity differs from the consensus")
