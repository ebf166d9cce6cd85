"""Signed manifests (DESIGN §7; docs/formats.md §2).

A manifest binds a share's size, piece size, piece count, Merkle root, flags and
random file salt to a *publisher key made fresh for each share*; plain shares
also carry a name and a MIME type, encrypted ones carry them only inside
encrypted metadata.  The body is signed by the publisher key with the context
``peersm/manifest/v1``; the signed manifest is ``body || signature`` and

    hash_name = SHA-256(signed manifest)

so a relay cannot substitute content.  Live-stream descriptors (flag LIVE) are
named instead by SHA-256(``peersm/live/v1`` || publisher key || stream name).

Every field has one encoding, and :meth:`Manifest.decode` refuses anything else
(unknown version or flag bits, inconsistent counts, trailing bytes), so one
manifest has exactly one byte form and one hash_name.  Sans-I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass, field

from peer.crypto.identity import ED25519_KEY_LEN, ED25519_SIG_LEN, SigningKey, verify
from peer.errors import CryptoError, UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer
from storage.errors import HashMismatch, ManifestError, ManifestSignatureError
from storage.merkle import EMPTY_ROOT, HASH_LEN, MAX_PIECES

MANIFEST_VERSION = 1
MANIFEST_CONTEXT = "peersm/manifest/v1"
LIVE_NAME_PREFIX = b"peersm/live/v1"
SALT_LEN = 32
MIN_PIECE_SIZE = 1 << 10
MAX_PIECE_SIZE = 1 << 24
DEFAULT_PIECE_SIZE = 1 << 16
MAX_META_BLOB = 1024
TAG_LEN = 16  # AES-GCM tag appended to each piece of an encrypted share


class Flags(enum.IntFlag):
    """Manifest flag bits (u8); any other bit set is refused."""

    NONE = 0
    ENCRYPTED = 0x01
    LIVE = 0x02


_KNOWN_FLAGS = Flags.ENCRYPTED | Flags.LIVE


def live_hash_name(publisher: bytes, stream_name: str) -> bytes:
    """hash_name of a live stream: SHA-256(``peersm/live/v1`` || publisher key || UTF-8 stream name)."""
    return hashlib.sha256(LIVE_NAME_PREFIX + publisher + stream_name.encode("utf-8")).digest()


def pieces_for(size: int, piece_size: int) -> int:
    return -(-size // piece_size)


def _is_mime(text: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in text)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A signed manifest.  Build with :func:`sign_manifest`, parse with :func:`parse_manifest`."""

    size: int
    piece_size: int
    piece_count: int
    root: bytes
    publisher: bytes
    flags: Flags
    salt: bytes
    created_day: int = 0  # days since 1970-01-01 UTC; 0 = not given
    name: str = ""  # plain shares only
    mime: str = ""  # plain shares only
    meta: bytes = b""  # encrypted metadata, encrypted shares only
    signature: bytes = field(default=b"\x00" * ED25519_SIG_LEN, repr=False)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        def bad(why: str) -> ManifestError:
            return ManifestError(f"manifest: {why}")

        if not isinstance(self.flags, Flags) or self.flags & ~_KNOWN_FLAGS:
            raise bad("unknown flag bits")
        ps = self.piece_size
        if not (MIN_PIECE_SIZE <= ps <= MAX_PIECE_SIZE) or ps & (ps - 1):
            raise bad(f"piece size {ps} is not a power of two in [{MIN_PIECE_SIZE}, {MAX_PIECE_SIZE}]")
        if not 0 <= self.size < 1 << 64 or not 0 <= self.piece_count <= MAX_PIECES:
            raise bad("size or piece count out of range")
        if len(self.root) != HASH_LEN or len(self.salt) != SALT_LEN:
            raise bad("root or salt has the wrong length")
        if len(self.publisher) != ED25519_KEY_LEN or len(self.signature) != ED25519_SIG_LEN:
            raise bad("publisher key or signature has the wrong length")
        if not 0 <= self.created_day < 1 << 32:
            raise bad("creation day out of range")
        try:
            name_len = len(self.name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise bad("name is not valid Unicode") from exc
        if name_len > 255 or "\x00" in self.name:
            raise bad("name longer than 255 bytes or containing NUL")
        if len(self.mime) > 255 or not _is_mime(self.mime):
            raise bad("MIME type must be printable ASCII, at most 255 characters")
        if Flags.LIVE in self.flags:
            if self.size or self.piece_count or self.root != bytes(HASH_LEN):
                raise bad("a live descriptor has size 0, no pieces and a zero root")
            if Flags.ENCRYPTED in self.flags or not self.name:
                raise bad("a live descriptor is plain and names its stream")
        elif self.piece_count != pieces_for(self.size, ps):
            raise bad(f"{self.piece_count} pieces do not cover {self.size} bytes in pieces of {ps}")
        elif self.piece_count == 0 and self.root != EMPTY_ROOT:
            raise bad("an empty share has the empty-tree root")
        if Flags.ENCRYPTED in self.flags:
            if self.name or self.mime:
                raise bad("an encrypted share keeps its name and MIME type in encrypted metadata")
            if not 28 <= len(self.meta) <= MAX_META_BLOB:
                raise bad("encrypted metadata missing or too long")
        elif self.meta:
            raise bad("a plain share has no encrypted metadata")

    @property
    def encrypted(self) -> bool:
        return Flags.ENCRYPTED in self.flags

    @property
    def live(self) -> bool:
        return Flags.LIVE in self.flags

    def body(self) -> bytes:
        """The signed part: everything but the signature."""
        w = Writer().push_u8(MANIFEST_VERSION).push_u8(int(self.flags))
        w.push_u64(self.size).push_u32(self.piece_size).push_u32(self.piece_count)
        w.push_bytes(self.root).push_bytes(self.publisher).push_bytes(self.salt).push_u32(self.created_day)
        if self.encrypted:
            w.push_var16(self.meta)
        else:
            w.push_var8(self.name.encode("utf-8")).push_var8(self.mime.encode("ascii"))
        return w.getvalue()

    def encode(self) -> bytes:
        return self.body() + self.signature

    @property
    def hash_name(self) -> bytes:
        if self.live:
            return live_hash_name(self.publisher, self.name)
        return hashlib.sha256(self.encode()).digest()

    def stored_piece_len(self, index: int) -> int:
        """Length of stored piece ``index``: plaintext length, plus the GCM tag when encrypted."""
        if not 0 <= index < self.piece_count:
            raise UsageError(f"piece {index} outside a share of {self.piece_count} pieces")
        plain = self.piece_size if index < self.piece_count - 1 else self.size - index * self.piece_size
        return plain + (TAG_LEN if self.encrypted else 0)

    def verify_signature(self) -> None:
        try:
            verify(self.publisher, MANIFEST_CONTEXT, self.body(), self.signature)
        except CryptoError as exc:
            raise ManifestSignatureError("manifest signature does not verify") from exc

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse (not verify) a signed manifest; ManifestError or UnknownVersion on bad bytes."""
        r = Reader(data)
        try:
            version = r.pull_u8()
        except WireError as exc:
            raise ManifestError("empty manifest") from exc
        if version != MANIFEST_VERSION:
            raise UnknownVersion(f"manifest version {version} is unknown")
        try:
            flags_raw = r.pull_u8()
            if flags_raw & ~int(_KNOWN_FLAGS):
                raise ManifestError(f"manifest: unknown flag bits {flags_raw:#04x}")
            flags = Flags(flags_raw)
            size, piece_size, piece_count = r.pull_u64(), r.pull_u32(), r.pull_u32()
            root, publisher, salt = (
                r.pull_bytes(HASH_LEN),
                r.pull_bytes(ED25519_KEY_LEN),
                r.pull_bytes(SALT_LEN),
            )
            created_day = r.pull_u32()
            name, mime, meta = "", "", b""
            if Flags.ENCRYPTED in flags:
                meta = r.pull_var16()
            else:
                name = r.pull_var8().decode("utf-8")
                mime = r.pull_var8().decode("ascii")
            signature = r.pull_bytes(ED25519_SIG_LEN)
            r.expect_end("manifest")
        except ManifestError:
            raise
        except (WireError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest: {exc}") from exc
        return cls(
            size,
            piece_size,
            piece_count,
            root,
            publisher,
            flags,
            salt,
            created_day,
            name,
            mime,
            meta,
            signature,
        )


def parse_manifest(data: bytes, expected_hash: bytes | None = None) -> Manifest:
    """Parse and verify a signed manifest (and, if given, that it is the one named ``expected_hash``)."""
    m = Manifest.decode(data)
    m.verify_signature()
    if expected_hash is not None and m.hash_name != expected_hash:
        raise HashMismatch("manifest is not the one named by the requested hash_name")
    return m


def sign_manifest(unsigned: Manifest, key: SigningKey) -> Manifest:
    """Return ``unsigned`` signed by ``key`` (which must be its publisher key)."""
    if key.public != unsigned.publisher:
        raise UsageError("the manifest must be signed by its own publisher key")
    return dataclasses.replace(unsigned, signature=key.sign(MANIFEST_CONTEXT, unsigned.body()))
