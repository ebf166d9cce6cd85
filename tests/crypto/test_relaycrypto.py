"""tor1 relay crypto (tor-spec §6.1) against C tor's vector, onion round trips, SENDME v1 digests."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.kdf import KeyMaterial
from peer.crypto.relaycrypto import (
    RELAY_PAYLOAD_LEN,
    RelayCrypto,
    originate_forward,
    receive_backward,
    sendme_v1_digest_matches,
)
from peer.errors import UsageError
from tests.crypto._support import load_vector

V = load_vector("tor1_cell_crypt.json")
HOP_KEYS = [KeyMaterial.from_bytes(k.encode("ascii")) for k in V["hop_keys_ascii"]]
EXPECTED = {c["cell"]: bytes.fromhex(c["hex"]) for c in V["cells"]}
N_CELLS = max(EXPECTED) + 1


def _mirror(km: KeyMaterial) -> KeyMaterial:
    """Swap the directions, so the backward code path runs on the forward keys."""
    return KeyMaterial(df=km.db, db=km.df, kf=km.kb, kb=km.kf, kh=km.kh)


def _vector_plaintexts() -> list[bytes]:
    """The plaintext bodies of the vector: DATA on stream 1, 498 bytes from one SHAKE-256 stream."""
    stream = hashlib.shake_256(V["xof_seed_ascii"].encode("ascii")).digest(498 * N_CELLS)
    header = bytes([2, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0xF2])
    return [header + stream[498 * n : 498 * (n + 1)] for n in range(N_CELLS)]


def test_vector_is_complete() -> None:
    assert sorted(EXPECTED) == [0, 1, 2, 10, 20, 30, 40, 50]
    assert all(len(k.encode("ascii")) == 92 for k in V["hop_keys_ascii"])


def test_tor_vector_forward() -> None:
    """OP seals for hop 3 and encrypts 3, 2, 1: matches tor; then each OR peels and only hop 3 recognizes."""
    op_path = [RelayCrypto(k) for k in HOP_KEYS]
    ors = [RelayCrypto(k) for k in HOP_KEYS]
    checked = 0
    for n, plain in enumerate(_vector_plaintexts()):
        cell = originate_forward(op_path, plain)
        if n in EXPECTED:
            assert cell == EXPECTED[n], f"cell {n}"
            checked += 1
        for i, hop in enumerate(ors):
            cell = hop.decrypt_forward(cell)
            assert hop.recognize_forward(cell) == (i == 2), (n, i)
        assert cell[:5] + cell[9:] == plain[:5] + plain[9:]
        assert cell[5:9] == op_path[2].forward_digest()[:4]
    assert checked == len(EXPECTED)
    assert ors[2].forward_digest() == op_path[2].forward_digest()


def test_tor_vector_backward_code_path() -> None:
    """With directions swapped the backward functions must reproduce tor's bytes, and the OP must read them."""
    mirrored = [_mirror(k) for k in HOP_KEYS]
    ors = [RelayCrypto(k) for k in mirrored]
    op_path = [RelayCrypto(k) for k in mirrored]
    checked = 0
    for n, plain in enumerate(_vector_plaintexts()):
        cell = ors[2].seal_backward(plain)
        for hop in reversed(ors):
            cell = hop.encrypt_backward(cell)
        if n in EXPECTED:
            assert cell == EXPECTED[n], f"cell {n}"
            checked += 1
        got = receive_backward(op_path, cell)
        assert got is not None
        index, opened = got
        assert index == 2
        assert opened[:5] + opened[9:] == plain[:5] + plain[9:]
    assert checked == len(EXPECTED)
    assert op_path[2].backward_digest() == ors[2].backward_digest()


def _random_payload(rng: random.Random, command: int = 2) -> bytes:
    body = rng.randbytes(RELAY_PAYLOAD_LEN - 11)
    return bytes([command, 0, 0]) + rng.randbytes(2) + bytes(4) + (len(body)).to_bytes(2, "big") + body


def _random_keys(rng: random.Random) -> KeyMaterial:
    return KeyMaterial.from_bytes(rng.randbytes(92))


def test_three_hop_onion_both_directions_many_cells() -> None:
    rng = random.Random(1)
    keys = [_random_keys(rng) for _ in range(3)]
    op_path = [RelayCrypto(k) for k in keys]
    ors = [RelayCrypto(k) for k in keys]
    for step in range(300):
        target = rng.randrange(3)
        plain = _random_payload(rng)
        # forward: OP -> hop `target`
        cell = originate_forward(op_path[: target + 1], plain)
        for i in range(target + 1):
            cell = ors[i].decrypt_forward(cell)
            recognized = ors[i].recognize_forward(cell)
            assert recognized == (i == target), (step, i)
        assert cell[:5] + cell[9:] == plain[:5] + plain[9:]
        # backward: hop `target` -> OP
        reply = _random_payload(rng)
        cell = ors[target].seal_backward(reply)
        for i in range(target, -1, -1):
            cell = ors[i].encrypt_backward(cell)
        got = receive_backward(op_path, cell)
        assert got is not None
        assert got[0] == target
        assert got[1][:5] + got[1][9:] == reply[:5] + reply[9:]
    for op_hop, or_hop in zip(op_path, ors, strict=True):
        assert op_hop.forward_digest() == or_hop.forward_digest()
        assert op_hop.backward_digest() == or_hop.backward_digest()


@pytest.mark.parametrize("position", [1, 2, 5, 8, 0, 10, 300, 508])
def test_flipped_bit_not_recognized_and_digest_untouched(position: int) -> None:
    rng = random.Random(position)
    keys = _random_keys(rng)
    op, hop = RelayCrypto(keys), RelayCrypto(keys)
    for _ in range(3):
        plain = op.seal_forward(_random_payload(rng))
        bad = bytearray(plain)
        bad[position] ^= 0x10
        before = hop.forward_digest()
        assert not hop.recognize_forward(bytes(bad))
        assert hop.forward_digest() == before
        assert hop.recognize_forward(plain)
        assert hop.forward_digest() == op.forward_digest()


def test_flipped_ciphertext_bit_breaks_recognition_at_exit() -> None:
    rng = random.Random(2)
    keys = [_random_keys(rng) for _ in range(3)]
    op_path = [RelayCrypto(k) for k in keys]
    ors = [RelayCrypto(k) for k in keys]
    cell = bytearray(originate_forward(op_path, _random_payload(rng)))
    cell[100] ^= 1
    out = bytes(cell)
    before = ors[2].forward_digest()
    for hop in ors:
        out = hop.decrypt_forward(out)
        assert not hop.recognize_forward(out)
    assert ors[2].forward_digest() == before


def test_unrecognized_backward_cell() -> None:
    rng = random.Random(3)
    op_path = [RelayCrypto(_random_keys(rng)) for _ in range(3)]
    digests = [h.backward_digest() for h in op_path]
    assert receive_backward(op_path, rng.randbytes(RELAY_PAYLOAD_LEN)) is None
    assert [h.backward_digest() for h in op_path] == digests


def test_sendme_v1_digests_match_both_directions() -> None:
    """The packager remembers the digest after every 100th DATA cell; the receiver sends it in SENDME v1."""
    rng = random.Random(4)
    keys = [_random_keys(rng) for _ in range(3)]
    op_path = [RelayCrypto(k) for k in keys]
    ors = [RelayCrypto(k) for k in keys]
    op_remembered, exit_sent = [], []
    for n in range(1, 251):
        cell = originate_forward(op_path, _random_payload(rng))
        if n % 100 == 0:
            op_remembered.append(op_path[2].forward_digest())
        for hop in ors:
            cell = hop.decrypt_forward(cell)
            if hop.recognize_forward(cell) and n % 100 == 0:
                exit_sent.append(hop.forward_digest())
    assert len(op_remembered) == 2
    assert all(sendme_v1_digest_matches(a, b) for a, b in zip(op_remembered, exit_sent, strict=True))
    assert op_remembered[0] != op_remembered[1]

    exit_remembered, op_sent = [], []
    for n in range(1, 101):
        cell = ors[2].seal_backward(_random_payload(rng))
        if n % 100 == 0:
            exit_remembered.append(ors[2].backward_digest())
        for hop in reversed(ors):
            cell = hop.encrypt_backward(cell)
        got = receive_backward(op_path, cell)
        assert got is not None and got[0] == 2
        if n % 100 == 0:
            op_sent.append(op_path[2].backward_digest())
    assert exit_remembered == op_sent


def test_running_digest_is_sha1_of_seed_and_cells() -> None:
    """First principles: the running digest is SHA-1(Df | cell_1 | cell_2 | ...) with Digest fields zeroed."""
    rng = random.Random(5)
    keys = _random_keys(rng)
    op = RelayCrypto(keys)
    reference = hashlib.sha1(keys.df)
    for _ in range(5):
        plain = _random_payload(rng)
        sealed = op.seal_forward(plain)
        reference.update(plain)
        assert sealed[5:9] == reference.digest()[:4]
        assert op.forward_digest() == reference.digest()


def test_sendme_v1_digest_matches() -> None:
    a = bytes(range(20))
    assert sendme_v1_digest_matches(a, bytes(range(20)))
    assert not sendme_v1_digest_matches(a, bytes(range(1, 21)))
    assert not sendme_v1_digest_matches(a, a[:19])
    assert not sendme_v1_digest_matches(a[:19], a[:19])


def test_seal_refuses_bad_input() -> None:
    rc = RelayCrypto(_random_keys(random.Random(6)))
    plain = _random_payload(random.Random(7))
    with pytest.raises(UsageError):
        rc.seal_forward(plain[:-1])
    with pytest.raises(UsageError):
        rc.seal_forward(plain[:1] + b"\x00\x01" + plain[3:])
    with pytest.raises(UsageError):
        rc.seal_backward(plain[:5] + b"\x00\x00\x00\x01" + plain[9:])
    with pytest.raises(UsageError):
        originate_forward([], plain)


def test_repr_hides_keys() -> None:
    keys = _random_keys(random.Random(8))
    text = repr(RelayCrypto(keys))
    assert keys.kf.hex() not in text and keys.df.hex() not in text


@given(data=st.binary(min_size=RELAY_PAYLOAD_LEN, max_size=RELAY_PAYLOAD_LEN))
def test_random_payload_not_recognized_without_commit(data: bytes) -> None:
    """Random bytes are (almost surely) not recognized, and never move the digest when they are not."""
    hop = RelayCrypto(HOP_KEYS[0])
    before = hop.forward_digest()
    if not hop.recognize_forward(data):
        assert hop.forward_digest() == before
