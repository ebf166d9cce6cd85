"""Bounded, validated record storage for one DHT node (DESIGN §8).

Each (kind, key) slot holds a bounded set of records, at most one per publisher
(identity key: a newer expiry replaces the older record), at most
``max_per_prefix`` arriving from one /16, and at most ``max_per_key`` in all; a full
slot evicts a record chosen at random (with the injected ``rng``), so that an
attacker cannot predict which honest record to push out, nor keep a slot for
himself by arriving first.  Publishers are limited across the whole store, and the
store as a whole is bounded.  Records are validated when stored and their expiry is
checked again when returned.  Pure code: ``now`` and ``rng`` are passed in.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from .records import MAX_TTL, InvalidRecord, Record, RecordKind, validate


class StoreResult(enum.Enum):
    STORED = "stored"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"  # same or older record from the same publisher
    INVALID = "invalid"
    LIMITED = "limited"  # refused by a per-publisher or per-/16 limit

    @property
    def accepted(self) -> bool:
        return self in (StoreResult.STORED, StoreResult.REPLACED, StoreResult.UNCHANGED)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_per_key: int = 32
    max_per_prefix: int = 4  # per key and /16 of the storing address; 0 = off
    max_per_publisher: int = 256  # records by one identity key in the whole store
    max_records: int = 65536
    max_ttl: float = MAX_TTL


@dataclass(slots=True)
class _Entry:
    record: Record
    encoded: bytes
    prefix: str


Slot = tuple[RecordKind, bytes]


@dataclass(slots=True)
class _Stats:
    stored: int = 0
    rejected_invalid: int = 0
    rejected_limit: int = 0
    evicted: int = 0
    expired: int = 0


@dataclass(slots=True)
class RecordStore:
    """Records by (kind, DHT key), then by publisher identity key."""

    rng: random.Random
    limits: StoreLimits = field(default_factory=StoreLimits)
    stats: _Stats = field(default_factory=_Stats)
    _slots: dict[Slot, dict[bytes, _Entry]] = field(default_factory=dict)
    _per_publisher: dict[bytes, int] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def keys(self) -> list[Slot]:
        return list(self._slots)

    def put(self, record: Record, encoded: bytes, source_prefix: str, now: float) -> StoreResult:
        """Validate and store ``record`` (its canonical ``encoded`` bytes), arriving from ``source_prefix``."""
        try:
            validate(record, now, key=record.dht_key, max_ttl=self.limits.max_ttl)
        except InvalidRecord:
            self.stats.rejected_invalid += 1
            return StoreResult.INVALID
        slot_id: Slot = (record.KIND, record.dht_key)
        slot = self._slots.get(slot_id, {})
        publisher = record.identity_key
        old = slot.get(publisher)
        if old is not None:
            if record.expiry <= old.record.expiry:
                return StoreResult.UNCHANGED
            slot[publisher] = _Entry(record, encoded, source_prefix)
            return StoreResult.REPLACED
        limits = self.limits
        if self._per_publisher.get(publisher, 0) >= limits.max_per_publisher:
            self.stats.rejected_limit += 1
            return StoreResult.LIMITED
        if (
            limits.max_per_prefix
            and sum(e.prefix == source_prefix for e in slot.values()) >= limits.max_per_prefix
        ):
            self.stats.rejected_limit += 1
            return StoreResult.LIMITED
        self._drop_expired(slot_id, slot, now)
        if len(slot) >= limits.max_per_key:
            self._evict_from(slot_id, slot)
        if self._count >= limits.max_records:
            self._evict_any()
        self._slots[slot_id] = slot
        slot[publisher] = _Entry(record, encoded, source_prefix)
        self._per_publisher[publisher] = self._per_publisher.get(publisher, 0) + 1
        self._count += 1
        self.stats.stored += 1
        return StoreResult.STORED

    def get(self, kind: RecordKind, key: bytes, now: float) -> list[tuple[Record, bytes]]:
        """The live records under ``key``, ordered by publisher NodeID (stable for paging)."""
        slot = self._slots.get((kind, key))
        if not slot:
            return []
        self._drop_expired((kind, key), slot, now)
        entries = sorted(slot.values(), key=lambda e: e.record.node_id)
        return [(e.record, e.encoded) for e in entries]

    def sample(self, kind: RecordKind, near: bytes, count: int, now: float) -> list[tuple[Record, bytes]]:
        """Up to ``count`` live records of ``kind`` whose keys are closest to ``near`` (random walks)."""
        target = int.from_bytes(near, "big")
        slots = sorted(
            (s for s in self._slots if s[0] == kind), key=lambda s: int.from_bytes(s[1], "big") ^ target
        )
        out: list[tuple[Record, bytes]] = []
        for s in slots:
            out.extend(self.get(s[0], s[1], now))
            if len(out) >= count:
                break
        return out[:count]

    def expire(self, now: float) -> int:
        """Drop every expired record; return how many."""
        before = self._count
        for slot_id, slot in list(self._slots.items()):
            self._drop_expired(slot_id, slot, now)
        return before - self._count

    def _remove(self, slot_id: Slot, slot: dict[bytes, _Entry], publisher: bytes) -> None:
        del slot[publisher]
        left = self._per_publisher[publisher] - 1
        if left:
            self._per_publisher[publisher] = left
        else:
            del self._per_publisher[publisher]
        self._count -= 1
        if not slot:
            self._slots.pop(slot_id, None)

    def _drop_expired(self, slot_id: Slot, slot: dict[bytes, _Entry], now: float) -> None:
        for publisher in [p for p, e in slot.items() if e.record.expiry <= now]:
            self._remove(slot_id, slot, publisher)
            self.stats.expired += 1

    def _evict_from(self, slot_id: Slot, slot: dict[bytes, _Entry]) -> None:
        victim = self.rng.choice(sorted(slot))
        self._remove(slot_id, slot, victim)
        self.stats.evicted += 1

    def _evict_any(self) -> None:
        slot_id = self.rng.choice(sorted(self._slots))
        self._evict_from(slot_id, self._slots[slot_id])
