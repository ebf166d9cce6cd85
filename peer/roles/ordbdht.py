"""The ORDB's DHT side (DESIGN §6, §8): publishing that we serve a hash_name, finding the ORDBs that
serve one, and forwarding a query to such an ORDB over a 1-hop circuit on an ORDB-to-ORDB link."""

from __future__ import annotations

import asyncio
import logging
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
from peer.proto.node import OnionNode
from peer.wire.commands import RelayCommand

log = logging.getLogger(__name__)


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
        return circ, sid
