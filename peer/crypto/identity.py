"""Node identity (DESIGN §3): an Ed25519 key, its NodeID, and context-bound signatures.

NodeID = first 160 bits of SHA-256(Ed25519 public key).  Every signature we make
covers ``context || 0x00 || message`` where ``context`` is an ASCII string naming
the purpose (``peersm/manifest/v1``, ``peersm/dht-record/v1``, ...), so a
signature made for one purpose can never be replayed as another.

Keys for different purposes are distinct objects; this module only provides the
Ed25519 primitive and the NodeID derivation.  ``storage/`` and ``dht/`` may import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from peer.errors import CryptoError, UsageError

NODE_ID_LEN = 20
ED25519_KEY_LEN = 32
ED25519_SIG_LEN = 64

RandBytes = Callable[[int], bytes]


def node_id_of(public_key: bytes) -> bytes:
    """NodeID: the first 160 bits of SHA-256 of the 32-byte Ed25519 public key."""
    if len(public_key) != ED25519_KEY_LEN:
        raise UsageError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key).digest()[:NODE_ID_LEN]


def _signed_message(context: str, message: bytes) -> bytes:
    ctx = context.encode("ascii")
    if not ctx or b"\x00" in ctx:
        raise UsageError("a signature context is a non-empty ASCII string without NUL")
    return ctx + b"\x00" + message


def verify(public_key: bytes, context: str, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature made with :meth:`SigningKey.sign`; raise CryptoError if it fails."""
    if len(public_key) != ED25519_KEY_LEN or len(signature) != ED25519_SIG_LEN:
        raise CryptoError(f"{context}: malformed key or signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, _signed_message(context, message))
    except (InvalidSignature, ValueError) as exc:
        raise CryptoError(f"{context}: bad signature") from exc


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key with context-bound signing.  Used for identities and publisher keys."""

    seed: bytes  # 32-byte private seed

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise UsageError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls, randbytes: RandBytes) -> SigningKey:
        return cls(randbytes(32))

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public(self) -> bytes:
        return self._key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, context: str, message: bytes) -> bytes:
        return self._key().sign(_signed_message(context, message))

    def sign_raw(self, message: bytes) -> bytes:
        """Plain Ed25519 over ``message`` (no context): only for tor's own formats (cert-spec)."""
        return self._key().sign(message)

    def private_bytes(self) -> bytes:
        return self._key().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def __repr__(self) -> str:  # never print key material
        return "SigningKey(<redacted>)"


def verify_raw(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Plain Ed25519 verification (tor's cert-spec formats); raise CryptoError if it fails."""
    if len(public_key) != ED25519_KEY_LEN or len(signature) != ED25519_SIG_LEN:
        raise CryptoError("malformed Ed25519 key or signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise CryptoError("bad Ed25519 signature") from exc


@dataclass(frozen=True, slots=True)
class Identity:
    """A node identity: the Ed25519 key that signs the peer certificate and DHT records."""

    key: SigningKey

    @classmethod
    def generate(cls, randbytes: RandBytes) -> Identity:
        return cls(SigningKey.generate(randbytes))

    @property
    def public(self) -> bytes:
        return self.key.public

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.public)

    def sign(self, context: str, message: bytes) -> bytes:
        return self.key.sign(context, message)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()[:8]}…)"
