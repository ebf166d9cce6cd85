"""Long-lived links to neighbours (DESIGN §4): WebRTC over sealed signalling or TLS, K at most.

Links are opened on their own schedule, never inside an EXTEND: the manager keeps at most
K links in all (inbound and outbound), always including links to its guards, the rest to
peers picked at random from its view, rotated slowly.  Signalling goes through a bridge the
target is registered with, or through a neighbour that is linked to the target
(introducer); either way the offer and the answer are sealed, so the relay sees neither
the SDP nor its ICE candidates.  When two peers connect to each other at once (glare), the
link opened by the lower NodeID wins.

A peer with a reachable address may also accept TLS links (``listen_tls``) and list a ``tls``
endpoint in its record; others then link to it directly over TLS, with no signalling at all.
The TLS server presents a self-signed certificate and both ends certify it in their peer
certificates (see :func:`peer.net.handshake.peer_handshake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dht.records import PeerRecord
from peer.crypto.seal import SealError, SealKind, open_sealed, seal
from peer.errors import HandshakeError, PeerError, TransportError, WireError
from peer.net.driver import NodeDriver
from peer.net.handshake import PeerKeys, peer_handshake
from peer.net.tasks import Background
from peer.proto.channel import LivenessConfig
from peer.proto.peerinfo import PeerInfo
from peer.transport.base import Link
from peer.transport.tls import TlsLink, TlsServer, connect_tls, serve_tls
from peer.transport.webrtc import WebRtcConfig, accept_offer, create_offer
from peer.wire.commands import CellCommand
from peer.wire.linkcells import LinkCloseCode, LinkClosing, LinkKeep

log = logging.getLogger(__name__)

#: what DB_LINK_CLOSING says, per code (fixed texts: nothing about either peer goes on the wire)
CLOSE_TEXT = {
    LinkCloseCode.FULL: "the peer holds its maximum of links",
    LinkCloseCode.SHUTDOWN: "the peer is stopping",
    LinkCloseCode.ROTATED: "the peer rotates its links",
}


class Signaller(Protocol):
    """A way to deliver a sealed blob to a peer: a bridge connection or a neighbour's channel."""

    name: str

    async def introduce(self, target: bytes, blob: bytes) -> None: ...


class LinkRefused(PeerError):
    kind = "link-refused"


class PeerFull(LinkRefused):
    """The peer answered that it holds its maximum of links (asked again after the short back-off)."""


@dataclass(eq=False)
class Neighbour:
    node_id: bytes
    chan: int
    link: Link
    initiator: bool
    opened_at: float
    transport: str = "webrtc"
    kept: bool = False  # the peer uses us as its guard (DB_LINK_KEEP): never dropped to rotate


@dataclass
class LinkManagerConfig:
    max_links: int = 8
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    connect_timeout: float = 20.0
    maintain_interval: float = 2.0
    rotate_interval: float = 600.0  # replace one random non-guard link this often
    full_backoff: float = 5.0  # do not ask a peer that is full again for this long
    failure_backoff: float = 30.0
    max_ordb_links: int = 16


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
        self.ordb_links: dict[bytes, Neighbour] = {}  # ORDB-to-ORDB links: outside K, not neighbours
        self.by_chan: dict[int, bytes] = {}
        self.guards: set[bytes] = set()
        self._pending_answers: dict[bytes, asyncio.Future[bytes]] = {}
        self._connecting: set[bytes] = set()
        self._accepting: set[bytes] = set()
        self.refused: list[str] = []  # recent refusal reasons, for status
        self.dropped: list[str] = []  # why we recently closed links of our own accord, for status
        self.backoff: dict[bytes, float] = {}  # peers not to ask again before a time
        #: called when an offer arrives while we are full: drop a link for it? (runtime); gets the
        #: sender, its number of links and the offer's purpose
        self.make_room: Callable[[bytes, int, int], bool] | None = None
        self.on_change: Callable[[], Awaitable[None] | None] | None = None
        #: is this peer one of our own ORDBs now? (runtime).  We hold no ORDB-to-ORDB link with it,
        #: either way: it sees what we ask for or serve, and must not also see our address (DESIGN §5).
        self.is_our_ordb: Callable[[bytes], bool] | None = None
        #: called when an ORDB-to-ORDB link is up (they are not neighbours: on_change is not called)
        self.on_ordb_link: Callable[[bytes], None] | None = None
        self.tls_server: TlsServer | None = None
        self._background = Background()  # inbound link setups in progress, cancelled on close
        self._accepting_tls = 0

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.neighbours) + len(self._connecting) + len(self._accepting)

    def neighbour_ids(self) -> list[bytes]:
        return list(self.neighbours)

    def linked_ids(self) -> set[bytes]:
        """Every peer we hold a direct link to: neighbours and ORDB-to-ORDB links."""
        return set(self.neighbours) | set(self.ordb_links)

    def _keeps_apart(self, node_id: bytes) -> bool:
        return self.is_our_ordb is not None and self.is_our_ordb(node_id)

    def chan_of(self, node_id: bytes, *, ordb: bool = False) -> int | None:
        n = self.neighbours.get(node_id) or (self.ordb_links.get(node_id) if ordb else None)
        return n.chan if n is not None else None

    def drop(self, node_id: bytes, why: str, code: LinkCloseCode = LinkCloseCode.ROTATED) -> None:
        """Close our link to a neighbour, telling it why first (DB_LINK_CLOSING)."""
        n = self.neighbours.pop(node_id, None)
        if n is not None:
            self.dropped = [*self.dropped[-19:], why]
            self.by_chan.pop(n.chan, None)
            self._say_closing(n.chan, code)
            self._background.spawn(self.driver.close_channel_after_output(n.chan, why))
            self._changed()

    def drop_ordb_link(self, node_id: bytes, why: str) -> None:
        """Close our ORDB-to-ORDB link to ``node_id`` (it is a direct link: while it stands, neither
        end may use the other as an ORDB for its own circuits, DESIGN §5)."""
        n = self.ordb_links.pop(node_id, None)
        if n is not None:
            self.by_chan.pop(n.chan, None)
            self._background.spawn(self.driver.close_channel_after_output(n.chan, why))

    def _say_closing(self, chan: int, code: LinkCloseCode) -> None:
        msg = LinkClosing(code, CLOSE_TEXT[code])
        self.driver.node.send_link_message(chan, CellCommand.DB_LINK_CLOSING, msg.encode_payload())

    def set_guards(self, guards: set[bytes]) -> None:
        """Our guards changed: ask those we are already linked to to keep their link to us."""
        for g in guards - self.guards:
            if (n := self.neighbours.get(g)) is not None:
                self._say_keep(n.chan)
        self.guards = set(guards)

    def _say_keep(self, chan: int) -> None:
        self.driver.node.send_link_message(
            chan, CellCommand.DB_LINK_KEEP, LinkKeep(LinkKeep.GUARD).encode_payload()
        )
        self.driver.flush()

    def kept_ids(self) -> set[bytes]:
        """Neighbours that use us as their guard."""
        return {nid for nid, n in self.neighbours.items() if n.kept}

    def on_link_keep(self, chan: int, msg: LinkKeep) -> None:
        """A neighbour says we are its guard.  At most half of K links are kept this way, so
        that peers with many identities cannot freeze our neighbour set."""
        nid = self.by_chan.get(chan)
        n = self.neighbours.get(nid) if nid is not None else None
        if n is None or n.chan != chan or not msg.flags & LinkKeep.GUARD:
            return
        if n.kept or len(self.kept_ids()) < max(1, self.config.max_links // 2):
            n.kept = True

    def on_link_closing(self, chan: int, msg: LinkClosing) -> None:
        """A neighbour says it closes our link next: when may we ask it again?"""
        nid = self.by_chan.get(chan)
        if nid is None:
            return
        if msg.code == LinkCloseCode.FULL:
            self.backoff[nid] = self.wall() + self.config.full_backoff
            self._refuse(CLOSE_TEXT[LinkCloseCode.FULL])
        else:
            if msg.code == LinkCloseCode.SHUTDOWN:
                self.backoff[nid] = self.wall() + self.config.failure_backoff
            known = msg.code in CLOSE_TEXT
            self.dropped = [
                *self.dropped[-19:],
                CLOSE_TEXT[LinkCloseCode(msg.code)] if known else "closed by the peer",
            ]

    def may_try(self, node_id: bytes) -> bool:
        return self.backoff.get(node_id, 0.0) <= self.wall() and node_id not in self._connecting

    def channel_closed(self, chan: int) -> None:
        if (record := self.driver.recorder) is not None:  # test only (DESIGN §11): the link's end
            record({"kind": "neighbour_closed", "chan": chan})
        nid = self.by_chan.get(chan)
        if nid is not None and (o := self.ordb_links.get(nid)) is not None and o.chan == chan:
            del self.ordb_links[nid]
            del self.by_chan[chan]
            return
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
    async def connect(
        self, record: PeerRecord, via: Signaller | Sequence[Signaller] | None, *, purpose: int = 0
    ) -> Neighbour:
        """Open a link to ``record``'s peer: over TLS when its record lists a ``tls`` endpoint (and
        this is a neighbour link), else over WebRTC, signalling through ``via``.

        ``purpose`` 0 is a neighbour link (counted in K, listed in our record); 1 is an
        ORDB-to-ORDB link (DESIGN §6: the exception; it carries no end user's identity); 2 is a
        neighbour link opened by a rotation (a full peer may rotate one of its own links for it)."""
        target = record.node_id
        if target in self.neighbours:
            return self.neighbours[target]
        if target == self.keys.node_id:
            raise LinkRefused("a link to ourselves")
        if purpose == 1 and self._keeps_apart(target):
            raise LinkRefused("an ORDB-to-ORDB link to one of our own ORDBs")
        tls = tls_endpoint(record) if purpose != 1 else None
        vias: list[Signaller] = [] if via is None else [via] if not isinstance(via, Sequence) else list(via)
        if tls is None and not vias:
            raise LinkRefused("no way to reach the peer: no TLS endpoint and no signalling route")
        self._connecting.add(target)
        pending = None
        try:
            if tls is not None:
                tls_link = await connect_tls(*tls, timeout=self.config.connect_timeout)
                return await self._adopt(tls_link, target, initiator=True)
            pending, offer = await create_offer(self.webrtc)
            # the offer carries our seal key, so the answer can be sealed back to us
            degree = min(255, len(self.neighbours))  # lets a full peer make room for a lonely one
            answer_blob = b""
            for v in vias:  # introducers first (records lag: one may no longer reach the peer), bridges last
                fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self._pending_answers[target] = fut
                blob = seal(
                    self.keys.identity,
                    record.seal_key,
                    SealKind.OFFER,
                    bytes([purpose, degree]) + self.keys.seal.public + offer.encode(),
                    now=self.wall(),
                    randbytes=self.rng.randbytes,
                )
                await v.introduce(target, blob)
                answer_blob = await asyncio.wait_for(fut, self.config.connect_timeout)
                if (won := self.neighbours.get(target)) is not None:
                    return won  # glare: the peer's own offer, accepted meanwhile, made the link
                if answer_blob:
                    break
            if not answer_blob:
                raise LinkRefused(f"the peer is not reachable through {' or '.join(v.name for v in vias)}")
            opened = open_sealed(self.keys.seal, answer_blob, now=self.wall())
            if opened.sender_node_id != target or opened.kind != SealKind.ANSWER:
                raise LinkRefused("the answer was not sealed by the peer we asked")
            if not opened.payload:
                self.backoff[target] = self.wall() + self.config.full_backoff
                raise PeerFull("the peer holds its maximum of links")
            link = await pending.complete(opened.payload.decode("ascii"), self.config.connect_timeout)
            pending = None
            return await self._adopt(link, target, initiator=True, ordb=purpose == 1)
        except (
            TimeoutError,
            SealError,
            WireError,
            HandshakeError,
            TransportError,
            UnicodeDecodeError,
            LinkRefused,
        ) as exc:
            reason = f"link to a peer failed: {type(exc).__name__}: {exc}"
            if not isinstance(exc, PeerFull):  # a full peer keeps its shorter back-off
                self.backoff[target] = self.wall() + self.config.failure_backoff
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
        if fut is not None and not fut.done() and not self._is_offer(blob):
            fut.set_result(blob)
            return
        if not blob:
            return
        self._background.spawn(self._accept(source, blob, via))

    def _is_offer(self, blob: bytes) -> bool:
        """Glare: the peer we wait on for an answer sent an offer of its own instead."""
        try:
            return bool(blob) and open_sealed(self.keys.seal, blob, now=self.wall()).kind == SealKind.OFFER
        except (SealError, WireError):
            return False

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
        if len(opened.payload) < 35 or opened.payload[0] not in (0, 1, 2):
            self._refuse("a malformed offer")
            return
        purpose, degree = opened.payload[0], opened.payload[1]
        their_seal, sdp = opened.payload[2:34], opened.payload[34:]
        if purpose == 1:
            # one of our ORDBs would learn our address: refused as a full peer refuses (it cannot tell)
            refuse = len(self.ordb_links) >= self.config.max_ordb_links or self._keeps_apart(source)
        else:
            refuse = (
                self.count >= self.config.max_links
                and source not in self.guards
                and not (self.make_room is not None and self.make_room(source, degree, purpose))
            )
        if refuse:
            # say so at once (a sealed empty answer) rather than let the other side time out
            with contextlib.suppress(PeerError, ValueError):  # a bad seal key: nothing to say
                empty = seal(
                    self.keys.identity,
                    their_seal,
                    SealKind.ANSWER,
                    b"",
                    now=self.wall(),
                    randbytes=self.rng.randbytes,
                )
                await via.introduce(source, empty)
            return
        self._accepting.add(source)
        link: Link | None = None
        adopted = False
        try:
            link, answer = await accept_offer(sdp.decode("ascii"), self.webrtc)
            reply = seal(
                self.keys.identity,
                their_seal,
                SealKind.ANSWER,
                answer.encode(),
                now=self.wall(),
                randbytes=self.rng.randbytes,
            )
            await via.introduce(source, reply)
            await link.wait_open(self.config.connect_timeout)
            await self._adopt(link, source, initiator=False, ordb=purpose == 1)
            adopted = True
        except (TimeoutError, PeerError, UnicodeDecodeError) as exc:
            self._refuse(f"an inbound link failed: {type(exc).__name__}: {exc}")
        finally:
            self._accepting.discard(source)
            if link is not None and not adopted:  # failed or cancelled half-way: nothing may linger
                with contextlib.suppress(Exception):
                    await link.close()

    # ---- both ---------------------------------------------------------------------------------
    async def _handshake(self, link: Link) -> tuple[int, PeerInfo]:
        chan = self.driver.add_link(
            link, peer_handshake(self.keys, link, self.wall), liveness=self.config.liveness
        )
        try:
            info = await self.driver.wait_open(chan, self.config.connect_timeout)
        except (TimeoutError, PeerError) as exc:
            self.driver.node.close_channel(chan, "handshake failed")
            with contextlib.suppress(Exception):
                await link.close()
            raise LinkRefused(f"link handshake failed: {exc}") from exc
        return chan, info

    async def _adopt(self, link: Link, node_id: bytes, *, initiator: bool, ordb: bool = False) -> Neighbour:
        chan, info = await self._handshake(link)
        if info.node_id != node_id:
            self.driver.node.close_channel(chan, "wrong peer")
            raise LinkRefused("the link handshake proved another identity than the one we signalled")
        return self._register(link, chan, node_id, initiator=initiator, ordb=ordb)

    def _register(self, link: Link, chan: int, node_id: bytes, *, initiator: bool, ordb: bool) -> Neighbour:
        transport = "tls" if link.server_cert_only else "webrtc"
        if ordb:
            n = Neighbour(node_id, chan, link, initiator, self.wall(), transport=transport)
            self.ordb_links[node_id] = n
            self.by_chan[chan] = node_id
            self.driver.flush()
            if self.on_ordb_link is not None:
                self.on_ordb_link(node_id)
            return n
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
        n = Neighbour(node_id, chan, link, initiator, self.wall(), transport=transport)
        self.neighbours[node_id] = n
        self.by_chan[chan] = node_id
        if (waiting := self._pending_answers.get(node_id)) is not None and not waiting.done():
            waiting.set_result(b"")  # our own offer to this peer lost the glare: stop waiting for it
        if node_id in self.guards:
            self._say_keep(chan)  # our circuits start here: the guard must not rotate it away
        self.driver.flush()
        self._changed()
        return n

    # ---- TLS (peers with a reachable address) -------------------------------------------------
    async def listen_tls(self, host: str, port: int) -> tuple[str, int]:
        """Accept TLS links on ``host:port`` (0: any free port); returns the address bound."""
        self.tls_server = await serve_tls(
            host, port, self._accept_tls, handshake_timeout=self.config.connect_timeout
        )
        return self.tls_server.address

    async def _accept_tls(self, link: TlsLink) -> None:
        """An inbound TLS link: the handshake says who it is; then the same rules as an offer.

        Handshakes in progress are not links yet (they do not count in K, so a flood of TCP
        connections cannot make us refuse real peers), but at most 2K run at once."""
        if self._accepting_tls >= 2 * self.config.max_links:
            await link.close()
            return
        self._accepting_tls += 1
        try:
            chan, info = await self._handshake(link)
        except LinkRefused as exc:
            self._refuse(f"an inbound TLS link failed: {exc}")
            return
        finally:
            self._accepting_tls -= 1
        nid = info.node_id
        if (
            nid not in self.neighbours
            and self.count >= self.config.max_links
            and nid not in self.guards
            and not (self.make_room is not None and self.make_room(nid, 2, 0))
        ):
            self._say_closing(chan, LinkCloseCode.FULL)  # the dialer backs off instead of asking again
            await self.driver.close_channel_after_output(chan, "this peer holds its maximum of links")
            return
        self._register(link, chan, nid, initiator=False, ordb=False)

    async def close(self) -> None:
        await self._background.close()
        if self.tls_server is not None:
            await self.tls_server.close()
        links = [*self.neighbours.values(), *self.ordb_links.values()]
        for n in links:
            self._say_closing(n.chan, LinkCloseCode.SHUTDOWN)
        await asyncio.gather(
            *(self.driver.close_channel_after_output(n.chan, "shutting down", timeout=1.0) for n in links),
            return_exceptions=True,
        )
        # all at once: each close may wait a few seconds for its transport to shut down
        await asyncio.gather(*(n.link.close() for n in links), return_exceptions=True)
        self.neighbours.clear()
        self.ordb_links.clear()


def tls_endpoint(record: PeerRecord) -> tuple[str, int] | None:
    """The ``tls`` endpoint a peer's record lists, as (host, port), if any."""
    for transport, address in record.route.endpoints:
        if transport == "tls":
            host, _, port = address.rpartition(":")
            with contextlib.suppress(ValueError):
                return host.strip("[]"), int(port)
    return None
