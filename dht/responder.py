"""Answering DHT requests (DESIGN §8); no I/O of its own.

:class:`Responder` turns a request payload into a reply payload, given the node's
routing table, record store and verified-address cache.  It enforces:

* no amplification: until the requester's address is verified (it answered one of
  our challenges with a valid proof), a reply is never larger than the request
  datagram; the requester pads its requests when it wants a full reply;
* admission: a full node we do not know yet is challenged (through the ``challenge``
  callback) before it can enter the routing table; its claim is never trusted;
* stores are validated and limited by :class:`dht.recordstore.RecordStore`, by the
  /16 of the address they arrive from;
* record sets are paged to fit one datagram.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.crypto.identity import Identity
from peer.errors import WireError

from .keys import prefix16
from .messages import (
    MAX_PAYLOAD,
    Contact,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Reply,
    ReplyBody,
    Request,
    Sample,
    Store,
    StoreAck,
    StoreStatus,
    fit_reply,
    make_proof,
    pack_values,
)
from .protocol import REPLY_OVERHEAD, Addr
from .records import RecordKind, decode_record
from .recordstore import RecordStore, StoreResult
from .routing import DhtRoutingTable

REPLY_HEADER = 3 + 20
PROOF_LEN = 32 + 64
SAMPLE_COUNT = 16
_STATUS = {
    StoreResult.STORED: StoreStatus.STORED,
    StoreResult.REPLACED: StoreStatus.STORED,
    StoreResult.UNCHANGED: StoreStatus.STORED,
    StoreResult.INVALID: StoreStatus.INVALID,
    StoreResult.LIMITED: StoreStatus.LIMITED,
}


class VerifiedCache:
    """Addresses whose NodeID was proven by a challenge (bounded, least recently used dropped)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._map: OrderedDict[Addr, bytes] = OrderedDict()

    def add(self, addr: Addr, node_id: bytes) -> None:
        self._map[addr] = node_id
        self._map.move_to_end(addr)
        while len(self._map) > self._size:
            self._map.popitem(last=False)

    def get(self, addr: Addr) -> bytes | None:
        return self._map.get(addr)

    def is_verified(self, addr: Addr, node_id: bytes) -> bool:
        return self._map.get(addr) == node_id

    def discard(self, addr: Addr) -> None:
        self._map.pop(addr, None)

    def __len__(self) -> int:
        return len(self._map)


@dataclass(slots=True)
class ResponderStats:
    requests: int = 0
    malformed: int = 0
    truncated: int = 0
    stores: int = 0
    stores_refused: int = 0
    challenges: int = 0


@dataclass(slots=True)
class Responder:
    identity: Identity
    table: DhtRoutingTable
    store: RecordStore
    verified: VerifiedCache
    challenge: Callable[[Addr, bytes], None]  # (address, claimed NodeID): check it, maybe admit it
    k: int
    full_node: bool = True
    stats: ResponderStats = field(default_factory=ResponderStats)
    node_id: bytes = b""
    public: bytes = b""

    def __post_init__(self) -> None:
        self.public = self.identity.public
        self.node_id = self.identity.node_id

    def handle(self, payload: bytes, addr: Addr, size: int, now: float) -> bytes | None:
        """The reply payload to send back, or None to stay silent."""
        if not self.full_node:
            return None  # clients query but are never queried
        try:
            req = Request.decode(payload)
        except WireError:
            self.stats.malformed += 1
            return None
        if req.sender == self.node_id:
            return None
        self.stats.requests += 1
        known = self.verified.is_verified(addr, req.sender)
        if req.full_node:
            if known:
                self.table.add(Contact(req.sender, addr[0], addr[1]))  # refreshes its place in the bucket
            else:
                self.stats.challenges += 1
                self.challenge(addr, req.sender)
        proof = (
            make_proof(self.identity, req.sender, req.nonce, public=self.public)
            if req.nonce is not None
            else None
        )
        budget = MAX_PAYLOAD - REPLY_HEADER - (PROOF_LEN if proof else 0)
        body = self._answer(req, addr, now, budget)
        reply = Reply(self.node_id, body, proof, verified_you=known)
        limit = MAX_PAYLOAD if known else min(MAX_PAYLOAD, size - REPLY_OVERHEAD)
        fitted = fit_reply(reply, req.type, limit)
        if fitted.truncated:
            self.stats.truncated += 1
        return fitted.encode(req.type)

    def _closest(self, target: bytes, exclude: bytes) -> tuple[Contact, ...]:
        return tuple(self.table.closest(target, self.k + 1, exclude=exclude)[: self.k])

    def _answer(self, req: Request, addr: Addr, now: float, budget: int) -> ReplyBody:
        body = req.body
        if isinstance(body, Ping):
            return Pong()
        if isinstance(body, FindNode):
            return Nodes(self._closest(body.target, req.sender))
        if isinstance(body, FindValue):
            records = [enc for _, enc in self.store.get(body.kind, body.key, now)]
            contacts = self._closest(body.key, req.sender) if body.offset == 0 else ()
            return pack_values(contacts, records, body.offset, budget)
        if isinstance(body, Sample):
            sampled = [enc for _, enc in self.store.sample(RecordKind.PEER, body.target, SAMPLE_COUNT, now)]
            contacts = self._closest(body.target, req.sender) if body.offset == 0 else ()
            return pack_values(contacts, sampled, body.offset, budget)
        assert isinstance(body, Store)
        return StoreAck(self._store(body, addr, now))

    def _store(self, body: Store, addr: Addr, now: float) -> StoreStatus:
        self.stats.stores += 1
        try:
            record = decode_record(body.record)
        except WireError:
            self.stats.stores_refused += 1
            return StoreStatus.INVALID
        status = _STATUS[self.store.put(record, body.record, prefix16(addr[0]), now)]
        if status is not StoreStatus.STORED:
            self.stats.stores_refused += 1
        return status
