"""KDFs against RFC 5869 and tor's own vectors (tests/vectors/hkdf.json, kdf_tor.json)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.kdf import KEY_MATERIAL_LEN, NTOR_M_EXPAND, KeyMaterial, hkdf_sha256, kdf_rfc5869, kdf_tor
from peer.errors import UsageError
from tests.crypto._support import load_vector

HKDF_VECTORS = load_vector("hkdf.json")
KDF_TOR_VECTORS = load_vector("kdf_tor.json")


@pytest.mark.parametrize("case", HKDF_VECTORS["rfc5869"], ids=lambda c: c["case"])
def test_hkdf_sha256_rfc5869(case: dict[str, str]) -> None:
    out = hkdf_sha256(
        bytes.fromhex(case["ikm"]),
        bytes.fromhex(case["salt"]),
        bytes.fromhex(case["info"]),
        int(case["length"]),
    )
    assert out.hex() == case["okm"]


@pytest.mark.parametrize("case", HKDF_VECTORS["tor_ntor"]["cases"], ids=lambda c: repr(c["ikm_ascii"][:8]))
def test_tor_kdf_rfc5869_vectors(case: dict[str, str]) -> None:
    spec = HKDF_VECTORS["tor_ntor"]
    salt = spec["salt_ascii"].encode()
    info = spec["info_ascii"].encode()
    ikm = case["ikm_ascii"].encode()
    assert info == NTOR_M_EXPAND
    assert hkdf_sha256(ikm, salt, info, spec["length"]).hex() == case["okm"]
    # tor's two-step form: KEY_SEED = HMAC-SHA256(key=t_key, secret_input), then the expansion.
    key_seed = hmac.new(salt, ikm, hashlib.sha256).digest()
    assert kdf_rfc5869(key_seed, info, spec["length"]).hex() == case["okm"]


@pytest.mark.parametrize("case", KDF_TOR_VECTORS["cases"], ids=lambda c: repr(c["k0_ascii"][:8]))
def test_kdf_tor_vectors(case: dict[str, str]) -> None:
    assert kdf_tor(case["k0_ascii"].encode(), KDF_TOR_VECTORS["length"]).hex() == case["out"]


def test_key_material_from_kdf_tor_layout() -> None:
    case = KDF_TOR_VECTORS["cases"][1]
    out = bytes.fromhex(case["out"])
    km = KeyMaterial.from_kdf_tor(case["k0_ascii"].encode())
    assert (km.kh, km.df, km.db, km.kf, km.kb) == (out[0:20], out[20:40], out[40:60], out[60:76], out[76:92])


def test_key_material_from_rfc5869_layout() -> None:
    seed = bytes(range(32))
    out = kdf_rfc5869(seed, NTOR_M_EXPAND, KEY_MATERIAL_LEN)
    km = KeyMaterial.from_rfc5869(seed)
    assert (km.df, km.db, km.kf, km.kb, km.kh) == (out[0:20], out[20:40], out[40:56], out[56:72], out[72:92])
    assert KeyMaterial.from_bytes(out) == km


def test_key_material_rejects_bad_lengths() -> None:
    with pytest.raises(UsageError):
        KeyMaterial.from_bytes(bytes(72))
    with pytest.raises(UsageError):
        KeyMaterial(df=bytes(20), db=bytes(20), kf=bytes(16), kb=bytes(15), kh=bytes(20))


def test_key_material_repr_hides_keys() -> None:
    km = KeyMaterial.from_bytes(bytes(range(92)))
    text = repr(km)
    assert "redacted" in text
    for secret in (km.df, km.db, km.kf, km.kb, km.kh):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_kdf_length_limits() -> None:
    assert len(kdf_rfc5869(b"k", b"i", 255 * 32)) == 255 * 32
    with pytest.raises(UsageError):
        kdf_rfc5869(b"k", b"i", 255 * 32 + 1)
    with pytest.raises(UsageError):
        kdf_tor(b"k", 256 * 20 + 1)
    assert kdf_rfc5869(b"k", b"i", 0) == b""


@given(
    ikm=st.binary(max_size=80),
    salt=st.binary(max_size=80),
    info=st.binary(max_size=80),
    n=st.integers(1, 300),
)
def test_hkdf_matches_cryptography(ikm: bytes, salt: bytes, info: bytes, n: int) -> None:
    """Our HKDF equals the `cryptography` package's independent implementation."""
    reference = HKDF(algorithm=hashes.SHA256(), length=n, salt=salt or None, info=info).derive(ikm)
    assert hkdf_sha256(ikm, salt, info, n) == reference


@given(k0=st.binary(max_size=64), n=st.integers(0, 200))
def test_kdf_tor_matches_definition(k0: bytes, n: int) -> None:
    expected = b"".join(hashlib.sha1(k0 + bytes([i])).digest() for i in range(11))[:n]
    assert kdf_tor(k0, n) == expected
