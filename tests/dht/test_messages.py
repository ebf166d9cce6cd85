"""dht.messages: RPC payload layouts, admission proofs, anti-amplification fitting (DESIGN §8)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.messages import (
    CONTACT_LEN,
    MAX_PAYLOAD,
    Contact,
    FindNode,
    FindValue,
    MsgType,
    Nodes,
    Ping,
    Pong,
    Proof,
    Reply,
    Request,
    Sample,
    Store,
    StoreAck,
    StoreStatus,
    Values,
    check_proof,
    fit_reply,
    make_proof,
    pack_values,
    request_type,
)
from dht.records import RecordKind
from peer.errors import CryptoError, UnknownVersion, WireError

from .helpers import identity

RNG = random.Random(5)
ALICE, BOB = identity(RNG), identity(RNG)

node_ids = st.binary(min_size=20, max_size=20)
contacts = st.builds(
    Contact,
    node_ids,
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.integers(1, 65535),
)
records = st.binary(min_size=1, max_size=300)
request_bodies = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, node_ids),
    st.builds(FindValue, st.sampled_from(list(RecordKind)), node_ids, st.integers(0, 65535)),
    st.builds(Store, st.binary(min_size=1, max_size=900)),
    st.builds(Sample, node_ids, st.integers(0, 65535)),
)
requests = st.builds(
    Request,
    node_ids,
    request_bodies,
    st.booleans(),
    st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    st.integers(0, 100),
)
proofs = st.one_of(
    st.none(), st.builds(Proof, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
)


@given(requests)
def test_request_roundtrip(req: Request) -> None:
    data = req.encode()
    assert Request.decode(data) == req
    assert request_type(data) is req.type


@given(st.binary(max_size=1200))
def test_request_decoder_only_raises_wire_errors(data: bytes) -> None:
    try:
        req = Request.decode(data)
    except WireError:
        return
    assert req.encode() == data


@given(
    node_ids,
    st.one_of(
        st.builds(lambda: (MsgType.PING, Pong())),
        st.builds(lambda c: (MsgType.FIND_NODE, Nodes(tuple(c))), st.lists(contacts, max_size=20)),
        st.builds(
            lambda c, r, o: (MsgType.FIND_VALUE, Values(tuple(c), tuple(r), o)),
            st.lists(contacts, max_size=5),
            st.lists(records, max_size=3),
            st.integers(0, 65535),
        ),
        st.builds(lambda s: (MsgType.STORE, StoreAck(s)), st.sampled_from(list(StoreStatus))),
    ),
    proofs,
    st.booleans(),
    st.booleans(),
)
def test_reply_roundtrip(
    responder: bytes, typed: tuple[MsgType, object], proof: Proof | None, verified: bool, truncated: bool
) -> None:
    type_, body = typed
    reply = Reply(responder, body, proof, verified, truncated)  # type: ignore[arg-type]
    assert Reply.decode(reply.encode(type_), type_) == reply


@given(st.binary(max_size=1200), st.sampled_from(list(MsgType)))
def test_reply_decoder_only_raises_wire_errors(data: bytes, type_: MsgType) -> None:
    try:
        reply = Reply.decode(data, type_)
    except WireError:
        return
    assert reply.encode(type_) == data


def test_reply_type_must_match() -> None:
    data = Reply(ALICE.node_id, Pong()).encode(MsgType.PING)
    with pytest.raises(WireError):
        Reply.decode(data, MsgType.FIND_NODE)


def test_unknown_version_refused() -> None:
    data = bytearray(Request(ALICE.node_id, Ping()).encode())
    data[0] = 7
    with pytest.raises(UnknownVersion):
        Request.decode(bytes(data))


def test_nonzero_padding_refused() -> None:
    data = Request(ALICE.node_id, Ping(), padding=4).encode()
    with pytest.raises(WireError):
        Request.decode(data[:-1] + b"\x01")


def test_oversized_payload_refused() -> None:
    with pytest.raises(WireError):
        Request.decode(Request(ALICE.node_id, Ping()).padded_to(MAX_PAYLOAD + 1).encode())


def test_proof_binds_node_id_key_and_challenge() -> None:
    nonce = bytes(range(16))
    proof = make_proof(BOB, ALICE.node_id, nonce)
    check_proof(proof, ALICE.node_id, nonce, BOB.node_id)
    with pytest.raises(CryptoError):  # another challenge
        check_proof(proof, ALICE.node_id, bytes(16), BOB.node_id)
    with pytest.raises(CryptoError):  # another challenger
        check_proof(proof, BOB.node_id, nonce, BOB.node_id)
    with pytest.raises(CryptoError):  # a NodeID the key does not hash to
        check_proof(proof, ALICE.node_id, nonce, ALICE.node_id)
    with pytest.raises(CryptoError):  # Bob's key, NodeID of Bob, signed by Alice
        forged = Proof(BOB.public, make_proof(ALICE, ALICE.node_id, nonce).signature)
        check_proof(forged, ALICE.node_id, nonce, BOB.node_id)


@given(
    st.lists(contacts, max_size=20),
    st.lists(records, max_size=10),
    proofs,
    st.integers(0, MAX_PAYLOAD),
    st.sampled_from([MsgType.FIND_VALUE, MsgType.SAMPLE]),
)
def test_fit_reply_never_exceeds_limit(
    cs: list[Contact], recs: list[bytes], proof: Proof | None, limit: int, type_: MsgType
) -> None:
    reply = Reply(ALICE.node_id, pack_values(tuple(cs), recs, 0, MAX_PAYLOAD - 119), proof)
    fitted = fit_reply(reply, type_, max(limit, 27))
    size = len(fitted.encode(type_))
    assert size <= max(limit, 27) or (fitted.proof is None and fitted.truncated and size <= 27)
    assert fitted == reply or fitted.truncated


@given(st.lists(records, min_size=1, max_size=30), st.lists(contacts, max_size=20))
def test_pack_values_pages_every_record_once(recs: list[bytes], cs: list[Contact]) -> None:
    budget = 1000
    seen: list[bytes] = []
    offset = 0
    first = True
    for _ in range(100):
        page = pack_values(tuple(cs) if first else (), recs, offset, budget)
        first = False
        assert len(page.records) >= 1
        assert 1 + CONTACT_LEN * len(page.contacts) + 3 + sum(2 + len(r) for r in page.records) <= budget
        seen.extend(page.records)
        if not page.next_offset:
            break
        assert page.next_offset > offset
        offset = page.next_offset
    assert seen == recs
