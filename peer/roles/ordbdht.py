"""The ORDB's DHT side (DESIGN §6, §8): publishing that we serve a hash_name, finding the ORDBs that
serve one, and forwarding a query to such an ORDB over a 1-hop circuit on an ORDB-to-ORDB link."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from dht.keys import provider_key
from dht.node import DhtNode
from dht.records import ProviderFields, ProviderRecord, Route
from peer.errors import PeerError
from peer.net.bridgeclient import BridgeClient
from peer.net.circuits import ORDB_BUILD_TIMEOUT, hop_of
from peer.net.driver import NodeDriver
from peer.net.handshake import PeerKeys
from peer.net.neighbours import LinkManager
from peer.net.recorder import Recorder
from peer.net.routing import Handler
from peer.net.signalling import Signalling
from peer.proto.circuit import Edge, OriginCircuit, StreamState
from peer.proto.node import OnionNode
from peer.wire.commands import RelayCommand

log = logging.getLogger(__name__)

#: seconds an ORDB-to-ORDB link we opened stays up without a forwarded query before we close it:
#: while it stands it is a direct link, so neither end may be the other's ORDB (DESIGN §5), and in
#: a small network links that never close leave a peer without eligible ORDBs
ORDB_LINK_IDLE = 30.0


class OrdbDht:
    """What the ORDB role asks of the DHT and of ORDB-to-ORDB links (the callbacks OrdbService takes)."""

    def __init__(
        self,
        *,
        keys: PeerKeys,
        dht: DhtNode,
        node: OnionNode,
        driver: NodeDriver,
        links: LinkManager,
        signalling: Signalling,
        bridges: Mapping[str, BridgeClient],
        own_circuit: Callable[[int, Handler], None],
        recorder: Recorder | None = None,
    ) -> None:
        self.keys = keys
        self.dht = dht
        self.node = node
        self.driver = driver
        self.links = links
        self.signalling = signalling
        self.bridges = bridges
        self._own_circuit = own_circuit
        self.owner: Handler | None = None  # the ORDB service: its forward circuits' events go there
        self.recorder = recorder
        self._circuits: dict[bytes, int] = {}  # remote ORDB -> our 1-hop circuit to it
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._used: dict[bytes, float] = {}  # remote ORDB -> when we last forwarded a query to it
        self.clock: Callable[[], float] = time.monotonic

    def _record(self, op: str, hash_name: bytes) -> None:
        if self.recorder is not None:  # test only (DESIGN §11)
            self.recorder({"kind": "dht", "op": op, "key": provider_key(hash_name), "hash_name": hash_name})

    async def publish_provider(self, hash_name: bytes) -> int:
        """Our provider record for a hash_name into the DHT; how many nodes took it (0: failed)."""
        self._record("publish_provider", hash_name)
        host, port = self.dht.address
        fields = ProviderFields(
            self.keys.ntor.public,
            self.keys.seal.public,
            Route((("udp", f"{host}:{port}"), ("webrtc", host)), tuple(self.bridges)),
        )
        try:
            return await self.dht.publish_provider(hash_name, fields)
        except (PeerError, OSError) as exc:
            log.debug("provider record not published: %s", exc)
            return 0

    async def find_providers(self, hash_name: bytes) -> list[object]:
        self._record("find_providers", hash_name)
        recs = await self.dht.find_providers(hash_name)
        return [r for r in recs if r.node_id != self.keys.node_id]

    async def forward_query(self, prov: object, body: bytes) -> tuple[int, int] | None:
        """ORDB to ORDB (DESIGN §6): link to the ORDB found in the DHT, 1-hop circuit, forward."""
        assert isinstance(prov, ProviderRecord)
        self._used[prov.node_id] = self.clock()
        lock = self._locks.setdefault(prov.node_id, asyncio.Lock())
        async with lock:  # one link setup per remote ORDB at a time; later queries reuse it
            chan = self.links.chan_of(prov.node_id, ordb=True)
            if chan is None:
                via = self.signalling.signallers_for(prov)
                if not via:
                    return None
                await self.links.connect(prov, via, purpose=1)  # type: ignore[arg-type]
                chan = self.links.chan_of(prov.node_id, ordb=True)
                if chan is None:
                    return None
            circ = self._circuits.get(prov.node_id)
            if circ is None or circ not in self.node.circuits:  # one 1-hop circuit per remote ORDB
                circ = await self.driver.build_circuit(chan, [hop_of(prov)], timeout=ORDB_BUILD_TIMEOUT)
                self._circuits[prov.node_id] = circ
                if self.owner is not None:
                    self._own_circuit(circ, self.owner)
        sid = self.node.open_db_stream(circ, RelayCommand.DB_QUERY, body)
        self.driver.flush()
        self._used[prov.node_id] = self.clock()
        return circ, sid

    def idle_links(self, now: float) -> list[bytes]:
        """The ORDB-to-ORDB links we opened that forwarded no query for :data:`ORDB_LINK_IDLE`
        seconds and carry no open stream now (a link the other ORDB opened is its to close)."""
        out = []
        for node_id, used in self._used.items():
            if now - used < ORDB_LINK_IDLE or node_id not in self.links.ordb_links:
                continue
            lock = self._locks.get(node_id)
            if lock is not None and lock.locked():
                continue  # a forward is setting the link or its circuit up
            circ = self.node.circuits.get(self._circuits.get(node_id, -1))
            if isinstance(circ, OriginCircuit) and any(_busy(h) for h in circ.hops):
                continue
            out.append(node_id)
        return out

    def close_idle(self, now: float) -> int:
        """Close the idle ORDB-to-ORDB links (:meth:`idle_links`); how many."""
        idle = self.idle_links(now)
        for node_id in idle:
            circ = self._circuits.pop(node_id, None)
            if circ is not None and circ in self.node.circuits:
                self.driver.destroy_circuit(circ)
            self.links.drop_ordb_link(node_id, "an idle ORDB-to-ORDB link")
            del self._used[node_id]
            self._locks.pop(node_id, None)
        if idle:
            log.debug("closed %d idle ORDB-to-ORDB link(s)", len(idle))
        return len(idle)


def _busy(edge: Edge) -> bool:
    """A stream at this hop still waits for or carries an answer (one we ended is not waited for)."""
    return any(st.state in (StreamState.CONNECTING, StreamState.OPEN) for st in edge.streams.values())
