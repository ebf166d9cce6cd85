"""The peer certificate (DESIGN §3 "Identities and keys", §4 "Link handshake").

A node's Ed25519 identity certifies, for one link, its ntor onion key, its seal
key and the fingerprint of the DTLS (or TLS) certificate its transport presents,
until an expiry time.  It travels in the CERTS cell of the link handshake; each
side checks the fingerprint against the one its DTLS/TLS layer actually saw.

Encoding (version 1, 201 bytes, integers big-endian)::

    offset  size  field
         0     1  version            = 1
         1    32  identity_key       Ed25519 public key (NodeID = SHA-256(identity_key)[:20])
        33    32  ntor_key           X25519 ntor onion key (tor-spec §5.1.4 "B")
        65    32  seal_key           X25519 key for sealed signalling
        97    32  link_fingerprint   SHA-256 of the DTLS/TLS certificate (DER)
       129     8  expires            u64, unix seconds; invalid from this instant on
       137    64  signature          Ed25519 by identity_key over
                                     "peersm/peer-cert/v1" | 0x00 | bytes 0..136

The signature covers the versioned encoding of every other field, bound to the
context string, so it cannot be replayed as another kind of signed object.  A
version byte other than 1 is refused (:class:`~peer.errors.UnknownVersion`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from peer.crypto.identity import ED25519_KEY_LEN, ED25519_SIG_LEN, Identity, node_id_of, verify
from peer.errors import HandshakeError, UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer

CONTEXT = "peersm/peer-cert/v1"
VERSION = 1
KEY_LEN = 32
FINGERPRINT_LEN = 32
SIGNED_LEN = 1 + ED25519_KEY_LEN + 3 * KEY_LEN + 8  # 137
ENCODED_LEN = SIGNED_LEN + ED25519_SIG_LEN  # 201


class CertificateExpired(HandshakeError):
    """The peer certificate's expiry time has passed."""

    kind = "cert-expired"


class FingerprintMismatch(HandshakeError):
    """The certificate names another DTLS/TLS certificate than the one the link presented."""

    kind = "cert-fingerprint"


class KeyReuse(HandshakeError):
    """The certificate certifies the same key for two purposes."""

    kind = "cert-key-reuse"


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A decoded (not yet verified) peer certificate; :meth:`verify` before trusting it."""

    version: int
    identity_key: bytes
    ntor_key: bytes
    seal_key: bytes
    link_fingerprint: bytes
    expires: int
    signature: bytes

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise UsageError(f"peer certificate version {self.version} is not supported")
        lengths = (
            len(self.identity_key),
            len(self.ntor_key),
            len(self.seal_key),
            len(self.link_fingerprint),
            len(self.signature),
        )
        if lengths != (ED25519_KEY_LEN, KEY_LEN, KEY_LEN, FINGERPRINT_LEN, ED25519_SIG_LEN):
            raise UsageError("peer certificate: keys and fingerprint are 32 bytes, signature 64")
        if not 0 <= self.expires < 1 << 64:
            raise UsageError("peer certificate: expires is a u64")

    @property
    def node_id(self) -> bytes:
        """The NodeID named by the identity key (meaningful only once verified)."""
        return node_id_of(self.identity_key)

    def signed_bytes(self) -> bytes:
        """The encoding of every field but the signature: what the signature covers."""
        return _signed_bytes(
            self.identity_key, self.ntor_key, self.seal_key, self.link_fingerprint, self.expires
        )

    def encode(self) -> bytes:
        return self.signed_bytes() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> PeerCertificate:
        """Parse an encoded certificate: WireError if malformed, UnknownVersion if not version 1."""
        r = Reader(data)
        version = r.pull_u8()
        if version != VERSION:
            raise UnknownVersion(f"peer certificate version {version}")
        cert = cls(
            version=version,
            identity_key=r.pull_bytes(ED25519_KEY_LEN),
            ntor_key=r.pull_bytes(KEY_LEN),
            seal_key=r.pull_bytes(KEY_LEN),
            link_fingerprint=r.pull_bytes(FINGERPRINT_LEN),
            expires=r.pull_u64(),
            signature=r.pull_bytes(ED25519_SIG_LEN),
        )
        r.expect_end("peer certificate")
        return cert

    def verify(self, now: float, expected_link_fingerprint: bytes | None = None) -> bytes:
        """Check signature, expiry, key separation and (if given) the link fingerprint.

        Returns the NodeID.  Raises CryptoError (bad signature), CertificateExpired,
        KeyReuse or FingerprintMismatch (both HandshakeError).
        """
        verify(self.identity_key, CONTEXT, self.signed_bytes(), self.signature)
        if now >= self.expires:
            raise CertificateExpired("peer certificate has expired")
        if hmac.compare_digest(self.ntor_key, self.seal_key):
            raise KeyReuse("peer certificate uses one key as both ntor and seal key")
        if expected_link_fingerprint is not None and not hmac.compare_digest(
            self.link_fingerprint, expected_link_fingerprint
        ):
            raise FingerprintMismatch("peer certificate names another link certificate")
        return self.node_id

    def __repr__(self) -> str:
        return f"PeerCertificate(node_id={self.node_id.hex()[:8]}…, expires={self.expires})"


def _signed_bytes(
    identity_key: bytes, ntor_key: bytes, seal_key: bytes, link_fingerprint: bytes, expires: int
) -> bytes:
    w = Writer()
    w.push_u8(VERSION)
    w.push_bytes(identity_key).push_bytes(ntor_key).push_bytes(seal_key).push_bytes(link_fingerprint)
    try:
        w.push_u64(expires)
    except WireError as exc:
        raise UsageError("peer certificate: expires is a u64") from exc
    return w.getvalue()


def issue_peer_certificate(
    identity: Identity, ntor_key: bytes, seal_key: bytes, link_fingerprint: bytes, expires: int
) -> PeerCertificate:
    """Sign a version-1 peer certificate for this link with ``identity``."""
    if len(ntor_key) != KEY_LEN or len(seal_key) != KEY_LEN or len(link_fingerprint) != FINGERPRINT_LEN:
        raise UsageError("peer certificate: keys and fingerprint are 32 bytes")
    if ntor_key == seal_key:
        raise UsageError("peer certificate: the ntor and seal keys must differ")
    identity_key = identity.public
    signed = _signed_bytes(identity_key, ntor_key, seal_key, link_fingerprint, expires)
    return PeerCertificate(
        version=VERSION,
        identity_key=identity_key,
        ntor_key=ntor_key,
        seal_key=seal_key,
        link_fingerprint=link_fingerprint,
        expires=expires,
        signature=identity.sign(CONTEXT, signed),
    )
