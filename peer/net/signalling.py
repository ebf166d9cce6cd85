"""Carrying sealed link offers (DESIGN §4): through a neighbour that introduces, or through a bridge.

A :class:`~peer.net.neighbours.Signaller` delivers a sealed blob to a peer.  We try an introducer we are
linked to first (so bridges see less), then each bridge we share with the peer.  As an introducer we
pass a blob from one neighbour to another and never learn what it says.
"""

from __future__ import annotations

from collections.abc import Mapping

from dht.records import PeerRecord, ProviderRecord
from peer.net.bridgeclient import BridgeClient
from peer.net.driver import NodeDriver
from peer.net.neighbours import LinkManager, Signaller
from peer.proto.node import OnionNode
from peer.wire.cells import Introduce, Introduced
from peer.wire.commands import CellCommand


class BridgeSignaller:
    def __init__(self, url: str, client: BridgeClient) -> None:
        self.name = "a bridge"
        self.url = url
        self.client = client

    async def introduce(self, target: bytes, blob: bytes) -> None:
        await self.client.introduce(target, blob)


class NeighbourSignaller:
    def __init__(self, node: OnionNode, driver: NodeDriver, chan: int) -> None:
        self.name = "a neighbour"
        self._node = node
        self._driver = driver
        self._chan = chan

    async def introduce(self, target: bytes, blob: bytes) -> None:
        self._node.send_link_message(
            self._chan, CellCommand.DB_INTRODUCE, Introduce(target, blob).encode_payload()
        )
        self._driver.flush()


class Signalling:
    """Ways to reach a peer with an offer, and the introducer's side of DB_INTRODUCE."""

    def __init__(
        self, node: OnionNode, driver: NodeDriver, links: LinkManager, bridges: Mapping[str, BridgeClient]
    ) -> None:
        self.node = node
        self.driver = driver
        self.links = links
        self.bridges = bridges

    def via_neighbour(self, chan: int) -> NeighbourSignaller:
        return NeighbourSignaller(self.node, self.driver, chan)

    def signallers_for(self, rec: PeerRecord | ProviderRecord) -> list[Signaller]:
        """Ways to deliver an offer to ``rec``'s peer, in order: an introducer we are linked to
        (so bridges see less), then each bridge we share with it (a record's neighbour list may
        be out of date, so an introducer may no longer reach the peer)."""
        out: list[Signaller] = []
        for n in getattr(rec, "neighbours", ()):
            chan = self.links.chan_of(n)
            if chan is not None:
                out.append(self.via_neighbour(chan))
                break
        for url in rec.route.bridges:
            client = self.bridges.get(url)
            if client is not None:
                out.append(BridgeSignaller(url, client))
        return out

    def introduce_for(self, chan: int, msg: Introduce) -> None:
        """We are the introducer: pass a sealed blob from one neighbour to another."""
        source = self.links.by_chan.get(chan)
        if source is None:
            return
        target_chan = self.links.chan_of(msg.target)
        if target_chan is None:
            out = Introduced(msg.target, b"")  # not reachable through us
            self.node.send_link_message(chan, CellCommand.DB_INTRODUCED, out.encode_payload())
        else:
            self.node.send_link_message(
                target_chan, CellCommand.DB_INTRODUCED, Introduced(source, msg.blob).encode_payload()
            )
        self.driver.flush()
