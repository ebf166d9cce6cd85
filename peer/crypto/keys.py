"""X25519 key pairs (RFC 7748) for ntor onion keys, ntor ephemeral keys and seal keys (DESIGN §3).

A key pair keeps the 32 raw private bytes exactly as given (X25519 clamps them
when used), so a fixed test-vector scalar maps to the expected public key.  A
Diffie-Hellman result of all zeros (a low-order peer point) is refused, as
tor-spec §5.1.4 requires for ntor.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from peer.crypto.identity import RandBytes
from peer.errors import CryptoError, UsageError

X25519_KEY_LEN = 32
_ZERO32 = bytes(X25519_KEY_LEN)


def x25519_public_of(private: bytes) -> bytes:
    """The public key ``X25519(private, 9)`` of 32 raw private bytes."""
    if len(private) != X25519_KEY_LEN:
        raise UsageError("an X25519 private key is 32 bytes")
    return (
        X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


@dataclass(frozen=True, slots=True, repr=False)
class X25519KeyPair:
    """An X25519 private key and its public key."""

    private: bytes
    public: bytes
    _key: X25519PrivateKey = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.private) != X25519_KEY_LEN or len(self.public) != X25519_KEY_LEN:
            raise UsageError("X25519 keys are 32 bytes")
        key = X25519PrivateKey.from_private_bytes(self.private)
        derived = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if not hmac.compare_digest(derived, self.public):
            raise UsageError("X25519 public key does not belong to the private key")
        object.__setattr__(self, "_key", key)

    @classmethod
    def generate(cls, randbytes: RandBytes) -> X25519KeyPair:
        """A key pair whose private key is the next 32 bytes of ``randbytes``."""
        return cls.from_private(randbytes(X25519_KEY_LEN))

    @classmethod
    def from_private(cls, private: bytes) -> X25519KeyPair:
        return cls(private, x25519_public_of(private))

    def exchange(self, peer_public: bytes) -> bytes:
        """``X25519(private, peer_public)``; CryptoError on a malformed key or an all-zero result."""
        if len(peer_public) != X25519_KEY_LEN:
            raise CryptoError("an X25519 public key is 32 bytes")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # OpenSSL refuses low-order points itself
            raise CryptoError("X25519 exchange gave an all-zero shared secret") from exc
        if hmac.compare_digest(shared, _ZERO32):
            raise CryptoError("X25519 exchange gave an all-zero shared secret")
        return shared

    def __repr__(self) -> str:  # never print the private key
        return f"X25519KeyPair(public={self.public.hex()[:8]}…, private=<redacted>)"
