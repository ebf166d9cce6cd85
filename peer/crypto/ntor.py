"""The ntor circuit handshake (tor-spec §5.1.4; CREATE2 HTYPE 2, HLEN 84), sans-I/O.

Client onionskin (84 bytes): ``NODEID[20] | KEYID[32] | X[32]`` where KEYID is the
server's ntor onion key ``B``.  Server reply (64 bytes): ``Y[32] | AUTH[32]``.
With ``H(x, t) = HMAC-SHA256(key=t, msg=x)``::

    secret_input = EXP(Y,x) | EXP(B,x) | ID | B | X | Y | PROTOID   (server: EXP(X,y) | EXP(X,b) | ...)
    KEY_SEED     = H(secret_input, t_key)
    verify       = H(secret_input, t_verify)
    auth_input   = verify | ID | B | Y | X | PROTOID | "Server"
    AUTH         = H(auth_input, t_mac)

and the relay-crypto keys are KDF-RFC5869(KEY_SEED, m_expand) (§5.2.2, see
:mod:`peer.crypto.kdf`).  Between our peers NODEID is the 20-byte NodeID; toward
tor relays it is the SHA-1 of the RSA identity; these functions do not care.

Randomness is injected: ``randbytes(32)`` is used directly as the X25519 private
key, so a test can replay fixed ephemeral keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256

from peer.crypto.identity import RandBytes
from peer.crypto.kdf import NTOR_M_EXPAND, KeyMaterial
from peer.crypto.keys import X25519_KEY_LEN, X25519KeyPair
from peer.errors import CryptoError, HandshakeError, UsageError

HTYPE_NTOR = 0x0002
PROTOID = b"ntor-curve25519-sha256-1"
T_MAC = PROTOID + b":mac"
T_KEY = PROTOID + b":key_extract"
T_VERIFY = PROTOID + b":verify"
M_EXPAND = NTOR_M_EXPAND
SERVER_STR = b"Server"

NODE_ID_LEN = 20
ONIONSKIN_LEN = NODE_ID_LEN + 2 * X25519_KEY_LEN  # 84 = HLEN of CREATE2 HTYPE 2
REPLY_LEN = 2 * X25519_KEY_LEN  # 64
AUTH_LEN = 32


def _h(msg: bytes, tweak: bytes) -> bytes:
    return hmac.new(tweak, msg, sha256).digest()


@dataclass(frozen=True, slots=True, repr=False)
class NtorClientState:
    """What the client keeps between sending CREATE2/EXTEND2 and receiving the reply."""

    node_id: bytes  # 20
    server_key: bytes  # B, 32
    x: X25519KeyPair  # the ephemeral key

    def __repr__(self) -> str:
        return f"NtorClientState(node_id={self.node_id.hex()[:8]}…)"


def _derive(
    dh1: bytes, dh2: bytes, node_id: bytes, b_pub: bytes, x_pub: bytes, y_pub: bytes
) -> tuple[bytes, bytes]:
    """(KEY_SEED, AUTH) from the two DH results and the public values."""
    secret_input = dh1 + dh2 + node_id + b_pub + x_pub + y_pub + PROTOID
    key_seed = _h(secret_input, T_KEY)
    verify = _h(secret_input, T_VERIFY)
    auth = _h(verify + node_id + b_pub + y_pub + x_pub + PROTOID + SERVER_STR, T_MAC)
    return key_seed, auth


def ntor_client_start(
    node_id: bytes, server_ntor_key: bytes, randbytes: RandBytes
) -> tuple[NtorClientState, bytes]:
    """Start a handshake with the node ``node_id`` whose ntor onion key is ``server_ntor_key``.

    Returns the state to keep and the 84-byte onionskin ``NODEID | KEYID | X``.
    """
    if len(node_id) != NODE_ID_LEN or len(server_ntor_key) != X25519_KEY_LEN:
        raise UsageError("ntor needs a 20-byte node ID and a 32-byte onion key")
    x = X25519KeyPair.generate(randbytes)
    return NtorClientState(node_id, server_ntor_key, x), node_id + server_ntor_key + x.public


def ntor_client_finish_keyseed(state: NtorClientState, reply: bytes) -> bytes:
    """Check the server's ``Y | AUTH`` and return ``KEY_SEED``; HandshakeError if it does not verify."""
    if len(reply) != REPLY_LEN:
        raise HandshakeError(f"ntor reply is {REPLY_LEN} bytes, got {len(reply)}")
    y_pub, auth = reply[:X25519_KEY_LEN], reply[X25519_KEY_LEN:]
    try:
        dh1 = state.x.exchange(y_pub)
        dh2 = state.x.exchange(state.server_key)
    except CryptoError as exc:
        raise HandshakeError("ntor: degenerate Diffie-Hellman result") from exc
    key_seed, expected = _derive(dh1, dh2, state.node_id, state.server_key, state.x.public, y_pub)
    if not hmac.compare_digest(expected, auth):
        raise HandshakeError("ntor: server AUTH does not verify")
    return key_seed


def ntor_client_finish(state: NtorClientState, reply: bytes) -> KeyMaterial:
    """Finish the handshake: check AUTH and derive the hop's relay-crypto keys."""
    return KeyMaterial.from_rfc5869(ntor_client_finish_keyseed(state, reply))


def ntor_server_keyseed(
    onionskin: bytes, node_id: bytes, keys: Mapping[bytes, X25519KeyPair], randbytes: RandBytes
) -> tuple[bytes, bytes]:
    """Answer an onionskin; returns (64-byte reply ``Y | AUTH``, ``KEY_SEED``).

    ``keys`` maps each ntor public key we accept (the current one and, during
    rotation, the previous one) to its key pair.
    """
    if len(onionskin) != ONIONSKIN_LEN:
        raise HandshakeError(f"ntor onionskin is {ONIONSKIN_LEN} bytes, got {len(onionskin)}")
    if len(node_id) != NODE_ID_LEN:
        raise UsageError("ntor needs a 20-byte node ID")
    their_id = onionskin[:NODE_ID_LEN]
    key_id = onionskin[NODE_ID_LEN : NODE_ID_LEN + X25519_KEY_LEN]
    x_pub = onionskin[NODE_ID_LEN + X25519_KEY_LEN :]
    if not hmac.compare_digest(their_id, node_id):
        raise HandshakeError("ntor: onionskin is for another node")
    b = keys.get(key_id)
    if b is None:
        raise HandshakeError("ntor: onionskin names an unknown onion key")
    y = X25519KeyPair.generate(randbytes)
    try:
        dh1 = y.exchange(x_pub)
        dh2 = b.exchange(x_pub)
    except CryptoError as exc:
        raise HandshakeError("ntor: degenerate Diffie-Hellman result") from exc
    key_seed, auth = _derive(dh1, dh2, node_id, b.public, x_pub, y.public)
    return y.public + auth, key_seed


def ntor_server(
    onionskin: bytes, node_id: bytes, keys: Mapping[bytes, X25519KeyPair], randbytes: RandBytes
) -> tuple[bytes, KeyMaterial]:
    """Answer an onionskin; returns (64-byte reply ``Y | AUTH``, the hop's key material)."""
    reply, key_seed = ntor_server_keyseed(onionskin, node_id, keys, randbytes)
    return reply, KeyMaterial.from_rfc5869(key_seed)
