"""Long-lived links to neighbours (DESIGN §4): WebRTC over sealed signalling, K at most.

Links are opened on their own schedule, never inside an EXTEND: the manager keeps at most
K links in all (inbound and outbound), always including links to its guards, the rest to
peers picked at random from its view, rotated slowly.  Signalling goes through a bridge the
target is registered with, or through a neighbour that is linked to the target
(introducer); either way the offer and the answer are sealed, so the relay sees neither
the SDP nor its ICE candidates.  When two peers connect to each other at once (glare), the
link opened by the lower NodeID wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from dht.records import PeerRecord
from peer.crypto.seal import SealError, SealKind, open_sealed, seal
from peer.driver import NodeDriver
from peer.errors import HandshakeError, PeerError, TransportError, WireError
from peer.peerlink import PeerKeys, peer_handshake
from peer.proto.channel import LivenessConfig
from peer.transport.base import Link
from peer.transport.webrtc import WebRtcConfig, accept_offer, create_offer

log = logging.getLogger(__name__)


class Signaller(Protocol):
    """A way to deliver a sealed blob to a peer: a bridge connection or a neighbour's channel."""

    name: str

    async def introduce(self, target: bytes, blob: bytes) -> None: ...


class LinkRefused(PeerError):
    kind = "link-refused"


@dataclass(eq=False)
class Neighbour:
    node_id: bytes
    chan: int
    link: Link
    initiator: bool
    opened_at: float
    guard: bool = False


@dataclass
class LinkManagerConfig:
    max_links: int = 8
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    connect_timeout: float = 20.0
    maintain_interval: float = 2.0
    rotate_interval: float = 600.0  # replace one random non-guard link this often


class LinkManager:
    def __init__(
        self,
        *,
        keys: PeerKeys,
        driver: NodeDriver,
        webrtc: WebRtcConfig,
        config: LinkManagerConfig | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.driver = driver
        self.webrtc = webrtc
        self.config = config or LinkManagerConfig()
        self.rng = rng or random.Random()
        self.wall = wall_clock
        self.neighbours: dict[bytes, Neighbour] = {}
        self.by_chan: dict[int, bytes] = {}
        self.guards: set[bytes] = set()
        self._pending_answers: dict[bytes, asyncio.Future[bytes]] = {}
        self._connecting: set[bytes] = set()
        self._accepting: set[bytes] = set()
        self.refused: list[str] = []  # recent refusal reasons, for status
        self.on_change: Callable[[], Awaitable[None] | None] | None = None

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.neighbours) + len(self._connecting) + len(self._accepting)

    def neighbour_ids(self) -> list[bytes]:
        return list(self.neighbours)

    def chan_of(self, node_id: bytes) -> int | None:
        n = self.neighbours.get(node_id)
        return n.chan if n is not None else None

    def channel_closed(self, chan: int) -> None:
        nid = self.by_chan.pop(chan, None)
        if nid is not None and (n := self.neighbours.get(nid)) is not None and n.chan == chan:
            del self.neighbours[nid]
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            res = self.on_change()
            if asyncio.iscoroutine(res):
                asyncio.get_running_loop().create_task(res)

    def _refuse(self, reason: str) -> None:
        self.refused = [*self.refused[-19:], reason]
        log.warning("link refused: %s", reason)

    # ---- outbound ----------------------------------------------------------------------------
    async def connect(self, record: PeerRecord, via: Signaller) -> Neighbour:
        """Open a WebRTC link to ``record``'s peer, signalling through ``via``."""
        target = record.node_id
        if target in self.neighbours:
            return self.neighbours[target]
        if target == self.keys.node_id:
            raise LinkRefused("a link to ourselves")
        self._connecting.add(target)
        pending = None
        try:
            pending, offer = await create_offer(self.webrtc)
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._pending_answers[target] = fut
            # the offer carries our seal key, so the answer can be sealed back to us
            blob = seal(self.keys.identity, record.seal_key, SealKind.OFFER,
                        self.keys.seal.public + offer.encode(), now=self.wall(), randbytes=self.rng.randbytes)
            await via.introduce(target, blob)
            answer_blob = await asyncio.wait_for(fut, self.config.connect_timeout)
            if not answer_blob:
                raise LinkRefused(f"the peer is not reachable through {via.name}")
            opened = open_sealed(self.keys.seal, answer_blob, now=self.wall())
            if opened.sender_node_id != target or opened.kind != SealKind.ANSWER:
                raise LinkRefused("the answer was not sealed by the peer we asked")
            link = await pending.complete(opened.payload.decode("ascii"), self.config.connect_timeout)
            pending = None
            return await self._adopt(link, target, initiator=True)
        except (TimeoutError, SealError, WireError, HandshakeError, TransportError, UnicodeDecodeError) as exc:
            reason = f"link to a peer failed: {type(exc).__name__}: {exc}"
            self._refuse(reason)
            raise LinkRefused(reason) from exc
        finally:
            self._pending_answers.pop(target, None)
            self._connecting.discard(target)
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending.cancel()

    # ---- inbound -----------------------------------------------------------------------------
    def on_introduced(self, source: bytes, blob: bytes, via: Signaller) -> None:
        """A sealed blob for us arrived through ``via`` (an answer we wait for, or an offer)."""
        fut = self._pending_answers.get(source)
        if fut is not None and not fut.done():
            fut.set_result(blob)
            return
        if not blob:
            return
        asyncio.get_running_loop().create_task(self._accept(source, blob, via))

    async def _accept(self, source: bytes, blob: bytes, via: Signaller) -> None:
        try:
            opened = open_sealed(self.keys.seal, blob, now=self.wall())
        except (SealError, WireError) as exc:
            self._refuse(f"an offer that does not open: {exc}")
            return
        if opened.sender_node_id != source or opened.kind != SealKind.OFFER:
            self._refuse("an offer whose sender is not who the relay says")
            return
        if source in self.neighbours or source in self._accepting:
            return
        if source in self._connecting and self.keys.node_id < source:
            return  # glare: our own outbound link wins (lower NodeID)
        if self.count >= self.config.max_links and source not in self.guards:
            self._refuse("an offer while we hold our maximum of links")
            return
        if len(opened.payload) < 33:
            self._refuse("a malformed offer")
            return
        their_seal, sdp = opened.payload[:32], opened.payload[32:]
        self._accepting.add(source)
        try:
            link, answer = await accept_offer(sdp.decode("ascii"), self.webrtc)
            reply = seal(self.keys.identity, their_seal, SealKind.ANSWER,
                         answer.encode(), now=self.wall(), randbytes=self.rng.randbytes)
            await via.introduce(source, reply)
            await link.wait_open(self.config.connect_timeout)
            await self._adopt(link, source, initiator=False)
        except (TimeoutError, PeerError, UnicodeDecodeError) as exc:
            self._refuse(f"an inbound link failed: {type(exc).__name__}: {exc}")
        finally:
            self._accepting.discard(source)

    # ---- both ---------------------------------------------------------------------------------
    async def _adopt(self, link: Link, node_id: bytes, *, initiator: bool) -> Neighbour:
        chan = self.driver.add_link(link, peer_handshake(self.keys, link, self.wall), liveness=self.config.liveness)
        try:
            info = await self.driver.wait_open(chan, self.config.connect_timeout)
        except (TimeoutError, PeerError) as exc:
            self.driver.node.close_channel(chan, "handshake failed")
            with contextlib.suppress(Exception):
                await link.close()
            raise LinkRefused(f"link handshake failed: {exc}") from exc
        if info.node_id != node_id:
            self.driver.node.close_channel(chan, "wrong peer")
            raise LinkRefused("the link handshake proved another identity than the one we signalled")
        old = self.neighbours.get(node_id)
        if old is not None:
            # glare: keep the link opened by the lower NodeID
            lower_is_us = self.keys.node_id < node_id
            keep_new = initiator == lower_is_us
            loser = old if keep_new else None
            if loser is None:
                self.driver.node.close_channel(chan, "duplicate link (glare)")
                return old
            self.driver.node.close_channel(loser.chan, "duplicate link (glare)")
            self.by_chan.pop(loser.chan, None)
        n = Neighbour(node_id, chan, link, initiator, self.wall(), guard=node_id in self.guards)
        self.neighbours[node_id] = n
        self.by_chan[chan] = node_id
        self.driver._kick()
        self._changed()
        return n

    async def close(self) -> None:
        for n in list(self.neighbours.values()):
            self.driver.node.close_channel(n.chan, "shutting down")
            with contextlib.suppress(Exception):
                await n.link.close()
        self.neighbours.clear()
