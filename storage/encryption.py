"""Encrypted shares (DESIGN §7; docs/formats.md §3).

* A share has a random 256-bit *link key*, never chosen by the user; it travels
  only in the share link's fragment.
* piece key = HKDF-SHA256(link key, salt = file salt, info ``peersm/piece/v1``);
  piece ``i`` is AES-256-GCM with nonce = ``i`` as a 96-bit big-endian integer and
  AAD = file salt || u32 i || u32 piece count, so a piece cannot be moved to
  another index, another share or a share of another length.
* metadata key = HKDF-SHA256(link key, salt = file salt, info ``peersm/meta/v1``);
  the metadata blob is nonce(12) || AES-256-GCM(plaintext, AAD = file salt), its
  plaintext ``u8 version || var8 name || var8 mime`` zero-padded to a multiple of
  64 bytes so that the blob hides the exact name length.

Sans-I/O; randomness is injected.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from peer.crypto.identity import RandBytes
from peer.errors import UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer
from storage.errors import DecryptError, MetadataError

KEY_LEN = 32
TAG_LEN = 16
NONCE_LEN = 12
PIECE_INFO = b"peersm/piece/v1"
META_INFO = b"peersm/meta/v1"
META_VERSION = 1
META_PAD = 64
MAX_META_BLOB = 1024


def new_link_key(randbytes: RandBytes) -> bytes:
    """A fresh random 256-bit share key."""
    key = randbytes(KEY_LEN)
    if len(key) != KEY_LEN:
        raise UsageError("randbytes returned the wrong length")
    return key


def derive_key(link_key: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256(link key, salt, info) -> 32 bytes."""
    if len(link_key) != KEY_LEN:
        raise UsageError("a link key is 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info).derive(link_key)


def piece_nonce(index: int) -> bytes:
    return index.to_bytes(NONCE_LEN, "big")


def piece_aad(salt: bytes, index: int, count: int) -> bytes:
    return salt + index.to_bytes(4, "big") + count.to_bytes(4, "big")


class PieceCipher:
    """AES-256-GCM for the pieces of one share (keyed once, reused for every piece)."""

    __slots__ = ("_aead", "_count", "_salt")

    def __init__(self, link_key: bytes, salt: bytes, piece_count: int) -> None:
        self._aead = AESGCM(derive_key(link_key, salt, PIECE_INFO))
        self._salt = salt
        self._count = piece_count

    def _check(self, index: int) -> None:
        if not 0 <= index < self._count:
            raise UsageError(f"piece {index} outside a share of {self._count} pieces")

    def encrypt(self, index: int, plaintext: bytes) -> bytes:
        self._check(index)
        return self._aead.encrypt(piece_nonce(index), plaintext, piece_aad(self._salt, index, self._count))

    def decrypt(self, index: int, ciphertext: bytes) -> bytes:
        self._check(index)
        try:
            return self._aead.decrypt(
                piece_nonce(index), ciphertext, piece_aad(self._salt, index, self._count)
            )
        except InvalidTag as exc:
            raise DecryptError(f"piece {index} does not decrypt: wrong key or tampered") from exc


@dataclass(frozen=True, slots=True)
class Metadata:
    """What an encrypted share hides: its file name and MIME type."""

    name: str
    mime: str

    def encode(self) -> bytes:
        w = Writer().push_u8(META_VERSION)
        try:
            w.push_var8(self.name.encode("utf-8")).push_var8(self.mime.encode("ascii"))
        except (UnicodeEncodeError, WireError) as exc:
            raise UsageError(f"metadata does not fit: {exc}") from exc
        body = w.getvalue()
        return body + b"\x00" * (-len(body) % META_PAD)

    @classmethod
    def decode(cls, data: bytes) -> Metadata:
        r = Reader(data)
        try:
            version = r.pull_u8()
        except WireError as exc:
            raise MetadataError("empty metadata") from exc
        if version != META_VERSION:
            raise UnknownVersion(f"metadata version {version} is unknown")
        try:
            name = r.pull_var8().decode("utf-8")
            mime = r.pull_var8().decode("ascii")
        except (WireError, UnicodeDecodeError) as exc:
            raise MetadataError(f"bad metadata: {exc}") from exc
        if r.pull_rest().strip(b"\x00") or len(data) % META_PAD:
            raise MetadataError("metadata padding is not canonical")
        return cls(name, mime)


def encrypt_metadata(link_key: bytes, salt: bytes, meta: Metadata, randbytes: RandBytes) -> bytes:
    """nonce(12) || AES-256-GCM(meta key, nonce, padded metadata, AAD = salt)."""
    nonce = randbytes(NONCE_LEN)
    aead = AESGCM(derive_key(link_key, salt, META_INFO))
    return nonce + aead.encrypt(nonce, meta.encode(), salt)


def decrypt_metadata(link_key: bytes, salt: bytes, blob: bytes) -> Metadata:
    """Inverse of :func:`encrypt_metadata`; DecryptError on a wrong key, MetadataError on bad plaintext."""
    if len(blob) < NONCE_LEN + TAG_LEN:
        raise MetadataError("encrypted metadata too short")
    aead = AESGCM(derive_key(link_key, salt, META_INFO))
    try:
        plain = aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], salt)
    except InvalidTag as exc:
        raise DecryptError("metadata does not decrypt: wrong key or tampered") from exc
    return Metadata.decode(plain)
