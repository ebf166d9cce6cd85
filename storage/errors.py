"""Typed errors of the content store (DESIGN §7, §9; docs/storage.md "Errors").

Every class here subclasses one of :mod:`peer.errors`, so callers can branch on
``kind``/``retry`` or on the base class:

* bytes that do not parse (manifest, proof, live piece, link, metadata) raise a
  :class:`~peer.errors.WireError` subclass; an unknown version byte raises
  :class:`~peer.errors.UnknownVersion`;
* content that parses but does not verify (signature, Merkle proof, piece, hash,
  AEAD tag) raises an :class:`~peer.errors.IntegrityError` subclass;
* the store itself (disk full, I/O, missing share or piece) raises a
  :class:`~peer.errors.StorageError` subclass.
"""

from __future__ import annotations

from peer.errors import IntegrityError, Retry, StorageError, UsageError, WireError


class ManifestError(WireError):
    """A manifest that does not parse or breaks a field rule (docs/formats.md §2)."""

    kind = "manifest"


class ManifestSignatureError(IntegrityError):
    """A well-formed manifest whose publisher signature does not verify."""

    kind = "manifest-signature"


class HashMismatch(IntegrityError):
    """Bytes whose SHA-256 is not the hash_name they were fetched for."""

    kind = "hash-mismatch"


class ProofFormatError(WireError):
    """A Merkle proof that does not parse (docs/formats.md §4)."""

    kind = "proof-format"


class ProofError(IntegrityError):
    """A Merkle proof that does not lead to the manifest's root."""

    kind = "proof"


class PieceError(IntegrityError):
    """One or more pieces of a batch did not verify; nothing of the batch was stored.

    ``bad`` maps each rejected piece index to the reason, so that the caller can
    blame the source and resubmit the good pieces.
    """

    kind = "piece"

    def __init__(self, message: str, bad: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.bad: dict[int, str] = dict(bad or {})


class LivePieceError(WireError):
    """A live-stream piece that does not parse (docs/formats.md §5)."""

    kind = "live-piece"


class LiveVerifyError(IntegrityError):
    """A live-stream piece with a bad signature, a foreign hash_name or a stale index."""

    kind = "live-verify"


class LinkError(WireError):
    """A share link that does not parse (docs/formats.md §1)."""

    kind = "link"


class MetadataError(WireError):
    """Encrypted metadata whose plaintext does not parse (docs/formats.md §3)."""

    kind = "metadata"


class DecryptError(IntegrityError):
    """AES-GCM authentication failed: wrong key, or tampered ciphertext."""

    kind = "decrypt"


class KeyRequired(UsageError):
    """The operation needs the share's link key and none was given or stored."""

    kind = "key-required"


class DiskFullError(StorageError):
    """The disk (or the store's quota) is full; nothing of the failed batch was kept.

    Retry later, once space has been freed (remove a share, raise the quota).
    """

    kind = "disk-full"
    retry = Retry.LATER


class StoreWriteError(StorageError):
    """SQLite could not write (I/O error or a file-size limit); the batch was rolled back."""

    kind = "store-write"
    retry = Retry.LATER


class ShareNotFound(StorageError):
    """No share with this hash_name in the store."""

    kind = "share-not-found"
    retry = Retry.NEVER


class PieceMissing(StorageError):
    """The share is known but the piece (or some piece of a range) is not stored."""

    kind = "piece-missing"
    retry = Retry.LATER


class CorruptPiece(IntegrityError):
    """A stored piece failed re-verification on read (bit rot); it was dropped so it is fetched again."""

    kind = "corrupt-piece"


class SourceChanged(StorageError):
    """The file being imported changed size while it was read."""

    kind = "source-changed"
    retry = Retry.NEVER


class SchemaError(StorageError):
    """The database was written by a newer peersm (unknown ``user_version``) or is not ours."""

    kind = "schema"
    retry = Retry.NEVER
