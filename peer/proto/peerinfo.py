"""What a channel handshake proved about the neighbour (sans-I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Identities proven during the link handshake.

    ``node_id`` is our 20-byte NodeID for peers, or the SHA-1 RSA identity for tor relays;
    ``ed25519_id`` the Ed25519 identity key; ``rsa_id`` the legacy tor identity when known.
    ``ntor_key`` and ``seal_key`` come from the peer certificate (None for tor relays).
    """

    node_id: bytes
    ed25519_id: bytes | None = None
    rsa_id: bytes | None = None
    ntor_key: bytes | None = None
    seal_key: bytes | None = None
    is_tor_relay: bool = False

    def __repr__(self) -> str:  # identities are not logged in full
        return f"PeerInfo({self.node_id.hex()[:8]}…)"
