"""Merkle trees and proofs (storage/merkle.py) against the RFC 9162 §2.1.1 definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import UnknownVersion, WireError
from storage.errors import ProofError, ProofFormatError
from storage.merkle import EMPTY_ROOT, MerkleProof, MerkleTree, leaf_hash, node_hash, path_length


def rfc_mth(pieces: list[bytes]) -> bytes:
    """MTH(D[n]) written straight from RFC 9162 §2.1.1 (recursive split at the largest power of two < n)."""
    n = len(pieces)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + pieces[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc_mth(pieces[:k]) + rfc_mth(pieces[k:])).digest()


def pieces_of(n: int) -> list[bytes]:
    return [bytes([i % 256]) * (i % 7 + 1) for i in range(n)]


@pytest.mark.parametrize("n", [*range(0, 40), 63, 64, 65, 100, 127, 128, 129])
def test_root_matches_rfc_definition(n: int) -> None:
    pieces = pieces_of(n)
    tree = MerkleTree.from_leaves([leaf_hash(p) for p in pieces])
    assert tree.count == n
    assert tree.root == rfc_mth(pieces)


def test_empty_and_single() -> None:
    assert MerkleTree(b"").root == EMPTY_ROOT
    assert MerkleTree.from_leaves([leaf_hash(b"x")]).root == hashlib.sha256(b"\x00x").digest()


def test_rfc_example_shape_seven_leaves() -> None:
    # RFC 9162 §2.1.5: with 7 leaves, the proof of d0 is [b, h, l] and of d6 is [k, i].
    pieces = pieces_of(7)
    lv = [leaf_hash(p) for p in pieces]
    tree = MerkleTree.from_leaves(lv)
    g, h, i = node_hash(lv[0], lv[1]), node_hash(lv[2], lv[3]), node_hash(lv[4], lv[5])
    k = node_hash(g, h)
    l = node_hash(i, lv[6])  # noqa: E741 - the RFC's name
    assert tree.proof(0).path == (lv[1], h, l)
    assert tree.proof(6).path == (i, k)
    assert tree.proof(6).root_for(lv[6]) == tree.root


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 33])
def test_every_proof_verifies_and_nothing_else_does(n: int) -> None:
    pieces = pieces_of(n)
    tree = MerkleTree.from_leaves([leaf_hash(p) for p in pieces])
    for idx, piece in enumerate(pieces):
        proof = tree.proof(idx)
        assert len(proof.path) == path_length(idx, n)
        proof.verify(piece, tree.root)
        assert MerkleProof.decode(proof.encode()) == proof
        with pytest.raises(ProofError):
            proof.verify(piece + b"!", tree.root)
        if proof.path:
            forged = MerkleProof(idx, n, (bytes(32), *proof.path[1:]))
            with pytest.raises(ProofError):
                forged.verify(piece, tree.root)
        other = (idx + 1) % n
        if other != idx:
            with pytest.raises(ProofError):
                tree.proof(other).verify(piece, tree.root)


def test_proof_shape_is_checked() -> None:
    tree = MerkleTree.from_leaves([leaf_hash(p) for p in pieces_of(5)])
    proof = tree.proof(4)
    with pytest.raises(ProofError):
        MerkleProof(4, 5, (*proof.path, bytes(32))).root_for(leaf_hash(b""))
    with pytest.raises(ProofFormatError):
        MerkleProof.decode(MerkleProof(4, 5, (*proof.path, bytes(32))).encode())
    with pytest.raises(ProofFormatError):
        MerkleProof(5, 5, ())
    with pytest.raises(UnknownVersion):
        MerkleProof.decode(b"\x02" + proof.encode()[1:])
    with pytest.raises(ProofFormatError):
        MerkleProof.decode(proof.encode()[:-1])
    with pytest.raises(ProofFormatError):
        MerkleProof.decode(proof.encode() + b"\x00")


@st.composite
def proofs(draw: st.DrawFn) -> MerkleProof:
    count = draw(st.integers(1, 0xFFFF_FFFF))
    index = draw(st.integers(0, count - 1))
    n = path_length(index, count)
    path = tuple(draw(st.lists(st.binary(min_size=32, max_size=32), min_size=n, max_size=n)))
    return MerkleProof(index, count, path)


@given(proofs())
def test_proof_round_trip(proof: MerkleProof) -> None:
    raw = proof.encode()
    assert MerkleProof.decode(raw) == proof
    assert MerkleProof.decode(raw).encode() == raw


@given(st.binary(max_size=600))
def test_proof_garbage_gives_typed_error(data: bytes) -> None:
    try:
        proof = MerkleProof.decode(data)
    except WireError:
        return
    assert proof.encode() == data  # anything accepted is canonical


@pytest.mark.parametrize("n", [*range(0, 20), 63, 64, 65, 127, 128, 129, 1025])
def test_encoded_proofs_equal_each_proof_encoded(n: int) -> None:
    tree = MerkleTree.from_leaves([leaf_hash(p) for p in pieces_of(n)])
    assert list(tree.encoded_proofs()) == [tree.proof(i).encode() for i in range(n)]
