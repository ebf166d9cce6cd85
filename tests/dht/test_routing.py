"""dht.routing: the kademlia package's buckets with the per-/16 limit and no hidden pings."""

from __future__ import annotations

import random

from dht.keys import random_id
from dht.messages import Contact
from dht.routing import AddResult, DhtRoutingTable
from dht.rtt import RttEstimator


def table(prefix_limit: int = 2, k: int = 4) -> DhtRoutingTable:
    return DhtRoutingTable(bytes(20), k, prefix_limit, lambda: 0.0)


def far_contact(rng: random.Random, host: str, port: int = 1) -> Contact:
    # IDs starting 10000: far from our all-zero ID, in a bucket of depth 5, which the
    # package's rule (split only when depth % 5 != 0) does not split.
    nid = bytes([0x80 | (port % 2) << 2 | rng.randrange(4)]) + rng.randbytes(19)
    return Contact(nid, host, port)


def test_per_16_limit_in_a_bucket() -> None:
    rng = random.Random(1)
    t = table(prefix_limit=2)
    results = [t.add(far_contact(rng, f"127.9.{i}.1")) for i in range(3)]
    assert results == [AddResult.ADDED, AddResult.ADDED, AddResult.PREFIX_LIMIT]
    assert t.add(far_contact(rng, "127.10.0.1")) is AddResult.ADDED
    off = table(prefix_limit=0)
    assert all(off.add(far_contact(rng, "127.0.0.1", p)) is AddResult.ADDED for p in range(1, 4))


def test_full_bucket_keeps_replacements_and_pings_nobody() -> None:
    rng = random.Random(2)
    t = table(prefix_limit=0, k=4)
    added = [far_contact(rng, "127.0.0.1", p) for p in range(1, 5)]
    for c in added:
        assert t.add(c) is AddResult.ADDED
    extra = far_contact(rng, "127.0.0.1", 99)
    assert t.add(extra) is AddResult.FULL
    assert t.head_of(extra.node_id) == added[0]
    assert t.has_replacements(extra.node_id)
    assert t.remove(added[0].node_id)
    assert t.get(extra.node_id) == extra  # the replacement was promoted


def test_update_moves_to_tail() -> None:
    rng = random.Random(3)
    t = table(prefix_limit=0)
    a, b = far_contact(rng, "127.0.0.1", 1), far_contact(rng, "127.0.0.1", 2)
    t.add(a)
    t.add(b)
    assert t.add(a) is AddResult.UPDATED
    assert t.head_of(a.node_id) == b


def test_splits_and_closest() -> None:
    rng = random.Random(4)
    t = DhtRoutingTable(random_id(rng), 8, 0, lambda: 0.0)
    contacts = [Contact(random_id(rng), "127.0.0.1", p) for p in range(1, 300)]
    for c in contacts:
        t.add(c)
    assert len(t.buckets) > 1
    assert len(t) == len(t.contacts())
    target = random_id(rng)
    got = t.closest(target, 8)
    assert len(got) == 8
    assert set(got) <= set(t.contacts())


def test_stale_ranges_follow_injected_clock() -> None:
    now = [0.0]
    t = DhtRoutingTable(bytes(20), 4, 0, lambda: now[0])
    now[0] = 100.0
    assert t.stale_ranges(100.0, 50.0) == [(0, 2**160)]
    t.closest(bytes(20))  # a lookup touches the bucket
    assert t.stale_ranges(100.0, 50.0) == []


def test_rtt_estimator() -> None:
    rtt = RttEstimator(initial=0.5, minimum=0.25, maximum=2.0, stall_minimum=0.005)
    assert rtt.timeout == 0.5
    for _ in range(20):
        rtt.sample(0.001)
    assert rtt.timeout == 0.25 and rtt.stall < 0.01
    for _ in range(20):
        rtt.sample(3.0)
    assert rtt.timeout == 2.0
