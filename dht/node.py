"""The DHT node: UDP endpoint, admission, lookups, publishing (DESIGN §8; docs/dht.md).

:class:`DhtNode` ties together the hardened rpcudp protocol (:mod:`dht.protocol`),
the kademlia routing table (:mod:`dht.routing`), the record store, the request
responder and the sans-I/O lookup (:mod:`dht.lookup`).  It replaces the
``kademlia`` package's ``Server`` and crawlers:

* a contact enters the routing table only after it answered a challenge sent to the
  address it was observed at, with a signature binding its NodeID to its key;
* lookups keep ``alpha`` queries in flight, never wait on a slow contact beyond a
  short adaptive timeout, and evict contacts that fail ``max_failures`` times;
* records are signed, validated when stored and when found, multi-valued, paged,
  and republished by their publisher every ``republish_interval``.

Full nodes answer queries and are admitted into others' tables; clients
(``full_node=False``) only query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from peer.crypto.identity import Identity, RandBytes
from peer.errors import CryptoError, PeerError, UsageError, WireError

from .keys import provider_key, random_id, random_id_in_range
from .lookup import Lookup
from .messages import (
    MAX_PAYLOAD,
    NONCE_LEN,
    RPC_NAMES,
    Contact,
    FindNode,
    FindValue,
    MsgType,
    Nodes,
    Ping,
    Reply,
    Request,
    RequestBody,
    Sample,
    Store,
    StoreAck,
    StoreStatus,
    Values,
    check_proof,
)
from .protocol import Addr, DhtProtocol
from .records import (
    InvalidRecord,
    PeerRecord,
    ProviderFields,
    ProviderRecord,
    Record,
    RecordKind,
    decode_valid,
)
from .recordstore import RecordStore, StoreLimits
from .responder import PROOF_LEN, REPLY_HEADER, Responder, VerifiedCache
from .routing import AddResult, DhtRoutingTable
from .rtt import RttEstimator

log = logging.getLogger(__name__)

# Largest reply payload per request type: a request to a node that has not verified
# us is padded to this, so that the anti-amplification rule lets the full reply through.
_MAX_REPLY = {
    MsgType.PING: REPLY_HEADER + PROOF_LEN,
    MsgType.STORE: REPLY_HEADER + PROOF_LEN + 1,
    MsgType.FIND_NODE: MAX_PAYLOAD,
    MsgType.FIND_VALUE: MAX_PAYLOAD,
    MsgType.SAMPLE: MAX_PAYLOAD,
}


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = 20
    alpha: int = 3
    bucket_prefix_limit: int = 2  # contacts per /16 in a bucket; 0 = off (tests on one address)
    timeout_initial: float = 0.5
    timeout_min: float = 0.5
    timeout_max: float = 2.0
    stall_min: float = 0.005  # a query slower than max(this, SRTT + 4 RTTVAR) frees its lookup slot
    max_failures: int = 2  # consecutive timeouts before a contact is evicted
    store_attempts: int = 3  # store rounds while fewer than half of the k closest took a record
    record_ttl: float = 3600.0
    republish_interval: float = 1200.0
    refresh_interval: float = 900.0  # buckets without a lookup for this long are refreshed
    maintenance_interval: float = 60.0
    store_limits: StoreLimits = field(default_factory=StoreLimits)
    max_challenges: int = 64  # challenges in flight
    verified_cache: int = 4096
    max_pages: int = 16  # record pages fetched from one contact per lookup
    bootstrap_lookups: int = 2  # random-target lookups after the self-lookup at bootstrap
    bootstrap_attempts: int = 4
    recv_buffer: int = 1 << 20  # SO_RCVBUF asked for; 0 = leave the system default


@dataclass(slots=True)
class LookupStats:
    lookups: int = 0
    rounds: int = 0
    queries: int = 0
    failures: int = 0
    invalid_records: int = 0  # found during lookups and dropped


class DhtNode:
    """One DHT node on one UDP socket.  Create, then ``await start(...)``."""

    def __init__(self) -> None:
        self._protocol: DhtProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._published: dict[tuple[RecordKind, bytes], Callable[[float], Record]] = {}
        self._challenging: set[Addr] = set()
        self._checking_heads: set[bytes] = set()
        self._failures: dict[bytes, int] = {}
        self._verified_by: OrderedDict[Addr, None] = OrderedDict()
        self.lookup_stats = LookupStats()
        self._bootstrap_addrs: list[tuple[str, int]] = []
        self.last_lookup: Lookup | None = None

    # -- life cycle --------------------------------------------------------------------------------

    async def start(
        self,
        identity: Identity,
        host: str,
        port: int = 0,
        *,
        full_node: bool = True,
        bootstrap: Sequence[tuple[str, int]] = (),
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        randbytes: RandBytes = os.urandom,
        config: DhtConfig | None = None,
    ) -> None:
        """Bind ``host:port`` (0: any free port), then bootstrap from ``bootstrap`` if given.

        ``clock`` gives Unix time for record expiry; ``rng`` drives eviction and random
        targets; ``randbytes`` makes nonces and message IDs (keep it os.urandom outside tests).
        """
        if self._protocol is not None:
            raise UsageError("DhtNode already started")
        self.identity = identity
        self.node_id = identity.node_id
        self.full_node = full_node
        self.config = config or DhtConfig()
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._randbytes = randbytes
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.table = DhtRoutingTable(self.node_id, cfg.k, cfg.bucket_prefix_limit, loop.time)
        self.store = RecordStore(self._rng, cfg.store_limits)
        self.verified = VerifiedCache(cfg.verified_cache)
        self.responder = Responder(
            identity, self.table, self.store, self.verified, self._challenge, cfg.k, full_node
        )
        rtt = RttEstimator(cfg.timeout_initial, cfg.timeout_min, cfg.timeout_max, cfg.stall_min)

        def handler(payload: bytes, addr: Addr, size: int) -> bytes | None:
            return self.responder.handle(payload, addr, size, self._clock())

        transport, protocol = await loop.create_datagram_endpoint(
            lambda: DhtProtocol(handler, randbytes, rtt), local_addr=(host, port)
        )
        self._transport, self._protocol = transport, protocol
        self._set_buffers(transport)
        sockname = transport.get_extra_info("sockname")
        self._address: Addr = (sockname[0], sockname[1])
        self._spawn(self._maintenance())
        if bootstrap:
            await self.bootstrap(bootstrap)

    def _set_buffers(self, transport: asyncio.DatagramTransport) -> None:
        """Enlarge the receive buffer: a burst of 1,200-byte datagrams overflows the default."""
        sock = transport.get_extra_info("socket")
        want = self.config.recv_buffer
        if sock is None or not want:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if got < want:  # Linux reports twice what was granted; below want means capped by rmem_max
                log.warning("DHT socket receive buffer capped at %d bytes (net.core.rmem_max)", got)

    def stop(self) -> None:
        """Close the socket and cancel background work (republishing, challenges)."""
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
        self._published.clear()

    @property
    def address(self) -> Addr:
        """The bound UDP address."""
        return self._address

    @property
    def contact(self) -> Contact:
        return Contact(self.node_id, *self._address)

    @property
    def protocol(self) -> DhtProtocol:
        if self._protocol is None:
            raise UsageError("DhtNode not started")
        return self._protocol

    def _spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- RPC and admission -------------------------------------------------------------------------

    async def _rpc(self, contact: Contact, body: RequestBody, *, learn: bool = True) -> Reply | None:
        """Query ``contact``; admit it if its reply proves its NodeID.  None on any failure."""
        addr = contact.addr
        need_proof = not self.verified.is_verified(addr, contact.node_id)
        nonce = self._randbytes(NONCE_LEN) if need_proof else None
        req = Request(self.node_id, body, self.full_node, nonce)
        padded = addr not in self._verified_by
        if padded:
            req = req.padded_to(_MAX_REPLY[req.type])
        payload = await self.protocol.call(addr, RPC_NAMES[req.type], req.encode())
        if payload is None:
            self._note_failure(contact)
            return None
        try:
            reply = Reply.decode(payload, req.type)
            if reply.truncated and not padded:  # it forgot us: ask again, padded
                self._verified_by.pop(addr, None)
                return await self._rpc(contact, body, learn=learn)
            if reply.responder != contact.node_id:
                raise WireError("reply from another NodeID than the one asked")
            if nonce is not None:
                if reply.proof is None:
                    raise CryptoError("no admission proof")
                check_proof(reply.proof, self.node_id, nonce, contact.node_id)
        except PeerError:
            self._note_failure(contact, hard=True)
            return None
        self._failures.pop(contact.node_id, None)
        if reply.verified_you:
            self._verified_by[addr] = None
            self._verified_by.move_to_end(addr)
            while len(self._verified_by) > self.config.verified_cache:
                self._verified_by.popitem(last=False)
        if nonce is not None:
            self.verified.add(addr, contact.node_id)
        if learn:
            self._admit(contact)
        return reply

    def _note_failure(self, contact: Contact, *, hard: bool = False) -> None:
        count = self._failures.get(contact.node_id, 0) + 1
        if len(self._failures) >= self.config.verified_cache:
            self._failures.clear()  # bounded: forgetting a count only delays one eviction
        self._failures[contact.node_id] = count
        if hard or (count >= self.config.max_failures and self._can_evict(contact.node_id)):
            self._failures.pop(contact.node_id, None)
            if self.table.remove(contact.node_id):
                log.debug("evicted an unresponsive contact")
            self.verified.discard(contact.addr)
            self._verified_by.pop(contact.addr, None)

    def _can_evict(self, node_id: bytes) -> bool:
        """Evict a silent contact when it has a replacement, or when the table can spare it.

        A node whose own event loop or uplink is congested sees every contact time out;
        emptying its table would cut it off for good (Kademlia keeps stale contacts
        until something better is known, §2.2).
        """
        count = self._failures.get(node_id, 0)
        if count >= 4 * self.config.max_failures or len(self.table) > self.config.k:
            return True
        return self.table.has_replacements(node_id)

    def _admit(self, contact: Contact) -> None:
        """Put a contact that proved its NodeID at its observed address into the table."""
        if contact.node_id == self.node_id:
            return
        if self.table.add(contact) is AddResult.FULL:
            head = self.table.head_of(contact.node_id)
            if head is not None and head.node_id not in self._checking_heads:
                self._checking_heads.add(head.node_id)
                self._spawn(self._check_head(head))

    async def _check_head(self, head: Contact) -> None:
        """A bucket is full: ping its least recently seen contact, evict it if dead (Kademlia §2.2)."""
        try:
            if await self._rpc(head, Ping(), learn=False) is None:
                self.table.remove(head.node_id)  # promotes the newest replacement
        finally:
            self._checking_heads.discard(head.node_id)

    def _challenge(self, addr: Addr, claimed: bytes) -> None:
        """An unknown full node queried us: check it at its observed address before admitting it."""
        if addr in self._challenging or len(self._challenging) >= self.config.max_challenges:
            return
        if self.table.get(claimed) == Contact(claimed, *addr):
            self.verified.add(addr, claimed)  # admitted earlier, dropped from the cache since
            return
        self._challenging.add(addr)

        async def run() -> None:
            try:
                await self._rpc(Contact(claimed, *addr), Ping())
            finally:
                self._challenging.discard(addr)

        self._spawn(run())

    # -- lookups -----------------------------------------------------------------------------------

    async def _drive(
        self,
        target: bytes,
        body: RequestBody,
        on_reply: Callable[[Contact, Reply], Awaitable[bool]] | None = None,
        satisfied: Callable[[], bool] = lambda: True,
    ) -> Lookup:
        """Run one iterative lookup; ``on_reply`` returns True to stop early.

        Stalled queries free their slot; once the other k closest have replied, the
        lookup ends without them if ``satisfied()``, else it waits for them to answer
        or time out (the nodes nearest a key are the ones that hold its records).
        """
        cfg = self.config
        lookup = Lookup(
            target, self.table.closest(target, cfg.k), k=cfg.k, alpha=cfg.alpha, self_id=self.node_id
        )
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[Reply | None], tuple[Contact, float]] = {}
        stalled: set[bytes] = set()
        stop = False
        while not stop:
            for contact in lookup.next_queries():
                task = asyncio.ensure_future(self._rpc(contact, body))
                running[task] = (contact, loop.time())
            if not running or lookup.settled or (lookup.done and satisfied()):
                break
            active = [t for t, (c, _) in running.items() if c.node_id not in stalled]
            soft = self.protocol.rtt.stall
            if active:
                oldest = min(running[t][1] for t in active)
                wait = max(0.0, oldest + soft - loop.time())
            else:
                wait = None
            finished, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                contact, _ = running.pop(task)
                stalled.discard(contact.node_id)
                reply = task.result()
                if reply is None:
                    lookup.on_timeout(contact.node_id)
                    continue
                rbody = reply.body
                contacts = rbody.contacts if isinstance(rbody, Nodes | Values) else ()
                lookup.on_reply(contact.node_id, contacts)
                if on_reply is not None and await on_reply(contact, reply):
                    stop = True
            if not finished:  # the oldest active query is slow: free its slot, keep listening
                now = loop.time()
                for task in active:
                    contact, started = running[task]
                    if now - started >= soft:
                        stalled.add(contact.node_id)
                        lookup.on_stall(contact.node_id)
        for task in running:  # stragglers finish in the background and still update the table
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        stats = self.lookup_stats
        stats.lookups += 1
        stats.rounds += lookup.rounds
        stats.queries += lookup.queries
        stats.failures += lookup.failures
        self.last_lookup = lookup
        return lookup

    async def find_node(self, target: bytes) -> list[Contact]:
        """The k closest full nodes to ``target`` that answered."""
        lookup = await self._drive(target, FindNode(target))
        return lookup.closest()

    async def _pages(
        self, contact: Contact, first: Values, body: Callable[[int], RequestBody]
    ) -> list[bytes]:
        records = list(first.records)
        offset, pages = first.next_offset, 1
        while offset and pages < self.config.max_pages:
            reply = await self._rpc(contact, body(offset), learn=False)
            if (
                reply is None
                or not isinstance(reply.body, Values)
                or reply.body.next_offset in range(1, offset + 1)
            ):
                break
            records.extend(reply.body.records)
            offset, pages = reply.body.next_offset, pages + 1
        return records

    def _valid(self, raw: Iterable[bytes], key: bytes | None) -> list[Record]:
        out = []
        now = self._clock()
        for data in raw:
            try:
                out.append(decode_valid(data, now, key=key, max_ttl=self.config.store_limits.max_ttl))
            except (WireError, InvalidRecord):
                self.lookup_stats.invalid_records += 1
        return out

    async def find_providers(self, hash_name: bytes) -> list[ProviderRecord]:
        """Every valid provider record for ``hash_name`` held by the k closest nodes (and this one)."""
        key = provider_key(hash_name)
        found: dict[bytes, ProviderRecord] = {}

        def keep(records: Iterable[Record]) -> None:
            for rec in records:
                if isinstance(rec, ProviderRecord):
                    old = found.get(rec.identity_key)
                    if old is None or rec.expiry > old.expiry:
                        found[rec.identity_key] = rec

        keep(r for r, _ in self.store.get(RecordKind.PROVIDER, key, self._clock()))

        async def on_reply(contact: Contact, reply: Reply) -> bool:
            if isinstance(reply.body, Values) and reply.body.records:
                raw = await self._pages(contact, reply.body, lambda o: FindValue(RecordKind.PROVIDER, key, o))
                keep(self._valid(raw, key))
            return False

        await self._drive(key, FindValue(RecordKind.PROVIDER, key), on_reply, lambda: bool(found))
        return sorted(found.values(), key=lambda r: r.node_id)

    async def find_peer(self, node_id: bytes) -> PeerRecord | None:
        """The peer record of ``node_id`` (signed by its own key), or None."""
        local = self.store.get(RecordKind.PEER, node_id, self._clock())
        if local:
            rec = local[0][0]
            assert isinstance(rec, PeerRecord)
            return rec
        best: list[PeerRecord] = []

        async def on_reply(contact: Contact, reply: Reply) -> bool:
            if isinstance(reply.body, Values):
                for rec in self._valid(reply.body.records, node_id):
                    if isinstance(rec, PeerRecord):
                        best.append(rec)
            return bool(best)

        await self._drive(node_id, FindValue(RecordKind.PEER, node_id), on_reply, lambda: bool(best))
        return max(best, key=lambda r: r.expiry) if best else None

    async def random_walk(self, n: int) -> list[PeerRecord]:
        """Up to ``n`` peer records gathered around random points of the ID space.

        SAMPLE asks for whatever peer records a node stores near a random target, so
        no DHT node learns which peer the walker is interested in.
        """
        found: dict[bytes, PeerRecord] = {}
        target = [random_id(self._rng)]

        async def on_reply(contact: Contact, reply: Reply) -> bool:
            if isinstance(reply.body, Values) and reply.body.records:
                raw = await self._pages(contact, reply.body, lambda o: Sample(target[0], o))
                for rec in self._valid(raw, None):
                    if isinstance(rec, PeerRecord) and rec.node_id != self.node_id:
                        found.setdefault(rec.node_id, rec)
            return len(found) >= n

        for _ in range(max(3, n // 4 + 2)):
            await self._drive(target[0], Sample(target[0]), on_reply)
            if len(found) >= n:
                break
            target[0] = random_id(self._rng)
        return list(found.values())[:n]

    # -- publishing --------------------------------------------------------------------------------

    async def publish_provider(self, hash_name: bytes, record_fields: ProviderFields) -> int:
        """Announce that this node (an ORDB) serves ``hash_name``; republished until stop().

        Returns how many nodes accepted the record.
        """
        key = provider_key(hash_name)

        def build(now: float) -> Record:
            return ProviderRecord(
                key,
                self.identity.public,
                record_fields.ntor_key,
                record_fields.seal_key,
                record_fields.route,
                int(now + self.config.record_ttl),
            ).sign(self.identity)

        self._published[(RecordKind.PROVIDER, key)] = build
        return await self._store_record(build(self._clock()))

    async def publish_peer(self, record: PeerRecord) -> int:
        """Publish this node's peer record (re-signed with a fresh expiry); republished until stop()."""
        if record.identity_key != self.identity.public:
            raise UsageError("a node publishes only its own peer record")

        def build(now: float) -> Record:
            return replace(record, expiry=int(now + self.config.record_ttl)).sign(self.identity)

        self._published[(RecordKind.PEER, self.node_id)] = build
        return await self._store_record(build(self._clock()))

    async def _store_record(self, record: Record) -> int:
        """Store at the k closest; a round too few nodes took (a loaded or churning network) runs again."""
        accepted = 0
        for attempt in range(self.config.store_attempts):
            if attempt:
                await asyncio.sleep(self.protocol.rtt.timeout)
            accepted = max(accepted, await self._store_round(record))
            if accepted >= self._store_quorum():
                break
        return accepted

    def _store_quorum(self) -> int:
        """Half of the k closest we could know of: at least one."""
        return max(1, min(self.config.k, len(self.table)) // 2)

    async def _store_round(self, record: Record) -> int:
        encoded = record.encode()
        closest = await self.find_node(record.dht_key)
        accepted = 0
        if self.full_node and (
            len(closest) < self.config.k or self._closer_than_last(record.dht_key, closest)
        ):
            accepted += self.store.put(record, encoded, "self", self._clock()).accepted
        replies = await asyncio.gather(*(self._rpc(c, Store(encoded)) for c in closest))
        for reply in replies:
            if (
                reply is not None
                and isinstance(reply.body, StoreAck)
                and reply.body.status is StoreStatus.STORED
            ):
                accepted += 1
        return accepted

    def _closer_than_last(self, key: bytes, closest: list[Contact]) -> bool:
        target = int.from_bytes(key, "big")
        last = int.from_bytes(closest[-1].node_id, "big") ^ target
        return int.from_bytes(self.node_id, "big") ^ target < last

    async def republish(self) -> int:
        """Re-sign and store every record this node publishes; returns acceptances."""
        now = self._clock()
        results = await asyncio.gather(
            *(self._store_record(build(now)) for build in list(self._published.values()))
        )
        return sum(results)

    # -- bootstrap and maintenance -----------------------------------------------------------------

    async def bootstrap(self, contacts: Sequence[tuple[str, int]]) -> int:
        """Join through known addresses (NodeIDs unknown): ping each, then look up our own ID.

        Returns the routing table size afterwards.
        """

        self._bootstrap_addrs = [(h, p) for h, p in contacts]

        async def ping(addr: tuple[str, int], timeout: float) -> bool:
            nonce = self._randbytes(NONCE_LEN)
            req = Request(self.node_id, Ping(), self.full_node, nonce).padded_to(_MAX_REPLY[MsgType.PING])
            payload = await self.protocol.call(
                (addr[0], addr[1]), RPC_NAMES[MsgType.PING], req.encode(), timeout
            )
            if payload is None:
                return False
            try:
                reply = Reply.decode(payload, MsgType.PING)
                if reply.proof is None:
                    return False
                check_proof(reply.proof, self.node_id, nonce, reply.responder)
            except PeerError:
                return False
            contact = Contact(reply.responder, addr[0], addr[1])
            self.verified.add(contact.addr, contact.node_id)
            self._admit(contact)
            return True

        timeout = self.config.timeout_initial
        for _ in range(self.config.bootstrap_attempts):  # a busy bootstrap node may drop a few
            if any(await asyncio.gather(*(ping(a, timeout) for a in contacts))):
                break
            timeout = min(2 * timeout, self.config.timeout_max)
        await self.find_node(self.node_id)
        for _ in range(self.config.bootstrap_lookups):
            await self.find_node(random_id(self._rng))
        return len(self.table)

    async def _maintenance(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        last_publish = loop.time()
        while True:
            await asyncio.sleep(cfg.maintenance_interval * (0.75 + self._rng.random() / 2))
            self.store.expire(self._clock())
            with contextlib.suppress(PeerError):
                if not len(self.table) and self._bootstrap_addrs:  # cut off: join again
                    await self.bootstrap(self._bootstrap_addrs)
                if loop.time() - last_publish >= cfg.republish_interval:
                    last_publish = loop.time()
                    await self.republish()
                for lower, upper in self.table.stale_ranges(loop.time(), cfg.refresh_interval)[:4]:
                    await self.find_node(random_id_in_range(self._rng, lower, upper))

    def stats(self) -> dict[str, float]:
        """Counters for operators and benchmarks (no addresses, no keys)."""
        p = self.protocol.stats
        r = self.responder.stats
        s = self.store.stats
        lk = self.lookup_stats
        return {
            "contacts": len(self.table),
            "buckets": len(self.table.buckets),
            "verified": len(self.verified),
            "records": len(self.store),
            "published": len(self._published),
            "rpc_sent": p.sent,
            "rpc_received": p.received,
            "bytes_sent": p.bytes_sent,
            "bytes_received": p.bytes_received,
            "dropped": p.dropped,
            "timeouts": p.timeouts,
            "late_replies": p.late_replies,
            "rpc_timeout": self.protocol.rtt.timeout,
            "requests": r.requests,
            "truncated_replies": r.truncated,
            "challenges": r.challenges,
            "stores": r.stores,
            "stores_refused": r.stores_refused,
            "records_rejected": s.rejected_invalid + s.rejected_limit,
            "records_evicted": s.evicted,
            "lookups": lk.lookups,
            "lookup_rounds": lk.rounds,
            "lookup_queries": lk.queries,
            "lookup_failures": lk.failures,
            "invalid_records_seen": lk.invalid_records,
        }
