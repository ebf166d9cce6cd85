"""Merkle trees over pieces, RFC 9162 §2.1 style (DESIGN §7; docs/formats.md §4).

leaf = SHA-256(0x00 || piece), node = SHA-256(0x01 || left || right); the tree over
n leaves splits at the largest power of two smaller than n and never duplicates
the last leaf.  Such a tree is the same as building it level by level, pairing
neighbours and *promoting* an odd last node unchanged to the next level; that is
how :class:`MerkleTree` stores it (one ``bytes`` blob per level, 32 bytes a node).

A proof for piece ``i`` lists the sibling hashes from the leaf level upward,
skipping levels where the node was promoted.  The empty tree's root is
SHA-256 of the empty string (RFC 9162 §2.1.1).

Sans-I/O: pure functions and frozen dataclasses only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from peer.errors import UnknownVersion, WireError
from peer.wire.buffer import Reader, Writer
from storage.errors import ProofError, ProofFormatError

HASH_LEN = 32
PROOF_VERSION = 1
MAX_PIECES = 0xFFFF_FFFF  # piece counts are u32 in every format
MAX_PATH = 32  # ceil(log2(2**32))
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"
_PROOF_HEADER = struct.Struct(">BIIB")  # version, index, count, path length (docs/formats.md §4)


def leaf_hash(piece: bytes | memoryview) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || piece)."""
    h = hashlib.sha256(_LEAF)
    h.update(piece)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE + left + right).digest()


def path_length(index: int, count: int) -> int:
    """Number of sibling hashes in the proof of leaf ``index`` in a tree of ``count`` leaves."""
    if not 0 <= index < count:
        raise ProofError(f"piece {index} is outside a tree of {count} pieces")
    n = 0
    while count > 1:
        if index ^ 1 < count:
            n += 1
        index >>= 1
        count = (count + 1) >> 1
    return n


def root_from_path(leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes:
    """Fold ``path`` into the root it proves for ``leaf`` at ``index``; raise ProofError on a bad shape."""
    if len(path) != path_length(index, count):
        raise ProofError(
            f"proof for piece {index} of {count} has {len(path)} hashes, wants {path_length(index, count)}"
        )
    node = leaf
    it = iter(path)
    while count > 1:
        if index & 1:
            node = node_hash(next(it), node)
        elif index + 1 < count:
            node = node_hash(node, next(it))
        index >>= 1
        count = (count + 1) >> 1
    return node


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """The audit path of one piece: its index, the tree size and the sibling hashes, leaf upward."""

    index: int
    count: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count <= MAX_PIECES:
            raise ProofFormatError(f"proof index {self.index} outside a tree of {self.count} pieces")
        if len(self.path) > MAX_PATH or any(len(h) != HASH_LEN for h in self.path):
            raise ProofFormatError("proof hashes must be 32 bytes, at most 32 of them")

    def encode(self) -> bytes:
        w = Writer().push_u8(PROOF_VERSION).push_u32(self.index).push_u32(self.count).push_u8(len(self.path))
        for h in self.path:
            w.push_bytes(h)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> MerkleProof:
        """Parse the v1 layout; raise ProofFormatError (or UnknownVersion) on anything else."""
        r = Reader(data)
        try:
            version = r.pull_u8()
        except WireError as exc:
            raise ProofFormatError("empty Merkle proof") from exc
        if version != PROOF_VERSION:
            raise UnknownVersion(f"Merkle proof version {version} is unknown")
        try:
            index, count, n = r.pull_u32(), r.pull_u32(), r.pull_u8()
            path = tuple(r.pull_bytes(HASH_LEN) for _ in range(n))
            r.expect_end("Merkle proof")
        except WireError as exc:
            raise ProofFormatError(f"bad Merkle proof: {exc}") from exc
        proof = cls(index, count, path)
        if n != path_length(index, count):
            raise ProofFormatError(f"proof for piece {index} of {count} has {n} hashes")
        return proof

    def root_for(self, leaf: bytes) -> bytes:
        return root_from_path(leaf, self.index, self.count, self.path)

    def verify(self, piece: bytes | memoryview, root: bytes) -> None:
        """Raise ProofError unless ``piece`` at ``self.index`` belongs to the tree with ``root``."""
        if self.root_for(leaf_hash(piece)) != root:
            raise ProofError(f"piece {self.index} does not lead to the Merkle root")


class MerkleTree:
    """A whole tree, level by level (level 0 = leaves), for computing the root and every proof."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: bytes | bytearray) -> None:
        """``leaves`` is the concatenation of the leaf hashes, in piece order."""
        if len(leaves) % HASH_LEN:
            raise ValueError("leaf blob is not a whole number of hashes")
        levels = [bytes(leaves)]
        while len(levels[-1]) > HASH_LEN:
            cur = levels[-1]
            n = len(cur) // HASH_LEN
            nxt = bytearray()
            for i in range(0, n - 1, 2):
                a = i * HASH_LEN
                nxt += hashlib.sha256(_NODE + cur[a : a + 2 * HASH_LEN]).digest()
            if n & 1:
                nxt += cur[(n - 1) * HASH_LEN :]
            levels.append(bytes(nxt))
        self._levels = levels

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MerkleTree:
        return cls(b"".join(leaves))

    @property
    def count(self) -> int:
        return len(self._levels[0]) // HASH_LEN

    @property
    def root(self) -> bytes:
        return self._levels[-1] if self.count else EMPTY_ROOT

    def proof(self, index: int) -> MerkleProof:
        count = self.count
        if not 0 <= index < count:
            raise ProofError(f"piece {index} is outside a tree of {count} pieces")
        path = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling * HASH_LEN < len(level):
                path.append(level[sibling * HASH_LEN : (sibling + 1) * HASH_LEN])
            i >>= 1
        return MerkleProof(index, count, tuple(path))

    def encoded_proofs(self) -> Iterator[bytes]:
        """``self.proof(i).encode()`` for every piece in order, without building the proof objects."""
        count = self.count
        levels = self._levels[:-1]
        for index in range(count):
            path = []
            i = index
            for level in levels:
                sibling = i ^ 1
                if sibling * HASH_LEN < len(level):
                    path.append(level[sibling * HASH_LEN : (sibling + 1) * HASH_LEN])
                i >>= 1
            yield _PROOF_HEADER.pack(PROOF_VERSION, index, count, len(path)) + b"".join(path)
