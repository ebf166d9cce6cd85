"""Key derivation for circuit handshakes (tor-spec §5.2 "Setting circuit keys").

* :func:`hkdf_sha256` is HKDF (RFC 5869) with SHA-256: extract, then expand.
* :func:`kdf_rfc5869` is tor's KDF-RFC5869 expansion (§5.2.2) from an already
  extracted ``KEY_SEED``: ``K_1 = H(m_expand | INT8(1), KEY_SEED)``,
  ``K_(i+1) = H(K_i | m_expand | INT8(i+1), KEY_SEED)`` where ``H(x, k)`` is
  HMAC-SHA256 keyed by ``k``.  With ntor, ``KEY_SEED = H(secret_input, t_key)``,
  so ``kdf_rfc5869(KEY_SEED, m_expand, n) == hkdf_sha256(secret_input, t_key, m_expand, n)``.
* :func:`kdf_tor` is KDF-TOR (§5.2.1): ``SHA1(K0 | [00]) | SHA1(K0 | [01]) | ...``;
  we only need it to decode CREATE_FAST (never sent).

:class:`KeyMaterial` splits the output into the per-hop relay-crypto keys
(§5.2.2 order ``Df[20] Db[20] Kf[16] Kb[16] KH[20]``, 92 bytes; §5.2.1 order
``KH Df Db Kf Kb`` for KDF-TOR).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from peer.errors import UsageError

DIGEST_LEN = 20  # Df, Db: SHA-1 seeds of the running digests
KEY_LEN = 16  # Kf, Kb: AES-128 keys
KH_LEN = 20  # KH: the "derivative key data" used to prove knowledge of the handshake
KEY_MATERIAL_LEN = 2 * DIGEST_LEN + 2 * KEY_LEN + KH_LEN  # 92

# tor-spec §5.1.4: ntor's m_expand, the `info` of its HKDF.  ntor.py re-exports it as M_EXPAND.
NTOR_M_EXPAND = b"ntor-curve25519-sha256-1:key_expand"

_SHA256_LEN = 32


def _hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def kdf_rfc5869(key_seed: bytes, m_expand: bytes, length: int) -> bytes:
    """tor's KDF-RFC5869 expansion (HKDF-Expand with PRK = ``key_seed``, info = ``m_expand``)."""
    if length < 0 or length > 255 * _SHA256_LEN:
        raise UsageError(f"HKDF cannot produce {length} bytes")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = _hmac_sha256(key_seed, block + m_expand + bytes((counter,)))
        out += block
        counter += 1
    return bytes(out[:length])


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with ``salt`` (empty = 32 zero bytes), then expand with ``info``."""
    prk = _hmac_sha256(salt or bytes(_SHA256_LEN), ikm)
    return kdf_rfc5869(prk, info, length)


def kdf_tor(k0: bytes, length: int) -> bytes:
    """KDF-TOR (tor-spec §5.2.1): ``SHA1(K0|00) | SHA1(K0|01) | ...`` truncated to ``length``."""
    if length < 0 or length > 256 * DIGEST_LEN:
        raise UsageError(f"KDF-TOR cannot produce {length} bytes")
    out = b"".join(hashlib.sha1(k0 + bytes((i,))).digest() for i in range(-(-length // DIGEST_LEN)))
    return out[:length]


@dataclass(frozen=True, slots=True, repr=False)
class KeyMaterial:
    """One hop's relay-crypto keys: digest seeds Df/Db, AES keys Kf/Kb and KH."""

    df: bytes  # 20: seeds the forward (OP -> OR) running SHA-1 digest
    db: bytes  # 20: seeds the backward (OR -> OP) running SHA-1 digest
    kf: bytes  # 16: AES-128-CTR key, forward
    kb: bytes  # 16: AES-128-CTR key, backward
    kh: bytes  # 20: KH (CREATE_FAST proof; otherwise unused by tor1)

    def __post_init__(self) -> None:
        if (len(self.df), len(self.db), len(self.kf), len(self.kb), len(self.kh)) != (
            DIGEST_LEN,
            DIGEST_LEN,
            KEY_LEN,
            KEY_LEN,
            KH_LEN,
        ):
            raise UsageError("key material: Df, Db, KH are 20 bytes and Kf, Kb are 16")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyMaterial:
        """Split 92 bytes laid out as tor-spec §5.2.2: ``Df Db Kf Kb KH``."""
        if len(data) != KEY_MATERIAL_LEN:
            raise UsageError(f"key material is {KEY_MATERIAL_LEN} bytes, got {len(data)}")
        return cls(df=data[0:20], db=data[20:40], kf=data[40:56], kb=data[56:72], kh=data[72:92])

    @classmethod
    def from_rfc5869(cls, key_seed: bytes) -> KeyMaterial:
        """Keys from an ntor ``KEY_SEED`` via KDF-RFC5869 with ntor's ``m_expand``."""
        return cls.from_bytes(kdf_rfc5869(key_seed, NTOR_M_EXPAND, KEY_MATERIAL_LEN))

    @classmethod
    def from_kdf_tor(cls, k0: bytes) -> KeyMaterial:
        """Keys from CREATE_FAST's ``K0 = X | Y`` via KDF-TOR; layout ``KH Df Db Kf Kb``."""
        data = kdf_tor(k0, KEY_MATERIAL_LEN)
        return cls(kh=data[0:20], df=data[20:40], db=data[40:60], kf=data[60:76], kb=data[76:92])

    def __repr__(self) -> str:  # never print key material
        return "KeyMaterial(<redacted>)"
