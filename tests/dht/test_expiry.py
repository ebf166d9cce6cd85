"""A DHT record at exactly its expiry (dht/records.py, dht/recordstore.py, peer/net/peerview.py).

The code's definition: a record is live while ``now < expiry`` (``validate`` refuses
``expiry <= now``).  So at ``expiry - 1`` it is accepted and returned; at ``expiry`` and after it
is refused when stored and no longer returned by the store, by sampling or by the peer view.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.keys import provider_key
from dht.records import (
    CLOCK_SKEW,
    MAX_TTL,
    InvalidRecord,
    PeerRecord,
    Record,
    RecordKind,
    decode_valid,
    validate,
)
from dht.recordstore import RecordStore, StoreResult
from peer.net.peerview import PeerView

from .helpers import NOW, identity, peer, provider

RNG = random.Random(77)
PUBLISHER = identity(RNG)
KEY = provider_key(b"expiring")
EXPIRY = int(NOW) + 600
RECORDS: dict[str, Record] = {
    "provider": provider(PUBLISHER, KEY, expiry=EXPIRY),
    "peer": peer(PUBLISHER, expiry=EXPIRY),
}
KINDS = sorted(RECORDS)


def put(store: RecordStore, rec: Record, now: float) -> StoreResult:
    return store.put(rec, rec.encode(), "127.5", now)


def stored(rec: Record) -> RecordStore:
    store = RecordStore(random.Random(1))
    assert put(store, rec, NOW) is StoreResult.STORED
    return store


@pytest.mark.parametrize("kind", KINDS)
def test_validate_accepts_before_expiry_and_refuses_at_it(kind: str) -> None:
    rec = RECORDS[kind]
    for now in (EXPIRY - 1, EXPIRY - 0.001):
        validate(rec, now)
        assert decode_valid(rec.encode(), now) == rec
    for now in (EXPIRY, EXPIRY + 0.001, EXPIRY + 1):
        with pytest.raises(InvalidRecord, match="expired"):
            validate(rec, now)
        with pytest.raises(InvalidRecord, match="expired"):
            decode_valid(rec.encode(), now)


@pytest.mark.parametrize("kind", KINDS)
def test_store_accepts_a_record_one_second_before_expiry_and_refuses_it_at_expiry(kind: str) -> None:
    rec = RECORDS[kind]
    live = RecordStore(random.Random(1))
    assert put(live, rec, EXPIRY - 1) is StoreResult.STORED
    assert [r for r, _ in live.get(rec.KIND, rec.dht_key, EXPIRY - 1)] == [rec]
    for now in (EXPIRY, EXPIRY + 1):
        late = RecordStore(random.Random(1))
        assert put(late, rec, now) is StoreResult.INVALID
        assert len(late) == 0 and late.stats.rejected_invalid == 1


@pytest.mark.parametrize("kind", KINDS)
def test_get_returns_a_record_until_expiry_minus_one_and_drops_it_at_expiry(kind: str) -> None:
    rec = RECORDS[kind]
    store = stored(rec)
    ((got, enc),) = store.get(rec.KIND, rec.dht_key, EXPIRY - 1)
    assert got == rec and enc == rec.encode()
    assert len(store) == 1
    assert store.get(rec.KIND, rec.dht_key, EXPIRY) == []
    assert len(store) == 0 and store.stats.expired == 1  # dropped, not only hidden
    assert store.get(rec.KIND, rec.dht_key, EXPIRY + 1) == []


def test_sample_returns_a_peer_record_until_expiry_minus_one_only() -> None:
    rec = RECORDS["peer"]
    assert isinstance(rec, PeerRecord)
    store = stored(rec)
    assert [r for r, _ in store.sample(RecordKind.PEER, rec.node_id, 16, EXPIRY - 1)] == [rec]
    assert store.sample(RecordKind.PEER, rec.node_id, 16, EXPIRY) == []


@pytest.mark.parametrize("kind", KINDS)
def test_expire_keeps_a_record_at_expiry_minus_one_and_drops_it_at_expiry(kind: str) -> None:
    rec = RECORDS[kind]
    store = stored(rec)
    assert store.expire(EXPIRY - 1) == 0 and len(store) == 1
    assert store.expire(EXPIRY) == 1 and len(store) == 0


def test_the_peer_view_agrees_with_the_store() -> None:
    rec = RECORDS["peer"]
    assert isinstance(rec, PeerRecord)
    assert PeerView(bytes(20)).add(rec, EXPIRY - 1)
    assert not PeerView(bytes(20)).add(rec, EXPIRY)
    view = PeerView(bytes(20))
    assert view.add(rec, NOW)
    view.expire(EXPIRY - 1)
    assert view.get(rec.node_id) == rec
    view.expire(EXPIRY)
    assert view.get(rec.node_id) is None and len(view) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_far_end_of_the_window_an_expiry_too_far_ahead(kind: str) -> None:
    """The other bound: an expiry at most max_ttl + clock skew ahead of now."""
    rec = RECORDS[kind]
    edge = EXPIRY - MAX_TTL - CLOCK_SKEW  # the earliest `now` at which this expiry is acceptable
    validate(rec, edge)
    assert put(RecordStore(random.Random(1)), rec, edge) is StoreResult.STORED
    with pytest.raises(InvalidRecord, match="future"):
        validate(rec, edge - 1)
    assert put(RecordStore(random.Random(1)), rec, edge - 1) is StoreResult.INVALID


@settings(max_examples=max(50, settings().max_examples // 20))
@given(
    kind=st.sampled_from(KINDS),
    delta=st.one_of(st.sampled_from([-1.0, 0.0, 1.0]), st.floats(-3.0, 3.0, allow_nan=False)),
)
def test_store_lookup_and_view_share_one_boundary(kind: str, delta: float) -> None:
    """At any ``now`` near the expiry, validating, storing, getting, sampling and the peer view
    all give the same answer: live iff ``now < expiry``."""
    rec = RECORDS[kind]
    now = EXPIRY + delta
    live = now < EXPIRY
    try:
        validate(rec, now)
        valid = True
    except InvalidRecord:
        valid = False
    assert valid is live
    assert put(RecordStore(random.Random(1)), rec, now).accepted is live
    store = stored(rec)
    assert bool(store.get(rec.KIND, rec.dht_key, now)) is live
    if isinstance(rec, PeerRecord):
        assert bool(stored(rec).sample(RecordKind.PEER, rec.node_id, 4, now)) is live
        assert PeerView(bytes(20)).add(rec, now) is live
        view = PeerView(bytes(20))
        view.add(rec, NOW)
        view.expire(now)
        assert (view.get(rec.node_id) is not None) is live
