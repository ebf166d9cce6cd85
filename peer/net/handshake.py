"""The link handshake between our peers (DESIGN §3-4): CERTS carries the peer certificate.

The identity key certifies the ntor and seal keys and the fingerprint of *this link's*
DTLS/TLS certificate.  Each side checks that fingerprint against the one its own
transport layer saw, so a signalling server or introducer cannot sit in the middle.
The certificate is issued per link (aiortc makes a new DTLS certificate per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peer.crypto.cert import PeerCertificate, issue_peer_certificate
from peer.crypto.identity import Identity, RandBytes
from peer.crypto.keys import X25519KeyPair
from peer.errors import CryptoError, HandshakeError, WireError
from peer.proto.channel import HandshakeConfig
from peer.proto.peerinfo import PeerInfo
from peer.transport.base import Link
from peer.wire.cells import CertEntry, Certs
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecPeerNodeId

#: CERTS entry type of our peer certificate (a private type; tor uses 1-7).
PEER_CERT_TYPE = 0xC8
#: How long a per-link certificate is valid.
CERT_LIFETIME = 24 * 3600


class LinkAuthError(HandshakeError):
    """The neighbour's certificate did not prove who it is on this link."""

    kind = "link-auth"


@dataclass(frozen=True, slots=True)
class PeerKeys:
    """A peer's long-term keys: identity (signs), ntor onion key, seal key — all distinct."""

    identity: Identity
    ntor: X25519KeyPair
    seal: X25519KeyPair

    @classmethod
    def generate(cls, randbytes: RandBytes) -> PeerKeys:
        return cls(
            Identity.generate(randbytes), X25519KeyPair.generate(randbytes), X25519KeyPair.generate(randbytes)
        )

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def link_specs(self) -> tuple[LinkSpecPeerNodeId, LinkSpecEd25519]:
        return (LinkSpecPeerNodeId(self.node_id), LinkSpecEd25519(self.identity.public))


def peer_handshake(keys: PeerKeys, link: Link, wall_clock: Callable[[], float]) -> HandshakeConfig:
    """The handshake configuration for a link to another peer of ours.

    Over DTLS both ends present a certificate: each side certifies its own and checks the other's.
    Over TLS only the server does (Python's ssl cannot accept a self-signed client certificate), so
    both sides certify *the server's* certificate: the server checks that the client's peer
    certificate names its own TLS certificate, the client that the server's names the one it saw.
    A man in the middle with another TLS certificate fails both checks; the client's certificate is
    only ever sent inside a TLS session to the holder of the certificate it names.
    """
    if link.server_cert_only:
        server_fp = link.peer_cert_fingerprint if link.initiator else link.local_cert_fingerprint
        if server_fp is None:
            raise LinkAuthError("the TLS layer reported no server certificate")
        return handshake_for(keys, server_fp, lambda: server_fp, wall_clock)
    local_fp = link.local_cert_fingerprint
    if local_fp is None:
        raise LinkAuthError("the transport has no local certificate fingerprint to certify")
    return handshake_for(keys, local_fp, lambda: link.peer_cert_fingerprint, wall_clock)


def handshake_for(
    keys: PeerKeys,
    local_fp: bytes,
    remote_fp: Callable[[], bytes | None],
    wall_clock: Callable[[], float],
) -> HandshakeConfig:
    """As :func:`peer_handshake`, with the fingerprints given directly (sans-I/O tests)."""
    cert = issue_peer_certificate(
        keys.identity, keys.ntor.public, keys.seal.public, local_fp, int(wall_clock()) + CERT_LIFETIME
    )
    ours = Certs((CertEntry(PEER_CERT_TYPE, cert.encode()),))

    def validate(certs: Certs) -> PeerInfo:
        entries = [c for c in certs.certs if c.cert_type == PEER_CERT_TYPE]
        if len(entries) != 1:
            raise LinkAuthError(f"expected one peer certificate, got {len(entries)}")
        seen = remote_fp()
        if seen is None:
            raise LinkAuthError("the transport did not report the remote certificate fingerprint")
        try:
            pc = PeerCertificate.decode(entries[0].body)
            node_id = pc.verify(wall_clock(), expected_link_fingerprint=seen)
        except (WireError, CryptoError) as exc:
            raise LinkAuthError(f"peer certificate refused: {exc}") from exc
        except HandshakeError as exc:
            raise LinkAuthError(f"peer certificate refused: {exc}") from exc
        if node_id == keys.node_id:
            raise LinkAuthError("the link leads back to ourselves")
        return PeerInfo(node_id, ed25519_id=pc.identity_key, ntor_key=pc.ntor_key, seal_key=pc.seal_key)

    return HandshakeConfig(validate=validate, certs=ours)
