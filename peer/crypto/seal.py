"""Sealed signalling (DESIGN §3-4): SDP offers and answers that bridges relay blind.

A sealed blob is encrypted to the target's X25519 *seal key* and signed, inside the
encryption, by the sender's identity, so a bridge or introducer sees neither the ICE
candidates nor who sends to whom beyond the routing it already does, and cannot change
a byte (the DTLS fingerprint in the SDP above all) without the target noticing.

Layout (version 1; integers big-endian):
  blob      = version[1]=1  eph_pub[32]  ciphertext  (AES-256-GCM, tag included)
  key       = HKDF-SHA256(ikm = X25519(eph, seal_key), salt = eph_pub || seal_key,
                          info = "peersm/seal/v1", 32 bytes); nonce = 12 zero bytes (the key
                          is fresh for every blob: a new ephemeral key each time)
  plaintext = sender_identity[32]  signature[64]  kind[1]  timestamp[8]  payload
  signature = Ed25519 by the sender identity, context "peersm/sdp/v1", over
              seal_key || eph_pub || kind || timestamp || payload
``kind`` is 1 for an offer and 2 for an answer.  The timestamp (unix seconds) lets the
target refuse stale or replayed blobs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.crypto.identity import ED25519_KEY_LEN, ED25519_SIG_LEN, Identity, RandBytes, node_id_of, verify
from peer.crypto.kdf import hkdf_sha256
from peer.crypto.keys import X25519KeyPair
from peer.errors import CryptoError, UnknownVersion, WireError
from peer.wire.buffer import Reader, Writer

CONTEXT = "peersm/sdp/v1"
VERSION = 1
MAX_AGE = 600.0  # seconds a sealed blob stays acceptable (either side of our clock)
_NONCE = bytes(12)


class SealKind(enum.IntEnum):
    OFFER = 1
    ANSWER = 2


class SealError(CryptoError):
    """A sealed blob that does not open: wrong key, tampered, forged, stale."""

    kind = "seal"


@dataclass(frozen=True, slots=True)
class Opened:
    """What an opened blob proves: who sealed it (identity key, NodeID), for what, when."""

    sender_key: bytes
    kind: int
    timestamp: int
    payload: bytes

    @property
    def sender_node_id(self) -> bytes:
        return node_id_of(self.sender_key)


def _key(shared: bytes, eph_pub: bytes, seal_pub: bytes) -> bytes:
    return hkdf_sha256(shared, eph_pub + seal_pub, b"peersm/seal/v1", 32)


def _signed(seal_pub: bytes, eph_pub: bytes, kind: int, timestamp: int, payload: bytes) -> bytes:
    return (
        Writer()
        .push_bytes(seal_pub + eph_pub)
        .push_u8(kind)
        .push_u64(timestamp)
        .push_bytes(payload)
        .getvalue()
    )


def seal(
    sender: Identity, seal_pub: bytes, kind: SealKind, payload: bytes, *, now: float, randbytes: RandBytes
) -> bytes:
    """Encrypt ``payload`` to the target's seal key, signed by ``sender``."""
    eph = X25519KeyPair.generate(randbytes)
    ts = int(now)
    sig = sender.sign(CONTEXT, _signed(seal_pub, eph.public, int(kind), ts, payload))
    plain = (
        Writer()
        .push_bytes(sender.public + sig)
        .push_u8(int(kind))
        .push_u64(ts)
        .push_bytes(payload)
        .getvalue()
    )
    ct = AESGCM(_key(eph.exchange(seal_pub), eph.public, seal_pub)).encrypt(_NONCE, plain, bytes([VERSION]))
    return bytes([VERSION]) + eph.public + ct


def open_sealed(seal_key: X25519KeyPair, blob: bytes, *, now: float, max_age: float = MAX_AGE) -> Opened:
    """Decrypt and verify a blob sealed to ``seal_key``; raise SealError (or WireError) if it fails."""
    r = Reader(blob)
    version = r.pull_u8()
    if version != VERSION:
        raise UnknownVersion(f"sealed blob version {version}")
    eph_pub = r.pull_bytes(32)
    ct = r.pull_rest()
    try:
        plain = AESGCM(_key(seal_key.exchange(eph_pub), eph_pub, seal_key.public)).decrypt(
            _NONCE, ct, bytes([VERSION])
        )
    except (InvalidTag, CryptoError, ValueError) as exc:
        raise SealError("sealed blob does not open with our seal key (tampered or not for us)") from exc
    p = Reader(plain)
    sender = p.pull_bytes(ED25519_KEY_LEN)
    sig = p.pull_bytes(ED25519_SIG_LEN)
    kind = p.pull_u8()
    ts = p.pull_u64()
    payload = p.pull_rest()
    try:
        verify(sender, CONTEXT, _signed(seal_key.public, eph_pub, kind, ts, payload), sig)
    except CryptoError as exc:
        raise SealError("sealed blob: the sender's signature does not verify") from exc
    if abs(now - ts) > max_age:
        raise SealError("sealed blob is stale or from the future")
    if kind not in (SealKind.OFFER, SealKind.ANSWER):
        raise WireError(f"sealed blob of unknown kind {kind}")
    return Opened(sender, kind, ts, payload)
