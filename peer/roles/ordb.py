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

The table and every pairing decision live in :class:`peer.roles.pairing.Pairing` (sans-I/O);
this module decodes events for it, carries out the actions it returns on the onion core, and
runs what needs awaiting (the DHT, forwarding, our own store) and the holder-answer timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, assert_never

from peer.errors import PeerError, UsageError, WireError
from peer.net.tasks import Background
from peer.proto import events as ev
from peer.proto.node import OnionNode
from peer.roles.pairing import (
    Acknowledge,
    Action,
    AnswerLocally,
    EndStream,
    Forward,
    Holder,
    Pairing,
    Publish,
    SendConnected,
    SendQuery,
    ServeHere,
    Splice,
)
from peer.wire.commands import RelayCommand
from peer.wire.ordb import TXID_LEN, DbConnected, DbEnd, DbEndReason, DbInfo, DbQuery

log = logging.getLogger(__name__)

Stream = tuple[int, int]  # (circuit handle, stream id)

PUBLISH_RETRY_FIRST = 2.0  # seconds before a provider record no other node took is published again
PUBLISH_ATTEMPTS = 6
FORWARD_TRIES = 3  # provider records tried per forwarded query
PROVIDERS_KEPT = 30.0  # seconds the providers a lookup found serve further forwards of the hash_name
PROVIDERS_CACHED = 256  # hash_names whose providers are kept


class LocalContent(Protocol):
    """What this peer itself holds or fetches (the runtime's holder and downloads)."""

    def involved(self, hash_name: bytes) -> bool: ...

    async def has(self, q: DbQuery) -> bool: ...

    async def serve_here(self, stream: Stream, q: DbQuery) -> None: ...


def _new_txid() -> bytes:
    return os.urandom(TXID_LEN)


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
        self.table = Pairing(
            self.rng,
            _new_txid,
            publish=publish_provider is not None,
            forward=find_providers is not None and forward is not None,
        )
        self.publish_retries = 0
        self.last_forward_error = ""
        self._providers: OrderedDict[bytes, tuple[float, list[object]]] = OrderedDict()
        self._background = Background()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def holders(self) -> dict[bytes, list[Holder]]:
        return self.table.holders

    @property
    def published(self) -> set[bytes]:
        return self.table.published

    @property
    def stats(self) -> dict[str, int]:
        return {**self.table.stats, "publish_retries": self.publish_retries}

    # ---- dispatch ----------------------------------------------------------------------------
    def owns(self, stream: Stream) -> bool:
        return self.table.owns(stream)

    def handle(self, e: ev.Event) -> bool:
        """Process an event; True if it was ORDB business."""
        if isinstance(e, ev.RelayMessageReceived):
            key = (e.circ, e.stream_id)
            try:
                if e.hop == -1:
                    return self._at_endpoint(key, e.command, e.data)
                if self.table.is_source(key):  # our forward stream to another ORDB
                    return self._from_source(key, e.command, e.data)
            except WireError as exc:
                log.debug("malformed ORDB message: %s", exc)
                self.node.db_end(e.circ, e.stream_id, DbEnd(DbEndReason.UNAVAILABLE).encode())
                self._kick()
                return True
            return False
        if isinstance(e, ev.StreamWritable):
            key = (e.circ, e.stream_id)
            if not self.table.is_open(key):
                return False
            self._run(self.table.writable(key))
            return True
        if isinstance(e, ev.CircuitClosed):
            self._run(self.table.circuit_closed(e.circ, self._now()))
        return False

    def _at_endpoint(self, key: Stream, cmd: int, data: bytes) -> bool:
        if cmd == RelayCommand.DB_INFO:
            self._run(self.table.announced(key, DbInfo.decode(data)))
        elif cmd == RelayCommand.DB_QUERY:
            msg = DbQuery.decode(data)
            involved = self._local is not None and self._local.involved(msg.hash_name)
            self._run(self.table.query(key, msg, involved=involved, now=self._now()))
        elif self.table.is_source(key) or cmd == RelayCommand.DB_CONNECTED:
            return self._from_source(key, cmd, data)
        elif cmd == RelayCommand.DB_END:
            self._run(self.table.requester_ended(key, DbEnd.decode(data)))
        else:
            return False
        return True

    def _from_source(self, key: Stream, cmd: int, data: bytes) -> bool:
        """An answer from a holder, or from the ORDB we forwarded to."""
        if cmd == RelayCommand.DB_CONNECTED:
            self._run(self.table.connected(key, DbConnected.decode(data)))
        elif cmd == RelayCommand.DB_DATA:
            self._run(self.table.data(key, data))
        elif cmd == RelayCommand.DB_END:
            self._run(self.table.source_ended(key, DbEnd.decode(data), self._now()))
        return True

    # ---- carrying out the table's actions ----------------------------------------------------
    def _run(self, actions: list[Action]) -> None:
        for a in actions:
            try:
                self._do(a)
            except UsageError as exc:  # the circuit went away; its CircuitClosed cleans up
                log.debug("ORDB action %s not done: %s", type(a).__name__, exc)
        if actions:
            self._kick()
        if any(isinstance(a, SendQuery) for a in actions):
            self._rearm()  # only a query sent to a holder sets a deadline

    def _do(self, a: Action) -> None:
        node = self.node
        match a:
            case SendQuery(stream=(circ, sid), msg=msg):
                node.send_relay(circ, RelayCommand.DB_QUERY, sid, msg.encode())
            case SendConnected(stream=(circ, sid), msg=msg):
                node.send_relay(circ, RelayCommand.DB_CONNECTED, sid, msg.encode())
            case EndStream(stream=(circ, sid)):
                node.db_end(circ, sid, a.msg.encode())
            case Splice(source=source, to=(circ, sid), data=data):
                accepted = node.stream_send(circ, sid, data)
                self._run(self.table.spliced(source, accepted))
            case Acknowledge(stream=(circ, sid), cells=cells):
                node.stream_consumed(circ, sid, cells)
            case Forward(stream=stream, msg=msg):
                self._background.spawn(self._forward_query(stream, msg))
            case AnswerLocally(stream=stream, msg=msg):
                self._background.spawn(self._answer_locally(stream, msg))
            case ServeHere(stream=stream, msg=msg):
                self._background.spawn(self._serve_here(stream, msg))
            case Publish(hash_name=hash_name):
                self._background.spawn(self._publish_provider(hash_name))
            case _:
                assert_never(a)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _rearm(self) -> None:
        """Keep one loop timer at the table's next holder-answer deadline (a deadline that went
        away meanwhile just fires for nothing)."""
        when = self.table.next_deadline()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, when
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._run(self.table.timeouts(self._now()))
        self._rearm()

    # ---- what needs awaiting -----------------------------------------------------------------
    async def _publish_provider(self, hash_name: bytes) -> None:
        """Put our provider record for a hash_name in the DHT, trying again with a growing pause
        while no other node accepted it (under load the STOREs time out, and a record only we
        keep leaves every other ORDB answering "nothing found")."""
        assert self._publish is not None
        pause = PUBLISH_RETRY_FIRST
        for _attempt in range(PUBLISH_ATTEMPTS):
            accepted = await self._publish(hash_name)
            if accepted >= 2 or hash_name not in self.table.holders:
                return
            self.publish_retries += 1
            await asyncio.sleep(pause * self.rng.uniform(0.75, 1.25))
            pause *= 2
        # the DHT node republishes it on its own schedule; a new DB_INFO tries again sooner
        self.table.unpublished(hash_name)

    async def _forward_query(self, stream: Stream, fwd: DbQuery) -> None:
        """No local holder: find the ORDB that serves it in the DHT and forward (counter + 1)."""
        assert self._forward is not None
        providers = await self._providers_of(fwd.hash_name)
        self.rng.shuffle(providers)
        for prov in providers[:FORWARD_TRIES]:
            if not self.table.is_open(stream):
                return  # the requester went away meanwhile
            try:
                source = await self._forward(prov, fwd.encode())
            except (PeerError, OSError, TimeoutError) as exc:
                self.last_forward_error = f"forwarding failed: {type(exc).__name__}: {exc}"
                continue
            if source is not None:
                self._run(self.table.forwarded(stream, source))
                return
        self._run(self.table.forward_failed(stream))

    async def _providers_of(self, hash_name: bytes) -> list[object]:
        """The ORDBs the DHT names for ``hash_name``: those a lookup found less than
        ``PROVIDERS_KEPT`` seconds ago (a download asks many small queries), else a lookup.

        A lookup that finds nobody is not made again while the query waits: the requester, told
        UNAVAILABLE at once, asks elsewhere, where a stream's piece may come sooner."""
        assert self._find_providers is not None
        kept = self._providers.get(hash_name)
        if kept is not None and kept[0] > self._now():
            return list(kept[1])
        try:
            providers = await self._find_providers(hash_name)
        except (PeerError, OSError) as exc:
            self.last_forward_error = f"provider lookup failed: {exc}"
            return []
        if not providers:
            self.last_forward_error = "no provider record for the hash_name in the DHT"
            return []
        self._providers[hash_name] = (self._now() + PROVIDERS_KEPT, list(providers))
        self._providers.move_to_end(hash_name)
        while len(self._providers) > PROVIDERS_CACHED:
            self._providers.popitem(last=False)
        return list(providers)

    async def _answer_locally(self, stream: Stream, msg: DbQuery) -> None:
        """We hold (or fetch) this hash_name ourselves: answer from our store, or pair with a
        holder that announced to us, or say UNAVAILABLE; never forward."""
        assert self._local is not None
        has = await self._local.has(msg)
        self._run(self.table.local_checked(stream, has, self._now()))

    async def _serve_here(self, stream: Stream, msg: DbQuery) -> None:
        assert self._local is not None
        try:
            await self._local.serve_here(stream, msg)
        finally:
            self.table.local_served(stream)

    # ---- life cycle and status ---------------------------------------------------------------
    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        await self._background.close()

    def status(self) -> dict[str, object]:
        return {
            "hash_names": len(self.table.holders),
            # per hash_name (first 8 bytes): the announce streams of the holders listed for it
            "holders": {hn.hex()[:16]: [list(h.stream) for h in hs] for hn, hs in self.holders.items()},
            "open_queries": len(self.table.queries),
            **self.stats,
            "last_forward_error": self.last_forward_error,
            "at": round(time.time()),
        }
