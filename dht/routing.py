"""The routing table: the ``kademlia`` package's k-buckets, hardened (DESIGN §8).

Taken from the package: :class:`kademlia.routing.KBucket` (LRU order, replacement
cache, split) and :class:`kademlia.routing.RoutingTable` (bucket splitting rule).  Changed here:

* at most ``prefix_limit`` contacts of one /16 in each bucket (0 = off), also when a
  replacement is promoted, so one network cannot fill a bucket;
* adding a contact never sends anything: the package pings the head of a full bucket
  from inside ``add_contact``; here the caller gets :attr:`AddResult.FULL` and the
  head to check, and decides (the node pings it and evicts it if it is dead);
* ``find_neighbors`` is exact (the package's bucket traversal could return nobody for a
  target in an empty bucket at the edge of the table);
* bucket ages follow the injected clock instead of ``time.monotonic``;
* a NodeID that sits exactly at a bucket's upper bound goes into that bucket.

Only contacts that passed admission (:mod:`dht.node`) are ever added.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable

from kademlia.node import Node
from kademlia.routing import KBucket, RoutingTable

from .keys import ID_BITS, prefix16
from .messages import Contact


class AddResult(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"  # already there: moved to the tail, address refreshed
    FULL = "full"  # bucket full and not splittable: kept as a replacement
    PREFIX_LIMIT = "prefix-limit"  # refused: too many contacts of its /16 in the bucket


def to_node(contact: Contact) -> Node:
    return Node(contact.node_id, contact.host, contact.port)


def to_contact(node: Node) -> Contact:
    return Contact(node.id, node.ip, node.port)


class Bucket(KBucket):
    def __init__(
        self, lower: int, upper: int, ksize: int, prefix_limit: int, clock: Callable[[], float]
    ) -> None:
        self._clock = clock
        self.prefix_limit = prefix_limit
        super().__init__(lower, upper, ksize)

    def touch_last_updated(self) -> None:
        self.last_updated = self._clock()

    def _prefix_full(self, node: Node) -> bool:
        if not self.prefix_limit:
            return False
        p = prefix16(node.ip)
        return sum(prefix16(n.ip) == p for n in self.nodes.values() if n.id != node.id) >= self.prefix_limit

    def admit(self, node: Node) -> AddResult:
        old = self.nodes.get(node.id)
        if old is not None and old.ip == node.ip and old.port == node.port:
            self.nodes.move_to_end(node.id)
            return AddResult.UPDATED
        if old is not None:
            if self._prefix_full(node):  # a known contact moved into a crowded /16: keep the old address
                self.nodes.move_to_end(node.id)
                return AddResult.UPDATED
            del self.nodes[node.id]
            self.nodes[node.id] = node
            return AddResult.UPDATED
        if self._prefix_full(node):
            return AddResult.PREFIX_LIMIT
        if len(self.nodes) < self.ksize:
            self.nodes[node.id] = node
            return AddResult.ADDED
        self.replacement_nodes.pop(node.id, None)
        self.replacement_nodes[node.id] = node
        while len(self.replacement_nodes) > self.max_replacement_nodes:
            self.replacement_nodes.popitem(last=False)
        return AddResult.FULL

    def add_node(self, node: Node) -> bool:
        return self.admit(node) in (AddResult.ADDED, AddResult.UPDATED)

    def split(self) -> tuple[Bucket, Bucket]:
        lower, upper = self.range
        mid = (lower + upper) // 2
        one = Bucket(lower, mid, self.ksize, self.prefix_limit, self._clock)
        two = Bucket(mid + 1, upper, self.ksize, self.prefix_limit, self._clock)
        for node in (*self.nodes.values(), *self.replacement_nodes.values()):
            (one if node.long_id <= mid else two).add_node(node)
        return one, two

    def remove_node(self, node: Node) -> None:
        self.replacement_nodes.pop(node.id, None)
        if self.nodes.pop(node.id, None) is None:
            return
        for rid in reversed(list(self.replacement_nodes)):  # newest replacement that fits the /16 rule
            candidate = self.replacement_nodes[rid]
            if not self._prefix_full(candidate):
                del self.replacement_nodes[rid]
                self.nodes[rid] = candidate
                return


class DhtRoutingTable(RoutingTable):
    """A node's k-buckets; holds admitted contacts only."""

    def __init__(self, self_id: bytes, ksize: int, prefix_limit: int, clock: Callable[[], float]) -> None:
        self._prefix_limit = prefix_limit
        self._clock = clock
        super().__init__(None, ksize, Node(self_id))

    def flush(self) -> None:
        self.buckets = [Bucket(0, 2**ID_BITS, self.ksize, self._prefix_limit, self._clock)]

    def get_bucket_for(self, node: Node) -> int:
        for index, bucket in enumerate(self.buckets):
            if node.long_id <= bucket.range[1]:
                return index
        return len(self.buckets) - 1

    def add(self, contact: Contact) -> AddResult:
        node = to_node(contact)
        while True:
            index = self.get_bucket_for(node)
            bucket = self.buckets[index]
            result: AddResult = bucket.admit(node)
            if result is not AddResult.FULL:
                return result
            if not (bucket.has_in_range(self.node) or bucket.depth() % 5 != 0):
                return result
            bucket.replacement_nodes.pop(node.id, None)
            self.split_bucket(index)

    def add_contact(self, node: Node) -> None:  # the package's entry point, without its ping
        self.add(to_contact(node))

    def head_of(self, node_id: bytes) -> Contact | None:
        """The least recently seen contact of the bucket ``node_id`` falls into."""
        bucket = self.buckets[self.get_bucket_for(Node(node_id))]
        return to_contact(bucket.head()) if len(bucket) else None

    def has_replacements(self, node_id: bytes) -> bool:
        return bool(self.buckets[self.get_bucket_for(Node(node_id))].replacement_nodes)

    def get(self, node_id: bytes) -> Contact | None:
        node = self.buckets[self.get_bucket_for(Node(node_id))][node_id]
        return to_contact(node) if node is not None else None

    def remove(self, node_id: bytes) -> bool:
        bucket = self.buckets[self.get_bucket_for(Node(node_id))]
        known = node_id in bucket.nodes
        bucket.remove_node(Node(node_id))
        return known

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        """The k contacts closest to ``node``, exactly.

        The package's ``TableTraverser`` stops as soon as it has used the buckets on one
        side when the target's bucket is at the end of the table, so a key falling into an
        empty edge bucket got no contacts at all (and a lookup for it never started).
        """
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        target = node.long_id
        candidates = (
            n
            for b in self.buckets
            for n in b.nodes.values()
            if n.id != node.id and (exclude is None or not n.same_home_as(exclude))
        )
        return heapq.nsmallest(k or self.ksize, candidates, key=lambda n: n.long_id ^ target)

    def closest(self, target: bytes, k: int | None = None, exclude: bytes | None = None) -> list[Contact]:
        found = self.find_neighbors(Node(target), k=k or self.ksize)
        return [to_contact(n) for n in found if n.id != exclude]

    def contacts(self) -> list[Contact]:
        return [to_contact(n) for b in self.buckets for n in b.nodes.values()]

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets)

    def stale_ranges(self, now: float, age: float) -> list[tuple[int, int]]:
        """Ranges of buckets not looked up for ``age`` seconds (to refresh with a lookup)."""
        return [b.range for b in self.buckets if now - b.last_updated >= age]
