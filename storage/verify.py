"""Piece verification for the chunk store (DESIGN §7, §9; docs/storage.md "What is verified where").

Pure functions: ``verify_pieces`` checks pieces arriving from other peers against the manifest and
returns :class:`VerifiedPiece` values, the only thing ``ChunkStore.put_pieces`` stores (so a piece is
hashed once on its way in, and an unchecked one cannot reach the store); ``check_rows`` re-verifies
stored pieces as they are read; ``assemble`` cuts (and decrypts) a byte range out of verified pieces.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field

from peer.errors import StorageError, UsageError
from storage.encryption import PieceCipher
from storage.errors import PieceError, ProofError
from storage.manifest import Manifest
from storage.merkle import MerkleProof, leaf_hash

PieceItem = tuple[int, bytes, MerkleProof | bytes]
_MINT = object()  # held by verify_pieces only: the proof of origin of a VerifiedPiece


@dataclass(frozen=True, slots=True)
class VerifiedPiece:
    """A piece that led to its share's Merkle root; only :func:`verify_pieces` makes these.

    ``hash_name`` names the share it was checked against: the store takes it for that share only.
    """

    hash_name: bytes
    index: int
    leaf: bytes  # leaf hash of ``piece``
    piece: bytes = field(repr=False)  # as stored (ciphertext for encrypted shares)
    proof: bytes = field(repr=False)  # encoded MerkleProof
    mint: InitVar[object]

    def __post_init__(self, mint: object) -> None:
        if mint is not _MINT:
            raise UsageError("a VerifiedPiece comes from storage.verify.verify_pieces only")


def verify_pieces(manifest: Manifest, items: Iterable[PieceItem]) -> list[VerifiedPiece]:
    """Check each (index, piece, proof) against the manifest; PieceError naming every bad index.

    Returns the good pieces, first occurrence of an index only.
    """
    hash_name = manifest.hash_name
    good: dict[int, VerifiedPiece] = {}
    bad: dict[int, str] = {}
    for index, piece, raw_proof in items:
        try:
            proof = raw_proof if isinstance(raw_proof, MerkleProof) else MerkleProof.decode(raw_proof)
            if not 0 <= index < manifest.piece_count:
                raise ProofError("index outside the share")
            if proof.index != index or proof.count != manifest.piece_count:
                raise ProofError("proof is for another piece or another tree")
            if len(piece) != manifest.stored_piece_len(index):
                raise ProofError(f"piece has {len(piece)} bytes, wants {manifest.stored_piece_len(index)}")
            leaf = leaf_hash(piece)
            if proof.root_for(leaf) != manifest.root:
                raise ProofError("piece does not lead to the Merkle root")
        except (ProofError, StorageError, ValueError) as exc:  # ProofFormatError is a ValueError
            bad[index] = str(exc)
            continue
        if index not in good:  # a repeat: the first one stands
            good[index] = VerifiedPiece(hash_name, index, leaf, bytes(piece), proof.encode(), _MINT)
    if bad:
        raise PieceError(f"{len(bad)} piece(s) rejected, nothing of the batch stored: {sorted(bad)[:8]}", bad)
    return list(good.values())


def check_rows(
    rows: Sequence[sqlite3.Row], root: bytes | None
) -> tuple[dict[int, tuple[bytes, MerkleProof | None]], list[int]]:
    good: dict[int, tuple[bytes, MerkleProof | None]] = {}
    bad: list[int] = []
    for key, leaf, raw_proof, data in rows:
        index = key & 0xFFFF_FFFF
        try:
            actual = leaf_hash(data)
            if root is None:
                if actual != leaf:
                    raise ProofError("stored piece does not match its leaf hash")
                good[index] = (data, None)
            else:
                proof = MerkleProof.decode(raw_proof)
                if proof.root_for(actual) != root:
                    raise ProofError("stored piece no longer verifies")
                good[index] = (data, proof)
        except (ProofError, ValueError):
            bad.append(index)
    return good, bad


def assemble(
    pieces: dict[int, bytes], start: int, end: int, ps: int, cipher: PieceCipher | None
) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """The bytes of [start, end) up to the first missing piece (decrypted), and the missing ranges."""
    parts: list[bytes | memoryview] = []
    missing: list[tuple[int, int]] = []
    for i in range(start // ps, (end - 1) // ps + 1):
        a, b = max(start, i * ps), min(end, (i + 1) * ps)
        data = pieces.get(i)
        if data is None:
            if missing and missing[-1][1] == a:
                missing[-1] = (missing[-1][0], b)
            else:
                missing.append((a, b))
        elif not missing:
            plain = cipher.decrypt(i, data) if cipher else data
            parts.append(memoryview(plain)[a - i * ps : b - i * ps])
    return b"".join(parts), tuple(missing)
