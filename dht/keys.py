"""NodeIDs, DHT keys and XOR distance (DESIGN §3, §8).

A NodeID is the first 160 bits of SHA-256 of a node's Ed25519 identity key
(:func:`peer.crypto.identity.node_id_of`).  The DHT key under which ORDBs announce
a hash_name is the first 160 bits of SHA-256(``peersm/dht/provider/v1`` || hash_name):
a different hash with its own prefix, so a provider key never collides with a NodeID
on purpose and nobody can aim a NodeID at a key by choosing a hash_name.

Everything here is pure (no I/O, no clock, no global randomness).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random

from peer.errors import UsageError

ID_LEN = 20  # 160 bits, DESIGN §3
ID_BITS = 8 * ID_LEN
PROVIDER_KEY_CONTEXT = b"peersm/dht/provider/v1"


def provider_key(hash_name: bytes) -> bytes:
    """The DHT key for a hash_name: SHA-256(``peersm/dht/provider/v1`` || hash_name)[:20]."""
    if not hash_name:
        raise UsageError("a hash_name is not empty")
    return hashlib.sha256(PROVIDER_KEY_CONTEXT + hash_name).digest()[:ID_LEN]


def check_id(value: bytes, what: str = "NodeID") -> bytes:
    if len(value) != ID_LEN:
        raise UsageError(f"a {what} is {ID_LEN} bytes, not {len(value)}")
    return value


def as_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def distance(a: bytes, b: bytes) -> int:
    """Kademlia XOR distance between two 160-bit IDs."""
    return as_int(a) ^ as_int(b)


def common_prefix_bits(a: bytes, b: bytes) -> int:
    """How many leading bits two IDs share (160 when equal)."""
    return ID_BITS - distance(a, b).bit_length()


def random_id(rng: random.Random) -> bytes:
    return rng.getrandbits(ID_BITS).to_bytes(ID_LEN, "big")


def random_id_in_range(rng: random.Random, lower: int, upper: int) -> bytes:
    """A random ID in the inclusive integer range [lower, upper] (a k-bucket's range)."""
    upper = min(upper, (1 << ID_BITS) - 1)
    return rng.randint(lower, upper).to_bytes(ID_LEN, "big")


def prefix16(host: str) -> str:
    """The /16 network an IPv4 address belongs to (``a.b``); the whole address otherwise.

    Used for the per-/16 limits of k-buckets and record sets (DESIGN §8).  An IPv6
    address is grouped by its /32, the usual size of one operator's allocation.
    """
    parts = host.split(".")
    if len(parts) == 4:
        return f"{parts[0]}.{parts[1]}"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    return addr.packed[:4].hex()
