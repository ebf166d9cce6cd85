"""dht.recordstore: bounded record sets, per-publisher and per-/16 limits, random eviction, expiry."""

from __future__ import annotations

import random
from dataclasses import replace

from dht.keys import provider_key
from dht.records import Record, RecordKind
from dht.recordstore import RecordStore, StoreLimits, StoreResult

from .helpers import NOW, identity, peer, provider

RNG = random.Random(3)
IDS = [identity(RNG) for _ in range(12)]
KEY = provider_key(b"x")


def put(store: RecordStore, rec: Record, prefix: str = "127.1", now: float = NOW) -> StoreResult:
    return store.put(rec, rec.encode(), prefix, now)


def test_store_and_get_many_publishers() -> None:
    store = RecordStore(random.Random(1))
    for i, ident in enumerate(IDS[:5]):
        assert put(store, provider(ident, KEY), f"127.{i}") is StoreResult.STORED
    got = store.get(RecordKind.PROVIDER, KEY, NOW)
    assert {r.identity_key for r, _ in got} == {i.public for i in IDS[:5]}
    assert [r.node_id for r, _ in got] == sorted(r.node_id for r, _ in got)


def test_invalid_records_are_not_stored() -> None:
    store = RecordStore(random.Random(1))
    good = provider(IDS[0], KEY)
    assert put(store, replace(good, signature=bytes(64))) is StoreResult.INVALID
    assert put(store, provider(IDS[0], KEY, expiry=NOW - 5)) is StoreResult.INVALID
    assert put(store, replace(good, key=provider_key(b"y"))) is StoreResult.INVALID
    assert len(store) == 0
    assert store.stats.rejected_invalid == 3


def test_newer_record_replaces_older_from_same_publisher() -> None:
    store = RecordStore(random.Random(1))
    assert put(store, provider(IDS[0], KEY, expiry=NOW + 100)) is StoreResult.STORED
    assert put(store, provider(IDS[0], KEY, expiry=NOW + 50)) is StoreResult.UNCHANGED
    assert put(store, provider(IDS[0], KEY, expiry=NOW + 200)) is StoreResult.REPLACED
    ((rec, _),) = store.get(RecordKind.PROVIDER, KEY, NOW)
    assert rec.expiry == int(NOW + 200)
    assert len(store) == 1


def test_per_prefix_limit() -> None:
    store = RecordStore(random.Random(1), StoreLimits(max_per_prefix=2))
    results = [put(store, provider(ident, KEY), "127.9") for ident in IDS[:4]]
    assert results == [StoreResult.STORED, StoreResult.STORED, StoreResult.LIMITED, StoreResult.LIMITED]
    assert put(store, provider(IDS[5], KEY), "127.10") is StoreResult.STORED
    off = RecordStore(random.Random(1), StoreLimits(max_per_prefix=0))
    assert all(put(off, provider(ident, KEY), "127.9") is StoreResult.STORED for ident in IDS[:4])


def test_per_publisher_limit() -> None:
    store = RecordStore(random.Random(1), StoreLimits(max_per_publisher=3))
    results = [put(store, provider(IDS[0], provider_key(bytes([i]))), f"127.{i}") for i in range(5)]
    assert results.count(StoreResult.STORED) == 3
    assert results.count(StoreResult.LIMITED) == 2


def test_full_key_evicts_at_random() -> None:
    victims = set()
    for seed in range(8):
        store = RecordStore(random.Random(seed), StoreLimits(max_per_key=4, max_per_prefix=0))
        for ident in IDS[:4]:
            put(store, provider(ident, KEY))
        assert put(store, provider(IDS[4], KEY)) is StoreResult.STORED
        held = {r.identity_key for r, _ in store.get(RecordKind.PROVIDER, KEY, NOW)}
        assert len(held) == 4 and IDS[4].public in held
        (victim,) = {i.public for i in IDS[:4]} - held
        victims.add(victim)
        assert store.stats.evicted == 1
    assert len(victims) > 1  # not always the same one: an attacker cannot aim


def test_store_bound() -> None:
    store = RecordStore(random.Random(2), StoreLimits(max_records=5, max_per_prefix=0))
    for i, ident in enumerate(IDS):
        put(store, provider(ident, provider_key(bytes([i]))))
    assert len(store) == 5


def test_expiry_with_injected_clock() -> None:
    store = RecordStore(random.Random(1))
    put(store, provider(IDS[0], KEY, expiry=NOW + 10))
    put(store, provider(IDS[1], KEY, expiry=NOW + 100))
    put(store, peer(IDS[2], expiry=NOW + 10))
    assert len(store.get(RecordKind.PROVIDER, KEY, NOW + 20)) == 1
    assert store.expire(NOW + 20) == 1  # the peer record (the provider one went on get)
    assert len(store) == 1
    assert store.expire(NOW + 1000) == 1
    assert len(store) == 0 and store.keys() == []


def test_sample_returns_peer_records_near_target() -> None:
    store = RecordStore(random.Random(1))
    for ident in IDS:
        put(store, peer(ident))
    target = IDS[3].node_id
    got = store.sample(RecordKind.PEER, target, 3, NOW)
    assert len(got) == 3
    assert got[0][0].node_id == target
