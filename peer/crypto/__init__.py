"""Cryptography for peersm (DESIGN §3-5): identity, ntor, KDFs, tor1 relay crypto, the peer certificate.

Sans-I/O: randomness and time are passed in.  See each module's docstring for its spec section.
"""

from peer.crypto.cert import (
    CertificateExpired,
    FingerprintMismatch,
    KeyReuse,
    PeerCertificate,
    issue_peer_certificate,
)
from peer.crypto.identity import Identity, RandBytes, SigningKey, node_id_of, verify, verify_raw
from peer.crypto.kdf import KeyMaterial, hkdf_sha256, kdf_rfc5869, kdf_tor
from peer.crypto.keys import X25519KeyPair
from peer.crypto.ntor import (
    NtorClientState,
    ntor_client_finish,
    ntor_client_finish_keyseed,
    ntor_client_start,
    ntor_server,
    ntor_server_keyseed,
)
from peer.crypto.relaycrypto import (
    RelayCrypto,
    originate_forward,
    receive_backward,
    sendme_v1_digest_matches,
)

__all__ = [
    "CertificateExpired",
    "FingerprintMismatch",
    "Identity",
    "KeyMaterial",
    "KeyReuse",
    "NtorClientState",
    "PeerCertificate",
    "RandBytes",
    "RelayCrypto",
    "SigningKey",
    "X25519KeyPair",
    "hkdf_sha256",
    "issue_peer_certificate",
    "kdf_rfc5869",
    "kdf_tor",
    "node_id_of",
    "ntor_client_finish",
    "ntor_client_finish_keyseed",
    "ntor_client_start",
    "ntor_server",
    "ntor_server_keyseed",
    "originate_forward",
    "receive_backward",
    "sendme_v1_digest_matches",
    "verify",
    "verify_raw",
]
