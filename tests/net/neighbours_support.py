"""The link layer of a few peers in one process, for the LinkManager and Signalling tests.

Each :class:`LinkPeer` is the real onion node, driver, :class:`~peer.net.neighbours.LinkManager` and
:class:`~peer.net.signalling.Signalling`, with link events routed to them as ``peer/node.py`` routes
them.  WebRTC links use the loopback ICE policy, TLS links listen on 127.0.0.1.  :class:`Relay` is a
perfect bridge in memory: it hands each sealed blob straight to the target's ``on_introduced``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dht.records import PeerRecord, Route
from peer.crypto.seal import Opened, SealKind, open_sealed, seal
from peer.net.bridgeclient import BridgeClient
from peer.net.driver import NodeDriver
from peer.net.handshake import PeerKeys
from peer.net.neighbours import LinkManager, LinkManagerConfig
from peer.net.signalling import Signalling
from peer.proto import events as ev
from peer.proto.channel import LivenessConfig
from peer.proto.node import OnionNode
from peer.transport.iceconfig import WebRtcConfig
from peer.wire.linkcells import Introduce, Introduced, LinkClosing, LinkKeep
from tests.links.support import wait_for

#: keepalives on, but no link is declared dead while a test runs
LIVENESS = LivenessConfig(keepalive=1.0, dead_after=60.0)
#: a hang guard only: no test asserts on how long anything takes
GUARD = 20.0


class Clock:
    """A wall clock that moves only when told (starts at the real time: seals carry timestamps)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass(eq=False)
class LinkPeer:
    keys: PeerKeys
    host: str
    node: OnionNode
    driver: NodeDriver
    links: LinkManager
    signalling: Signalling
    bridges: dict[str, BridgeClient]
    clock: Clock
    changes: list[int] = field(default_factory=list)  # neighbour count at each on_change
    recorded: list[dict[str, Any]] = field(default_factory=list)  # the driver's test records
    introduced: list[Introduced] = field(default_factory=list)  # DB_INTRODUCED cells received
    asked_to_introduce: list[Introduce] = field(default_factory=list)  # DB_INTRODUCE cells received

    @property
    def node_id(self) -> bytes:
        return self.keys.node_id

    def record(
        self,
        *,
        tls: tuple[str, int] | None = None,
        bridges: tuple[str, ...] = (),
        neighbours: tuple[bytes, ...] = (),
    ) -> PeerRecord:
        endpoints: tuple[tuple[str, str], ...] = (("webrtc", self.host),)
        if tls is not None:
            endpoints += (("tls", f"{tls[0]}:{tls[1]}"),)
        return PeerRecord(
            self.keys.identity.public,
            self.keys.ntor.public,
            self.keys.seal.public,
            Route(endpoints, bridges),
            neighbours,
            False,
            int(self.clock() + 3600),
        ).sign(self.keys.identity)

    def route(self, e: ev.Event) -> None:
        """The link part of ``Peer._on_event``."""
        if isinstance(e, ev.ChannelClosed):
            self.links.channel_closed(e.chan)
        elif isinstance(e, ev.LinkMessageReceived):
            msg = e.message
            if isinstance(msg, Introduce):
                self.asked_to_introduce.append(msg)
                self.signalling.introduce_for(e.chan, msg)
            elif isinstance(msg, Introduced):
                self.introduced.append(msg)
                self.links.on_introduced(msg.source, msg.blob, self.signalling.via_neighbour(e.chan))
            elif isinstance(msg, LinkClosing):
                self.links.on_link_closing(e.chan, msg)
            elif isinstance(msg, LinkKeep):
                self.links.on_link_keep(e.chan, msg)

    def linked_to(self, other: LinkPeer) -> bool:
        n = self.links.neighbours.get(other.node_id)
        return n is not None and not n.link.closed

    async def close(self) -> None:
        await self.links.close()
        for b in self.bridges.values():
            await b.close()
        await self.driver.close()


def make_peer(host: str = "127.0.0.1", **config: Any) -> LinkPeer:
    """A peer's link layer; ``config`` sets LinkManagerConfig fields (needs a running loop)."""
    keys = PeerKeys.generate(os.urandom)
    node = OnionNode(node_id=keys.node_id, ntor_keys={keys.ntor.public: keys.ntor}, randbytes=os.urandom)
    recorded: list[dict[str, Any]] = []
    driver = NodeDriver(node, recorder=recorded.append)  # type: ignore[arg-type]
    clock = Clock()
    links = LinkManager(
        keys=keys,
        driver=driver,
        webrtc=WebRtcConfig.loopback(host),
        config=dataclasses.replace(LinkManagerConfig(liveness=LIVENESS, connect_timeout=GUARD), **config),
        wall_clock=clock,
    )
    bridges: dict[str, BridgeClient] = {}
    p = LinkPeer(keys, host, node, driver, links, Signalling(node, driver, links, bridges), bridges, clock)
    p.recorded = recorded
    driver.on_event = p.route
    links.on_change = lambda: p.changes.append(len(links.neighbours))
    return p


class MakeRoom:
    """A ``make_room`` hook: records each question, runs ``then`` (a drop, say) and answers ``answer``."""

    def __init__(self, answer: bool = False, then: Callable[[], object] | None = None) -> None:
        self.answer = answer
        self.then = then
        self.asked: list[tuple[bytes, int, int]] = []  # (sender, its number of links, purpose)

    def __call__(self, source: bytes, degree: int, purpose: int) -> bool:
        self.asked.append((source, degree, purpose))
        if self.then is not None:
            self.then()
        return self.answer


class Relay:
    """A perfect bridge in memory for a set of peers; records every blob it carried."""

    def __init__(self, *peers: LinkPeer) -> None:
        self.peers = {p.node_id: p for p in peers}
        self.carried: list[tuple[bytes, bytes, bytes]] = []  # (source, target, blob)
        self.deliver = True  # False: blobs vanish (a relay that drops them)

    def via(self, sender: LinkPeer, name: str = "a test relay") -> RelayEnd:
        return RelayEnd(self, sender, name)


class RelayEnd:
    """One peer's side of a :class:`Relay` (a ``Signaller``)."""

    def __init__(self, relay: Relay, sender: LinkPeer, name: str) -> None:
        self.relay = relay
        self.sender = sender
        self.name = name

    async def introduce(self, target: bytes, blob: bytes) -> None:
        self.relay.carried.append((self.sender.node_id, target, blob))
        if not self.relay.deliver:
            return
        dst = self.relay.peers.get(target)
        if dst is None:  # as a bridge does: the target is not here, an empty answer comes back
            self.sender.links.on_introduced(target, b"", self)
        else:
            dst.links.on_introduced(self.sender.node_id, blob, self.relay.via(dst, self.name))


class Lab:
    """Peers made for one test, all closed at its end: ``async with Lab() as lab``."""

    def __init__(self) -> None:
        self.peers: list[LinkPeer] = []

    def peer(self, host: str = "127.0.0.1", **config: Any) -> LinkPeer:
        p = make_peer(host, **config)
        self.peers.append(p)
        return p

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(p.close() for p in self.peers), return_exceptions=True)


def opened(p: LinkPeer, blob: bytes) -> Opened:
    """Open a blob sealed to ``p`` (as ``p`` would)."""
    return open_sealed(p.keys.seal, blob, now=p.clock())


def offer_blob(
    sender: LinkPeer,
    to: LinkPeer,
    sdp: bytes = b"v=0\r\n",
    *,
    purpose: int = 0,
    degree: int = 0,
    signer: LinkPeer | None = None,
    kind: SealKind = SealKind.OFFER,
) -> bytes:
    """A sealed offer as ``LinkManager.connect`` writes it (``signer`` forges another sealer)."""
    payload = bytes([purpose, degree]) + sender.keys.seal.public + sdp
    return seal(
        (signer or sender).keys.identity,
        to.keys.seal.public,
        kind,
        payload,
        now=to.clock(),
        randbytes=os.urandom,
    )


#: what the probe hands in: a blob that does not open
JUNK = b"\x01" + bytes(32) + bytes(40)


async def settle(p: LinkPeer) -> None:
    """Wait until every blob handed to ``p`` so far has been looked at: inbound offers are handled in
    arrival order, and everything up to an answer (or the refusal, or ignoring it) happens in the first
    step, so once a later junk blob is refused the earlier ones are past that point."""
    before = list(p.links.refused)
    p.links.on_introduced(os.urandom(20), JUNK, Relay().via(p))
    assert await wait_for(lambda: p.links.refused != before, GUARD)
