"""The ORDB role (DESIGN §6; byte layouts in docs/ordb-protocol.md).

An ORDB keeps ``hash_name -> holders`` from DB_INFO announcements that arrive on streams
holders opened through their own circuits, and answers DB_QUERY from requesters (also
through their own circuits): it picks the least-loaded holder that has the pieces, passes
the query down that holder's announce stream with a fresh 16-byte transaction id, and
pairs the holder's answer stream (opened by the holder, starting with DB_CONNECTED and
that transaction id) with the requester's query stream.  DB_DATA is spliced across with
back-pressure: the ORDB acknowledges (stream SENDME) the holder's cells only as the
requester's side drains.  With no local holder it asks the DHT which ORDB serves the
hash_name, links to it, and forwards the query over a 1-hop circuit (counter + 1); at
counter 5 it answers DB_END instead.  The ORDB never learns who asks or who serves: both
reach it through circuits of at least 3 hops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from peer.errors import PeerError, WireError
from peer.net.tasks import Background
from peer.proto import events as ev
from peer.proto.node import OnionNode
from peer.wire.commands import RelayCommand
from peer.wire.ordb import MAX_COUNTER, TXID_LEN, DbConnected, DbEnd, DbEndReason, DbInfo, DbQuery

log = logging.getLogger(__name__)

Stream = tuple[int, int]  # (circuit handle, stream id)

#: quotas per circuit
MAX_ANNOUNCED_PER_CIRCUIT = 256
MAX_QUERIES_PER_CIRCUIT = 16
HOLDER_ANSWER_TIMEOUT = 10.0  # seconds for a holder to open its answer stream
SPLICE_HIGH_WATER = 128 * 1024  # bytes queued toward the requester before we stop acknowledging
PUBLISH_RETRY_FIRST = 2.0  # seconds before a provider record no other node took is published again
PUBLISH_ATTEMPTS = 6


@dataclass(eq=False)
class Holder:
    stream: Stream  # the holder's announce stream at this ORDB
    piece_count: int
    ranges: tuple[tuple[int, int], ...]
    facilitator: bool = False
    load: int = 0

    def has(self, first: int, count: int) -> bool:
        if count == 0:
            return True  # the manifest: every holder has it
        end = first + count
        return any(s <= first and end <= e for s, e in self.ranges)


@dataclass(eq=False)
class Query:
    """A requester's query stream at this ORDB and where its answer comes from."""

    stream: Stream
    msg: DbQuery
    holder: Holder | None = None
    tried: list[Holder] = field(default_factory=list)
    source: Stream | None = None  # the holder's answer stream (or our forward stream) once paired
    txid: bytes = b""
    timer: asyncio.TimerHandle | None = None
    unacked: int = 0  # DB_DATA cells received from the source and not yet acknowledged
    delivered: int = 0
    forwarded_to: Stream | None = None  # our stream to another ORDB, when we forwarded


class LocalContent(Protocol):
    """What this peer itself holds or fetches (the runtime's holder and downloads)."""

    def involved(self, hash_name: bytes) -> bool: ...

    async def has(self, q: DbQuery) -> bool: ...

    async def serve_here(self, stream: Stream, q: DbQuery) -> None: ...


class OrdbService:
    """The ORDB half of a peer.  Feed it every event of the node; it answers through the node."""

    def __init__(
        self,
        node: OnionNode,
        *,
        kick: Callable[[], None],
        find_providers: Callable[[bytes], Awaitable[list[object]]] | None = None,
        forward: Callable[[object, bytes], Awaitable[Stream | None]] | None = None,
        publish_provider: Callable[[bytes], Awaitable[int]] | None = None,
        local: LocalContent | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self._kick = kick
        self._find_providers = find_providers
        self._forward = forward
        self._publish = publish_provider
        self._local = local
        self.rng = rng or random.Random()
        self.holders: dict[bytes, list[Holder]] = {}
        self.announce: dict[Stream, dict[bytes, Holder]] = {}
        self.queries: dict[Stream, Query] = {}
        self.by_txid: dict[bytes, Query] = {}
        self.by_source: dict[Stream, Query] = {}
        self.published: set[bytes] = set()
        self.stats = {
            "queries": 0,
            "answered": 0,
            "forwarded": 0,
            "unavailable": 0,
            "bad_piece_drops": 0,
            "publish_retries": 0,
        }
        self._background = Background()
        self.last_forward_error = ""
        self.retired_txids: deque[bytes] = deque(maxlen=256)
        self.finished: dict[Stream, Query] = {}  # recently finished queries (bounded)

    # ---- dispatch ----------------------------------------------------------------------------
    def owns(self, stream: Stream) -> bool:
        return stream in self.queries or stream in self.announce or stream in self.by_source

    def handle(self, e: ev.Event) -> bool:
        """Process an event; True if it was ORDB business."""
        if isinstance(e, ev.RelayMessageReceived):
            key = (e.circ, e.stream_id)
            try:
                if e.hop == -1:
                    return self._at_endpoint(key, e.command, e.data)
                if key in self.by_source:  # our forward stream to another ORDB
                    return self._from_source(key, e.command, e.data)
            except WireError as exc:
                log.debug("malformed ORDB message: %s", exc)
                self.node.db_end(e.circ, e.stream_id, DbEnd(DbEndReason.UNAVAILABLE).encode())
                self._kick()
                return True
            return False
        if isinstance(e, ev.StreamWritable):
            q = self.queries.get((e.circ, e.stream_id))
            if q is not None and q.source is not None and q.unacked:
                self.node.stream_consumed(q.source[0], q.source[1], q.unacked)
                q.unacked = 0
                self._kick()
            return q is not None
        if isinstance(e, ev.CircuitClosed):
            self._circuit_gone(e.circ)
        return False

    def _at_endpoint(self, key: Stream, cmd: int, data: bytes) -> bool:
        if cmd == RelayCommand.DB_INFO:
            self._on_info(key, DbInfo.decode(data))
        elif cmd == RelayCommand.DB_QUERY:
            self._on_query(key, DbQuery.decode(data))
        elif key in self.by_source or cmd == RelayCommand.DB_CONNECTED:
            return self._from_source(key, cmd, data)
        elif cmd == RelayCommand.DB_END:
            self._on_requester_end(key, DbEnd.decode(data))
        else:
            return False
        return True

    # ---- holders ------------------------------------------------------------------------------
    def _on_info(self, key: Stream, info: DbInfo) -> None:
        known = self.announce.setdefault(key, {})
        for entry in info.entries:
            h = known.get(entry.hash_name)
            ranges = tuple((r.start, r.end) for r in entry.ranges)
            if h is None:
                if len(known) >= MAX_ANNOUNCED_PER_CIRCUIT:
                    continue  # quota: a circuit cannot flood the index
                h = Holder(key, entry.piece_count, ranges, info.facilitator)
                known[entry.hash_name] = h
                self.holders.setdefault(entry.hash_name, []).append(h)
                if entry.hash_name not in self.published and self._publish is not None:
                    self.published.add(entry.hash_name)
                    self._background.spawn(self._publish_provider(entry.hash_name))
            else:
                h.ranges, h.piece_count = ranges, entry.piece_count

    async def _publish_provider(self, hash_name: bytes) -> None:
        """Put our provider record for a hash_name in the DHT, trying again with a growing pause
        while no other node accepted it (under load the STOREs time out, and a record only we
        keep leaves every other ORDB answering "nothing found")."""
        assert self._publish is not None
        pause = PUBLISH_RETRY_FIRST
        for _attempt in range(PUBLISH_ATTEMPTS):
            accepted = await self._publish(hash_name)
            if accepted >= 2 or hash_name not in self.holders:
                return
            self.stats["publish_retries"] += 1
            await asyncio.sleep(pause * self.rng.uniform(0.75, 1.25))
            pause *= 2
        # the DHT node republishes it on its own schedule; a new DB_INFO tries again sooner
        self.published.discard(hash_name)

    def _drop_holder(self, hash_name: bytes, holder: Holder) -> None:
        lst = self.holders.get(hash_name)
        if lst and holder in lst:
            lst.remove(holder)
            if not lst:
                del self.holders[hash_name]
        known = self.announce.get(holder.stream)
        if known is not None:
            known.pop(hash_name, None)

    def _pick(self, q: Query) -> Holder | None:
        cands = [
            h
            for h in self.holders.get(q.msg.hash_name, [])
            if h not in q.tried and h.has(q.msg.first, q.msg.count)
        ]
        if not cands:
            return None
        low = min(h.load for h in cands)
        best = [h for h in cands if h.load == low]
        # the least loaded first; among equals a facilitator last (keep them for rare content), else random
        best.sort(key=lambda h: h.facilitator)
        return self.rng.choice([h for h in best if h.facilitator == best[0].facilitator])

    # ---- queries ------------------------------------------------------------------------------
    def _on_query(self, key: Stream, msg: DbQuery) -> None:
        self.stats["queries"] += 1
        if key in self.queries:
            self._end(key, DbEndReason.UNAVAILABLE)  # one query per stream
            return
        if sum(1 for k in self.queries if k[0] == key[0]) >= MAX_QUERIES_PER_CIRCUIT:
            self._end(key, DbEndReason.OVERLOAD)
            return
        q = Query(key, msg)
        self.queries[key] = q
        if self._local is not None and self._local.involved(msg.hash_name):
            self._background.spawn(self._answer_locally(q))
            return
        self._dispatch(q)

    async def _answer_locally(self, q: Query) -> None:
        """We hold (or fetch) this hash_name ourselves: answer from our store or say UNAVAILABLE,
        never forward (the next ORDB would see our identity next to a hash_name we hold or want)."""
        assert self._local is not None
        if await self._local.has(q.msg):
            self.stats["answered"] += 1
            q.source = q.stream  # marks it paired; the delivery runs on the query stream itself
            await self._local.serve_here(q.stream, q.msg)
            self.queries.pop(q.stream, None)
            return
        if self.holders.get(q.msg.hash_name):
            self._dispatch(q)  # other holders announced to us: pairing shows them nothing of us
            return
        self._finish(q, DbEndReason.UNAVAILABLE)

    def _dispatch(self, q: Query) -> None:
        holder = self._pick(q)
        if holder is not None:
            q.holder = holder
            q.tried.append(holder)
            holder.load += 1
            q.txid = os.urandom(TXID_LEN)
            self.by_txid[q.txid] = q
            fwd = DbQuery(q.msg.hash_name, q.msg.first, q.msg.count, q.msg.counter, q.txid)
            self.node.send_relay(holder.stream[0], RelayCommand.DB_QUERY, holder.stream[1], fwd.encode())
            q.timer = asyncio.get_running_loop().call_later(HOLDER_ANSWER_TIMEOUT, self._holder_timeout, q)
            self._kick()
            return
        if q.msg.counter + 1 >= MAX_COUNTER:
            self._finish(q, DbEndReason.LOOP)
            return
        if self._find_providers is not None and self._forward is not None and not q.tried:
            self._background.spawn(self._forward_query(q))
            return
        self._finish(q, DbEndReason.UNAVAILABLE)

    async def _forward_query(self, q: Query) -> None:
        """No local holder: find the ORDB that serves it in the DHT and forward (counter + 1)."""
        assert self._find_providers is not None and self._forward is not None
        q.tried.append(Holder((0, 0), 0, ()))  # marks "forwarding attempted"
        try:
            providers = await self._find_providers(q.msg.hash_name)
        except (PeerError, OSError) as exc:
            self.last_forward_error = f"provider lookup failed: {exc}"
            providers = []
        if not providers:
            self.last_forward_error = "no provider record for the hash_name in the DHT"
        self.rng.shuffle(providers)
        fwd = DbQuery(q.msg.hash_name, q.msg.first, q.msg.count, q.msg.counter + 1)
        for prov in providers[:3]:
            if q.stream not in self.queries:
                return  # the requester went away meanwhile
            try:
                source = await self._forward(prov, fwd.encode())
            except (PeerError, OSError, TimeoutError) as exc:
                self.last_forward_error = f"forwarding failed: {type(exc).__name__}: {exc}"
                continue
            if source is not None:
                self.stats["forwarded"] += 1
                q.source = source
                q.forwarded_to = source
                self.by_source[source] = q
                return
        self._finish(q, DbEndReason.UNAVAILABLE)

    def _holder_timeout(self, q: Query) -> None:
        q.timer = None
        if q.source is None and q.stream in self.queries:
            self._failover(q)

    def _failover(self, q: Query) -> None:
        """The holder did not answer or broke off: tell it to stop (RESET) and try the next one."""
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        if q.source is not None:
            self.by_source.pop(q.source, None)
            self.node.db_end(q.source[0], q.source[1], DbEnd(DbEndReason.RESET, q.txid).encode())
            q.source = None
        self.by_txid.pop(q.txid, None)
        self.retired_txids.append(q.txid)  # a late answer to it gets DB_END RESET
        q.holder = None
        q.unacked = 0
        self._dispatch(q)

    # ---- answers (from a holder, or from the ORDB we forwarded to) ---------------------------
    def _from_source(self, key: Stream, cmd: int, data: bytes) -> bool:
        if cmd == RelayCommand.DB_CONNECTED:
            msg = DbConnected.decode(data)
            q = self.by_source.get(key) or self.by_txid.pop(msg.txid, None)
            if q is None or q.stream not in self.queries:
                # a late answer: another holder took over (failover) or the requester left
                reason = DbEndReason.RESET if msg.txid in self.retired_txids else DbEndReason.FINISHED
                self.node.db_end(key[0], key[1], DbEnd(reason, msg.txid).encode())
                self._kick()
                return True
            if q.timer is not None:
                q.timer.cancel()
                q.timer = None
            q.source = key
            self.by_source[key] = q
            out = DbConnected(bytes(TXID_LEN), msg.kind, msg.first, msg.count, msg.length)
            self.node.send_relay(q.stream[0], RelayCommand.DB_CONNECTED, q.stream[1], out.encode())
            self.stats["answered"] += 1
            self._kick()
            return True
        q = self.by_source.get(key)
        if q is None:
            return False
        if cmd == RelayCommand.DB_DATA:
            ok = self.node.stream_send(q.stream[0], q.stream[1], data)
            q.delivered += len(data)
            if ok:
                self.node.stream_consumed(key[0], key[1], 1 + q.unacked)
                q.unacked = 0
            else:
                # the requester side is full: withhold the SENDMEs until it drains (StreamWritable)
                q.unacked += 1
            self._kick()
        elif cmd == RelayCommand.DB_END:
            end = DbEnd.decode(data)
            self.by_source.pop(key, None)
            q.source = None
            if end.reason in (DbEndReason.DESTROYED, DbEndReason.UNAVAILABLE) and q.delivered == 0:
                self._failover(q)  # nothing delivered yet: another holder can take it
            else:
                self._finish(q, end.reason)
        return True

    def _on_requester_end(self, key: Stream, end: DbEnd) -> None:
        q = self.queries.pop(key, None)
        if q is None:
            late = self.finished.pop(key, None)
            if late is not None and end.reason == DbEndReason.BAD_PIECE:
                self._bad_piece(late)  # the requester verified after we had finished splicing
            return
        if q.timer is not None:
            q.timer.cancel()
        if end.reason == DbEndReason.BAD_PIECE:
            self._bad_piece(q)
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        if q.source is not None:
            self.by_source.pop(q.source, None)
            # BAD_PIECE travels on down a forwarded query, so the holder's own ORDB drops it too
            reason = DbEndReason.BAD_PIECE if end.reason == DbEndReason.BAD_PIECE else DbEndReason.FINISHED
            self.node.db_end(q.source[0], q.source[1], DbEnd(reason, q.txid).encode())
        self.by_txid.pop(q.txid, None)
        self._kick()

    def _bad_piece(self, q: Query) -> None:
        """The requester got a piece that failed verification: the holder circuit that served it no
        longer serves this hash_name here; a forwarded query passes the report on."""
        if q.holder is not None and q.holder.stream != (0, 0):
            self.stats["bad_piece_drops"] += 1
            self._drop_holder(q.msg.hash_name, q.holder)
        elif q.forwarded_to is not None and q.forwarded_to[0] in self.node.circuits:
            self.node.db_end(q.forwarded_to[0], q.forwarded_to[1], DbEnd(DbEndReason.BAD_PIECE).encode())
            self._kick()

    def _finish(self, q: Query, reason: int) -> None:
        if reason == DbEndReason.UNAVAILABLE:
            self.stats["unavailable"] += 1
        self.queries.pop(q.stream, None)
        self.finished[q.stream] = q  # a late DB_END BAD_PIECE may still come for it
        while len(self.finished) > 1024:
            self.finished.pop(next(iter(self.finished)))
        if q.timer is not None:
            q.timer.cancel()
        if q.holder is not None:
            q.holder.load = max(0, q.holder.load - 1)
        self.by_txid.pop(q.txid, None)
        self.node.db_end(q.stream[0], q.stream[1], DbEnd(reason).encode())
        self._kick()

    def _end(self, key: Stream, reason: int) -> None:
        self.node.db_end(key[0], key[1], DbEnd(reason).encode())
        self._kick()

    # ---- circuits going away ------------------------------------------------------------------
    def _circuit_gone(self, circ: int) -> None:
        for key in [k for k in self.announce if k[0] == circ]:
            for hn, holder in self.announce.pop(key).items():
                self._drop_holder(hn, holder)
        for key, q in list(self.by_source.items()):
            if key[0] == circ:
                self.by_source.pop(key, None)
                q.source = None
                if q.stream in self.queries:
                    if q.delivered == 0:
                        self._failover(q)
                    else:
                        self._finish(q, DbEndReason.DESTROYED)
        for key in [k for k in self.queries if k[0] == circ]:
            q = self.queries.pop(key)
            if q.timer is not None:
                q.timer.cancel()
            if q.holder is not None:
                q.holder.load = max(0, q.holder.load - 1)
            if q.source is not None:
                self.by_source.pop(q.source, None)
                self.node.db_end(q.source[0], q.source[1], DbEnd(DbEndReason.FINISHED, q.txid).encode())
        self._kick()

    async def close(self) -> None:
        await self._background.close()

    def status(self) -> dict[str, object]:
        return {
            "hash_names": len(self.holders),
            # per hash_name (first 8 bytes): the announce streams of the holders listed for it
            "holders": {hn.hex()[:16]: [list(h.stream) for h in hs] for hn, hs in self.holders.items()},
            "open_queries": len(self.queries),
            **self.stats,
            "last_forward_error": self.last_forward_error,
            "at": round(time.time()),
        }
