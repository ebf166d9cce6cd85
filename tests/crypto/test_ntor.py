"""ntor (tor-spec §5.1.4) against Arti's fixed-key vector, plus round trips and failures."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.kdf import kdf_rfc5869
from peer.crypto.keys import X25519KeyPair
from peer.crypto.ntor import (
    M_EXPAND,
    ONIONSKIN_LEN,
    PROTOID,
    REPLY_LEN,
    T_KEY,
    T_MAC,
    T_VERIFY,
    NtorClientState,
    ntor_client_finish,
    ntor_client_finish_keyseed,
    ntor_client_start,
    ntor_server,
    ntor_server_keyseed,
)
from peer.errors import HandshakeError, UsageError
from tests.crypto._support import fixed_randbytes, load_vector

V = load_vector("ntor.json")
B = X25519KeyPair.from_private(bytes.fromhex(V["b"]))
NODE_ID = bytes.fromhex(V["id"])
_FIXED_RNG = random.Random(0x6E746F72)
SERVER_ID = _FIXED_RNG.randbytes(20)
SERVER_KEY = X25519KeyPair.generate(_FIXED_RNG.randbytes)


def test_constants() -> None:
    assert PROTOID == b"ntor-curve25519-sha256-1"
    assert T_MAC == b"ntor-curve25519-sha256-1:mac"
    assert T_KEY == b"ntor-curve25519-sha256-1:key_extract"
    assert T_VERIFY == b"ntor-curve25519-sha256-1:verify"
    assert M_EXPAND == b"ntor-curve25519-sha256-1:key_expand"
    assert (ONIONSKIN_LEN, REPLY_LEN) == (84, 64)


def test_arti_vector_client_and_server() -> None:
    assert B.public.hex() == V["B"]
    x = bytes.fromhex(V["x"])
    y = bytes.fromhex(V["y"])
    keys = bytes.fromhex(V["keys"])

    state, onionskin = ntor_client_start(NODE_ID, B.public, fixed_randbytes(x))
    assert onionskin.hex() == V["client_handshake"]
    assert state.x.public.hex() == V["X"]

    reply, server_seed = ntor_server_keyseed(onionskin, NODE_ID, {B.public: B}, fixed_randbytes(y))
    assert reply.hex() == V["server_handshake"]
    assert reply[:32].hex() == V["Y"]

    client_seed = ntor_client_finish_keyseed(state, reply)
    assert client_seed == server_seed
    assert kdf_rfc5869(client_seed, M_EXPAND, len(keys)) == keys

    # The KeyMaterial path gives the same keys in tor-spec §5.2.2 order.
    km_client = ntor_client_finish(state, reply)
    _, km_server = ntor_server(onionskin, NODE_ID, {B.public: B}, fixed_randbytes(y))
    assert km_client == km_server
    assert (km_client.df, km_client.db, km_client.kf, km_client.kb) == (
        keys[0:20],
        keys[20:40],
        keys[40:56],
        keys[56:72],
    )


def _handshake(seed: int, server_keys: dict[bytes, X25519KeyPair], client_key: bytes) -> None:
    rng = random.Random(seed)
    state, onionskin = ntor_client_start(SERVER_ID, client_key, rng.randbytes)
    reply, server_km = ntor_server(onionskin, SERVER_ID, server_keys, rng.randbytes)
    assert ntor_client_finish(state, reply) == server_km


@pytest.mark.parametrize("seed", range(5))
def test_round_trip(seed: int) -> None:
    _handshake(seed, {SERVER_KEY.public: SERVER_KEY}, SERVER_KEY.public)


def test_rotated_keys_both_accepted() -> None:
    new = X25519KeyPair.generate(random.Random(10).randbytes)
    keys = {SERVER_KEY.public: SERVER_KEY, new.public: new}
    _handshake(11, keys, SERVER_KEY.public)
    _handshake(12, keys, new.public)


def test_wrong_node_id_refused() -> None:
    _, onionskin = ntor_client_start(bytes(20), SERVER_KEY.public, random.Random(1).randbytes)
    with pytest.raises(HandshakeError, match="another node"):
        ntor_server(onionskin, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, random.Random(2).randbytes)


def test_unknown_key_id_refused() -> None:
    other = X25519KeyPair.generate(random.Random(3).randbytes)
    _, onionskin = ntor_client_start(SERVER_ID, other.public, random.Random(4).randbytes)
    with pytest.raises(HandshakeError, match="unknown onion key"):
        ntor_server(onionskin, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, random.Random(5).randbytes)


def _client_and_reply(seed: int) -> tuple[NtorClientState, bytes]:
    rng = random.Random(seed)
    state, onionskin = ntor_client_start(SERVER_ID, SERVER_KEY.public, rng.randbytes)
    reply, _ = ntor_server(onionskin, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, rng.randbytes)
    return state, reply


@pytest.mark.parametrize("position", [0, 17, 31, 32, 45, 63])
def test_tampered_reply_refused(position: int) -> None:
    state, reply = _client_and_reply(20 + position)
    ntor_client_finish(state, reply)  # the untampered reply is fine
    bad = bytearray(reply)
    bad[position] ^= 0x04
    with pytest.raises(HandshakeError):
        ntor_client_finish(state, bytes(bad))


def test_reply_from_other_server_key_refused() -> None:
    """A server holding another onion key (a man in the middle) cannot produce a valid AUTH."""
    rng = random.Random(30)
    state, onionskin = ntor_client_start(SERVER_ID, SERVER_KEY.public, rng.randbytes)
    mitm = X25519KeyPair.generate(rng.randbytes)
    forged = onionskin[:20] + mitm.public + onionskin[52:]
    reply, _ = ntor_server(forged, SERVER_ID, {mitm.public: mitm}, rng.randbytes)
    with pytest.raises(HandshakeError, match="AUTH"):
        ntor_client_finish(state, reply)


def test_degenerate_points_refused() -> None:
    rng = random.Random(40)
    onionskin = SERVER_ID + SERVER_KEY.public + bytes(32)  # X = 0
    with pytest.raises(HandshakeError, match="degenerate"):
        ntor_server(onionskin, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, rng.randbytes)
    state, _ = ntor_client_start(SERVER_ID, SERVER_KEY.public, rng.randbytes)
    with pytest.raises(HandshakeError, match="degenerate"):
        ntor_client_finish(state, bytes(64))  # Y = 0


def test_bad_lengths() -> None:
    rng = random.Random(50)
    state, onionskin = ntor_client_start(SERVER_ID, SERVER_KEY.public, rng.randbytes)
    with pytest.raises(HandshakeError):
        ntor_server(onionskin[:-1], SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, rng.randbytes)
    with pytest.raises(HandshakeError):
        ntor_client_finish(state, bytes(65))
    with pytest.raises(UsageError):
        ntor_client_start(bytes(32), SERVER_KEY.public, rng.randbytes)
    with pytest.raises(UsageError):
        ntor_client_start(SERVER_ID, bytes(31), rng.randbytes)


def test_state_repr_hides_ephemeral_key() -> None:
    state, _ = ntor_client_start(SERVER_ID, SERVER_KEY.public, random.Random(60).randbytes)
    assert state.x.private.hex() not in repr(state)


@given(data=st.binary(max_size=120))
def test_garbage_onionskin_is_a_handshake_error(data: bytes) -> None:
    try:
        reply, _ = ntor_server(data, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, random.Random(7).randbytes)
    except HandshakeError:
        return
    assert len(reply) == REPLY_LEN  # only reachable with our own ID and key in the data


@given(prefix=st.binary(min_size=32, max_size=32))
def test_garbage_onionskin_with_right_ids(prefix: bytes) -> None:
    """Any X with our ID and key either completes or is refused as degenerate, nothing else."""
    onionskin = SERVER_ID + SERVER_KEY.public + prefix
    try:
        reply, _ = ntor_server(
            onionskin, SERVER_ID, {SERVER_KEY.public: SERVER_KEY}, random.Random(8).randbytes
        )
    except HandshakeError:
        return
    assert len(reply) == REPLY_LEN


@given(reply=st.binary(max_size=80))
def test_garbage_reply_is_refused(reply: bytes) -> None:
    state = NtorClientState(SERVER_ID, SERVER_KEY.public, X25519KeyPair.generate(random.Random(9).randbytes))
    with pytest.raises(HandshakeError):
        ntor_client_finish(state, reply)
