"""Content store (DESIGN §7, §9): manifests, Merkle proofs, encrypted shares, share links, live pieces,
and the SQLite chunk store.  Byte layouts: docs/formats.md; store design: docs/storage.md."""

from storage.chunkstore import ChunkStore
from storage.live import LivePiece, LiveWindow
from storage.manifest import Flags, Manifest, live_hash_name, parse_manifest, sign_manifest
from storage.merkle import MerkleProof, MerkleTree, leaf_hash
from storage.sharelink import ShareLink
from storage.types import (
    Bitfield,
    ByteRange,
    DownloadInfo,
    DownloadState,
    ImportResult,
    Origin,
    PutResult,
    ShareInfo,
    StoreStats,
)
from storage.verify import VerifiedPiece, verify_pieces

__all__ = [
    "Bitfield",
    "ByteRange",
    "ChunkStore",
    "DownloadInfo",
    "DownloadState",
    "Flags",
    "ImportResult",
    "LivePiece",
    "LiveWindow",
    "Manifest",
    "MerkleProof",
    "MerkleTree",
    "Origin",
    "PutResult",
    "ShareInfo",
    "ShareLink",
    "StoreStats",
    "VerifiedPiece",
    "leaf_hash",
    "live_hash_name",
    "parse_manifest",
    "sign_manifest",
    "verify_pieces",
]
