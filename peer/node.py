"""One peer (DESIGN §1): OP, OR and ORDB in one process; composition, lifecycle and event routing.

:class:`Peer` builds the parts and wires them: the onion core and its driver, the neighbour links and
their topology, guards, our circuits, the DHT node and bridge connections, and the roles (ORDB,
holder, downloads).  Events of the onion core go straight to their owner (:class:`EventRoutes`).
All I/O choices (addresses, clocks, keys) come in through :class:`PeerConfig`; the CLI is the
composition root that fills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from dht.node import DhtConfig, DhtNode
from dht.records import PeerRecord, Route
from peer.errors import PeerError
from peer.net.bridgeclient import BridgeClient
from peer.net.circuits import CircuitManager, CircuitRules
from peer.net.driver import NodeDriver
from peer.net.guards import Guards
from peer.net.handshake import PeerKeys
from peer.net.keystore import load_or_create_keys
from peer.net.neighbours import LinkManager, LinkManagerConfig
from peer.net.peerview import PeerView
from peer.net.recorder import Recorder
from peer.net.routing import EventRoutes
from peer.net.signalling import BridgeSignaller, Signalling
from peer.net.socks import SocksServer
from peer.net.topology import Topology, TopologyConfig
from peer.proto import events as ev
from peer.proto.channel import LivenessConfig
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode
from peer.roles.downloads import Downloads, DownloadTask
from peer.roles.fetch import Download
from peer.roles.holder import HolderService
from peer.roles.ordb import OrdbService
from peer.roles.ordbdht import OrdbDht
from peer.transport.webrtc import WebRtcConfig
from peer.wire.cells import Introduce, Introduced, LinkClosing, LinkKeep
from peer.wire.ordb import DbQuery
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink

log = logging.getLogger(__name__)

RECORD_TTL = 3600.0
STOP_STEP_TIMEOUT = 10.0


@dataclass
class PeerConfig:
    data_dir: Path
    host: str = "127.0.0.1"  # the address this peer uses (UDP DHT, WebRTC candidates)
    dht_port: int = 0
    bridges: list[str] = field(default_factory=list)
    max_links: int = 8
    stable: bool = False
    exit_policy: ExitPolicy = field(default_factory=ExitPolicy.reject_all)
    ice_allow: tuple[str, ...] | None = None  # default: the host above
    tls_port: int | None = None  # accept TLS links on host:tls_port (0: any free port); None: do not
    rotate_every: float = 600.0  # replace one random non-guard link this often (0: never)
    socks: tuple[str, int] | None = None
    subnet_rule: bool = True
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    hops: int = 3
    view_refresh: float = 5.0
    maintain_every: float = 1.0
    connect_timeout: float = 20.0
    announce_delay: tuple[float, float] = (0.2, 2.0)
    corrupt_pieces: bool = False  # test only: a lying holder
    download_circuits: int = 5
    rewire_every: float = 5.0  # seconds between attempts to replace a redundant link
    record_path: Path | None = None  # test only: the anonymity recorder (DESIGN §11)
    one_hop_ordb: bool = False  # test only: the negative control (1-hop ORDB circuits break anonymity)
    downloads_dir: Path | None = None  # where the UI exports files (default: DATA/downloads)
    max_upload: int | None = None  # bytes/s of pieces served as a holder (None: no cap)


class Peer:
    """A running peer.  ``await Peer.start(config)``, then ``await peer.stop()``."""

    def __init__(self, config: PeerConfig, keys: PeerKeys, recorder: Recorder | None = None) -> None:
        self.config = config
        self.keys = keys
        self.rng = random.Random()
        self.recorder = recorder
        self.node = OnionNode(
            node_id=keys.node_id,
            ntor_keys={keys.ntor.public: keys.ntor},
            randbytes=os.urandom,
            config=NodeConfig(
                exit_policy=config.exit_policy, auto_consume=False, record=recorder is not None
            ),
        )
        self.driver = NodeDriver(self.node, recorder=recorder)
        # a BEGIN passed the policy by its name; the driver checks what the name resolved to
        self.driver.allow_exit_to = config.exit_policy.allows_address
        self.driver.on_event = self._on_event
        self.view = PeerView(keys.node_id)
        self.links = LinkManager(
            keys=keys,
            driver=self.driver,
            webrtc=WebRtcConfig(ice_allow=config.ice_allow or (config.host,)),
            config=LinkManagerConfig(
                max_links=config.max_links, liveness=config.liveness, connect_timeout=config.connect_timeout
            ),
            rng=self.rng,
        )
        self.links.on_change = self._links_changed
        self.links.is_our_ordb = self._is_our_ordb
        self.links.on_ordb_link = self._ordb_linked
        self.bridges: dict[str, BridgeClient] = {}
        self.signalling = Signalling(self.node, self.driver, self.links, self.bridges)
        self._guards = Guards(config.data_dir)
        self.topology = Topology(
            self.links,
            self.view,
            lambda: self.guards,
            self.signalling.signallers_for,
            TopologyConfig(config.max_links, config.rewire_every, config.rotate_every),
            self.rng,
        )
        self.links.make_room = self.topology.make_room
        self.dht = DhtNode()
        self.ordb_dht = OrdbDht(
            keys=keys,
            dht=self.dht,
            node=self.node,
            driver=self.driver,
            links=self.links,
            signalling=self.signalling,
            bridges=self.bridges,
            own_circuit=lambda circ, owner: self.routes.own_circuit(circ, owner),
            recorder=recorder,
        )
        self.ordb = OrdbService(
            self.node,
            kick=self.driver.flush,
            find_providers=self.ordb_dht.find_providers,
            forward=self.ordb_dht.forward_query,
            publish_provider=self.ordb_dht.publish_provider,
            local=_LocalContent(self),
            rng=self.rng,
        )
        self.ordb_dht.owner = self.ordb.handle
        # circuits that end here (other peers' ORDB circuits) are the ORDB's business
        self.routes = EventRoutes(default=self.ordb.handle)
        self.circuits = CircuitManager(
            node=self.node,
            driver=self.driver,
            view=self.view,
            links=self.links,
            guards=lambda: self.guards,
            refresh_view=self._refresh_view,
            routes=self.routes,
            rules=CircuitRules(config.hops, config.subnet_rule, config.one_hop_ordb),
            rng=self.rng,
        )
        self.socks: SocksServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._record_dirty = asyncio.Event()
        self.started_at = time.time()
        self.store: ChunkStore | None = None
        self.holder: HolderService | None = None
        self.downloads = Downloads(config.data_dir, self._new_download, self._export, self._seed)

    @property
    def guards(self) -> list[bytes]:
        return self._guards.ids

    @property
    def downloads_dir(self) -> Path:
        """The only folder the web UI exports into (created on first export)."""
        return self.config.downloads_dir or self.config.data_dir / "downloads"

    # ---- life cycle ---------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: PeerConfig) -> Peer:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = load_or_create_keys(config.data_dir, stable=config.stable)
        recorder = None
        if config.record_path is not None:  # test only (DESIGN §11)
            recorder = Recorder(config.record_path)
            recorder({"kind": "self", "node_id": keys.node_id, "host": config.host})
        self = cls(config, keys, recorder)
        self.store = await ChunkStore.open(config.data_dir / "store.db")
        self.holder = HolderService(
            self.node,
            self.store,
            kick=self.driver.flush,
            build_ordb_circuit=lambda exclude: self.circuits.build_ordb_circuit(exclude, self._holder_events),
            rng=self.rng,
            announce_delay=config.announce_delay,
            ordbs_per_share=3,
            corrupt=config.corrupt_pieces,
            routes=self.routes,
            max_upload=config.max_upload,
        )
        dcfg = DhtConfig(bucket_prefix_limit=2 if config.subnet_rule else 0)
        await self.dht.start(keys.identity, config.host, config.dht_port, config=dcfg)
        if config.tls_port is not None:
            await self.links.listen_tls(config.host, config.tls_port)
        for url in config.bridges:
            await self._connect_bridge(url)
        await self._refresh_view()
        await self._publish()
        if config.socks is not None:
            self.socks = SocksServer(self.circuits.open_socks_stream)
            await self.socks.start(*config.socks)
        self._tasks.append(asyncio.get_running_loop().create_task(self._maintain()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._republisher()))
        self._tasks.append(asyncio.get_running_loop().create_task(self.downloads.resume()))
        await self.holder.announce_held()  # what we shared before a restart stays findable
        return self

    async def stop(self) -> None:
        """Stop everything, each part given at most STOP_STEP_TIMEOUT: a part that hangs (a
        transport whose other end is gone) must not keep the others, or the store, open."""

        async def step(what: str, aw: Awaitable[object]) -> None:
            try:
                await asyncio.wait_for(aw, STOP_STEP_TIMEOUT)
            except TimeoutError:
                log.warning("stopping: %s did not finish within %.0f s", what, STOP_STEP_TIMEOUT)
            except Exception as exc:
                log.warning("stopping: %s failed: %s", what, type(exc).__name__)

        await step("downloads", self.downloads.close())
        if self.holder is not None:
            await step("the holder service", self.holder.close())
        await step("the ORDB service", self.ordb.close())
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.socks is not None:
            await step("the SOCKS server", self.socks.close())
        await step("the links", self.links.close())
        await step("the driver", self.driver.close())
        for b in self.bridges.values():
            await step("a bridge connection", b.close())
        self.dht.stop()
        if self.store is not None:
            await self.store.close()

    # ---- our record ---------------------------------------------------------------------------
    def record(self) -> PeerRecord:
        host, port = self.dht.address
        endpoints = [("udp", f"{host}:{port}"), ("webrtc", host)]
        if self.links.tls_server is not None:
            tls_host, tls_port = self.links.tls_server.address
            endpoints.append(("tls", f"{tls_host}:{tls_port}"))
        rec = PeerRecord(
            identity_key=self.keys.identity.public,
            ntor_key=self.keys.ntor.public,
            seal_key=self.keys.seal.public,
            route=Route(tuple(endpoints), tuple(self.bridges)),
            neighbours=tuple(self.links.neighbour_ids()[:16]),  # a record lists at most 16
            stable=self.config.stable,
            expiry=int(time.time() + RECORD_TTL),
            exit=bool(self.config.exit_policy.rules),
        )
        return rec.sign(self.keys.identity)

    async def _publish(self) -> None:
        rec = self.record()
        with contextlib.suppress(PeerError, OSError):
            await self.dht.publish_peer(rec)
        for b in list(self.bridges.values()):
            with contextlib.suppress(PeerError, OSError):
                await b.reregister()

    def _links_changed(self) -> None:
        self._record_dirty.set()
        self._choose_guards()
        asyncio.get_running_loop().call_soon(self._keep_ordbs_apart)

    def _ordb_linked(self, _node_id: bytes) -> None:
        asyncio.get_running_loop().call_soon(self._keep_ordbs_apart)

    def _is_our_ordb(self, node_id: bytes) -> bool:
        """Does one of our announce or download circuits end at ``node_id`` now?"""
        if self.holder is not None and node_id in self.holder.ordb_ids():
            return True
        return any(node_id in d.download.ordb_ids() for d in self.downloads.values())

    def _keep_ordbs_apart(self) -> None:
        """DESIGN §5 holds over time, not only when a circuit is built: an ORDB circuit whose
        ORDB has since become a guard or a neighbour (links move) is replaced, or that peer
        could match the circuit's traffic with what it sees on its direct link to us.  ORDB-to-ORDB
        links count: they are direct links too."""
        if self.config.one_hop_ordb:  # the anonymity test's negative control breaks §5 on purpose
            return
        near = self.links.linked_ids() | set(self.guards)
        n = self.holder.retire_ordbs(near) if self.holder is not None else 0
        for d in self.downloads.values():
            n += d.download.retire_ordbs(near, "its ORDB became a guard or a neighbour")
        if n:
            log.debug("replaced %d ORDB circuit(s) whose ORDB is now linked to us", n)

    async def _republisher(self) -> None:
        while True:
            await self._record_dirty.wait()
            await asyncio.sleep(2.0)  # coalesce bursts of link changes (bridges rate-limit registrations)
            self._record_dirty.clear()
            await self._publish()

    # ---- bridges, the view and guards -----------------------------------------------------------
    async def _connect_bridge(self, url: str) -> None:
        client = BridgeClient()
        signaller = BridgeSignaller(url, client)
        client.on_introduced = lambda source, blob: self.links.on_introduced(source, blob, signaller)
        try:
            await client.connect(url, self.keys, self.record)
        except (PeerError, OSError) as exc:
            log.warning("bridge unreachable: %s", type(exc).__name__)
            return
        self.bridges[url] = client

    async def _refresh_view(self) -> None:
        now = time.time()
        for b in list(self.bridges.values()):
            with contextlib.suppress(PeerError, OSError, TimeoutError):
                for target in (self.keys.node_id, os.urandom(20)):
                    self.view.add_all(await b.find_peers(target), now)
        contacts = []
        for rec in self.view.all():
            for transport, address in rec.route.endpoints:
                if transport == "udp":
                    host, _, port = address.rpartition(":")
                    contacts.append((host, int(port)))
        if contacts:
            with contextlib.suppress(PeerError, OSError):
                await self.dht.bootstrap(contacts[:8])
        with contextlib.suppress(PeerError, OSError):
            self.view.add_all(await self.dht.random_walk(32), now)
        self.view.expire(now)
        self._choose_guards()

    def _choose_guards(self) -> None:
        stable = {r.node_id for r in self.view.all() if r.stable}
        self._guards.choose(stable, self.links.neighbour_ids())
        self.links.set_guards(set(self.guards))

    # ---- keeping K links (peer/net/topology.py decides which) -----------------------------------
    async def _maintain(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(self.config.maintain_every)
            if time.monotonic() - last_refresh > self.config.view_refresh:
                last_refresh = time.monotonic()
                for url in self.config.bridges:  # a bridge that dropped us: register again
                    if url not in self.bridges or self.bridges[url].closed:
                        self.bridges.pop(url, None)
                        await self._connect_bridge(url)
                await self._refresh_view()
            await self.topology.step()
            self.ordb_dht.close_idle(time.monotonic())  # a peer linked no longer may be our ORDB again

    # ---- events from the onion core go to their owner ------------------------------------------
    def _on_event(self, e: ev.Event) -> None:
        if isinstance(e, (ev.RelayMessageReceived, ev.StreamWritable, ev.CircuitClosed)):
            self.routes.route(e)
            if isinstance(e, ev.CircuitClosed):
                self.circuits.circuit_closed(e.circ)
        elif isinstance(e, ev.ChannelClosed):
            self.links.channel_closed(e.chan)
        elif isinstance(e, ev.LinkMessageReceived):
            msg = e.message
            if isinstance(msg, Introduce):
                self.signalling.introduce_for(e.chan, msg)
            elif isinstance(msg, Introduced):
                self.links.on_introduced(msg.source, msg.blob, self.signalling.via_neighbour(e.chan))
            elif isinstance(msg, LinkClosing):
                self.links.on_link_closing(e.chan, msg)
            elif isinstance(msg, LinkKeep):
                self.links.on_link_keep(e.chan, msg)

    def _holder_events(self, e: ev.Event) -> None:
        if self.holder is not None:
            self.holder.handle(e)

    # ---- sharing and downloading --------------------------------------------------------------
    async def share(self, path: Path, *, encrypt: bool = False, seed: bool = True) -> str:
        assert self.store is not None and self.holder is not None
        result = await self.store.import_file(path, encrypt=encrypt, randbytes=os.urandom)
        if seed:
            self.holder.announce_soon(result.hash_name)
        else:
            await self.store.set_seeding(result.hash_name, False)
        return result.link.format()

    def get(self, link: ShareLink, output: Path | None = None) -> DownloadTask:
        """Start a download, or attach to the one already running (downloads belong to the peer)."""
        return self.downloads.start(link, output)

    def _new_download(self, link: ShareLink) -> Download:
        assert self.store is not None
        owner: list[Download] = []  # the download owns the circuits it builds

        async def build(exclude: set[bytes]) -> tuple[int, bytes]:
            return await self.circuits.build_ordb_circuit(exclude, owner[0].handle)

        d = Download(
            node=self.node,
            kick=self.driver.flush,
            store=self.store,
            hash_name=link.hash_name,
            key=link.key,
            build_circuit=build,
            count_ordbs=lambda: len(self.circuits.eligible_ordbs()),
            on_quarter=self._seed,
            want_circuits=self.config.download_circuits,
            rng=self.rng,
        )
        owner.append(d)
        return d

    async def _export(self, link: ShareLink, output: Path) -> Path:
        assert self.store is not None
        return await self.store.export(link.hash_name, output, link.key)

    def _seed(self, hash_name: bytes) -> None:
        if self.holder is not None:
            self.holder.announce_soon(hash_name)

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        return {
            "node_id": self.keys.node_id.hex(),
            "stable": self.config.stable,
            "links": [
                {
                    "peer": n.node_id.hex()[:16],
                    "guard": n.node_id in self.guards,
                    "initiator": n.initiator,
                    "transport": n.transport,
                    "kept": n.kept,  # the peer uses us as its guard
                    "age_s": round(time.time() - n.opened_at, 1),
                }
                for n in self.links.neighbours.values()
            ],
            **self.circuits.status(),
            "ordb_links": len(self.links.ordb_links),  # ORDB-to-ORDB links (direct links too: DESIGN §5)
            "eligible_ordbs": len(self.circuits.eligible_ordbs()),
            "known_peers": len(self.view),
            "guards": [g.hex()[:16] for g in self.guards],
            "bridges": len(self.bridges),
            "dht": self.dht.stats(),
            "socks": f"{self.socks.address[0]}:{self.socks.address[1]}" if self.socks else None,
            "recent_link_refusals": self.links.refused[-5:],
            "recent_link_drops": self.links.dropped[-5:],
            "uptime_s": round(time.time() - self.started_at, 1),
            "ordb": self.ordb.status(),
            "downloads": [d.summary() for d in self.downloads.values()],
            "served_pieces": self.holder.served_pieces if self.holder else 0,
            "announce": self.holder.announce_status() if self.holder else {},
        }


class _LocalContent:
    """The ORDB's view of what this peer itself holds or fetches."""

    def __init__(self, peer: Peer) -> None:
        self._peer = peer

    def involved(self, hash_name: bytes) -> bool:
        p = self._peer
        if hash_name in p.downloads:
            return True
        return p.holder is not None and hash_name in p.holder.held

    async def has(self, q: DbQuery) -> bool:
        holder = self._peer.holder
        if holder is None or holder.corrupt:  # test-only liar: lies as a holder, never as an ORDB
            return False
        return await holder.has(q)

    async def serve_here(self, stream: tuple[int, int], q: DbQuery) -> None:
        assert self._peer.holder is not None
        await self._peer.holder.serve_here(stream, q)
