"""The peer runtime (DESIGN §1-6): one process that is OP, OR and (later) ORDB.

Composes the onion core and its driver, the DHT node, bridge connections, the link
manager, path selection and the SOCKS proxy.  All I/O choices (addresses, clocks, keys)
come in through :class:`PeerConfig`; the CLI is the composition root that fills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from dht.node import DhtConfig, DhtNode
from dht.records import PeerRecord, ProviderFields, ProviderRecord, Route
from peer.errors import PathError, PeerError
from peer.net.bridgeclient import BridgeClient
from peer.net.driver import CircuitError, NodeDriver, OnionStream, StreamError
from peer.net.handshake import PeerKeys
from peer.net.keystore import atomic_write_private, load_or_create_keys
from peer.net.neighbours import LinkManager, LinkManagerConfig, Signaller
from peer.net.pathsel import eligible_ordbs, select_path, select_path_to
from peer.net.peerview import PeerView
from peer.net.socks import SocksServer, StreamOpenError
from peer.net.topology import Topology, TopologyConfig
from peer.proto import events as ev
from peer.proto.channel import LivenessConfig
from peer.proto.circuit import HopSpec
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode
from peer.roles.downloads import Downloads, DownloadTask
from peer.roles.fetch import Download
from peer.roles.holder import HolderService
from peer.roles.ordb import OrdbService
from peer.transport.webrtc import WebRtcConfig
from peer.wire.cells import Introduce, Introduced, LinkClosing, LinkKeep
from peer.wire.commands import CellCommand, RelayCommand
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecPeerNodeId
from peer.wire.ordb import DbQuery
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink

log = logging.getLogger(__name__)

RECORD_TTL = 3600.0
STOP_STEP_TIMEOUT = 10.0
GUARDS_FILE = "guards.json"
N_GUARDS = 2


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


class _BridgeSignaller:
    def __init__(self, url: str, client: BridgeClient) -> None:
        self.name = "a bridge"
        self.url = url
        self.client = client

    async def introduce(self, target: bytes, blob: bytes) -> None:
        await self.client.introduce(target, blob)


class _NeighbourSignaller:
    def __init__(self, peer: Peer, chan: int) -> None:
        self.name = "a neighbour"
        self._peer = peer
        self._chan = chan

    async def introduce(self, target: bytes, blob: bytes) -> None:
        self._peer.node.send_link_message(
            self._chan, CellCommand.DB_INTRODUCE, Introduce(target, blob).encode_payload()
        )
        self._peer.driver.flush()


class Peer:
    """A running peer.  ``await Peer.start(config)``, then ``await peer.stop()``."""

    def __init__(self, config: PeerConfig, keys: PeerKeys) -> None:
        self.config = config
        self.keys = keys
        self.rng = random.Random()
        self.node = OnionNode(
            node_id=keys.node_id,
            ntor_keys={keys.ntor.public: keys.ntor},
            randbytes=os.urandom,
            config=NodeConfig(exit_policy=config.exit_policy, auto_consume=False),
        )
        self.driver = NodeDriver(self.node)
        self.driver.allow_exit_to = lambda host: True  # the node's exit policy decides
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
        self.topology = Topology(
            self.links,
            self.view,
            lambda: self.guards,
            self._signaller_for,
            TopologyConfig(config.max_links, config.rewire_every, config.rotate_every),
            self.rng,
        )
        self.links.make_room = self.topology.make_room
        self.dht = DhtNode()
        self.bridges: dict[str, BridgeClient] = {}
        self.socks: SocksServer | None = None
        self.guards: list[bytes] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._circuits: list[int] = []
        self._paths: dict[int, list[bytes]] = {}
        self._record_dirty = asyncio.Event()
        self.started_at = time.time()
        self.store: ChunkStore | None = None
        self.ordb = OrdbService(
            self.node,
            kick=self.driver.flush,
            find_providers=self._find_providers,
            forward=self._forward_query,
            publish_provider=self._publish_provider,
            local=_LocalContent(self),
            rng=self.rng,
        )
        self.holder: HolderService | None = None
        self.downloads = Downloads(config.data_dir, self._new_download, self._export, self._seed)
        self._forward_circuits: dict[bytes, int] = {}  # remote ORDB -> our 1-hop circuit to it
        self._forward_locks: dict[bytes, asyncio.Lock] = {}

    # ---- life cycle ---------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: PeerConfig) -> Peer:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = load_or_create_keys(config.data_dir, stable=config.stable)
        self = cls(config, keys)
        if config.record_path is not None:
            from peer.net.recorder import Recorder

            rec = Recorder(config.record_path)
            self.node.recorder = rec
            rec({"kind": "self", "node_id": keys.node_id, "host": config.host})
        self._load_guards()
        self.store = await ChunkStore.open(config.data_dir / "store.db")
        self.holder = HolderService(
            self.node,
            self.store,
            kick=self.driver.flush,
            build_ordb_circuit=self.build_ordb_circuit,
            rng=self.rng,
            announce_delay=config.announce_delay,
            ordbs_per_share=3,
            corrupt=config.corrupt_pieces,
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
            self.socks = SocksServer(self._open_socks_stream)
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

    def _keep_ordbs_apart(self) -> None:
        """DESIGN §5 holds over time, not only when a circuit is built: an ORDB circuit whose
        ORDB has since become a guard or a neighbour (links move) is replaced, or that peer
        could match the circuit's traffic with what it sees on its direct link to us."""
        if self.config.one_hop_ordb:  # the anonymity test's negative control breaks §5 on purpose
            return
        near = set(self.links.neighbour_ids()) | set(self.guards)
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

    # ---- bridges and the view -----------------------------------------------------------------
    async def _connect_bridge(self, url: str) -> None:
        client = BridgeClient()
        signaller = _BridgeSignaller(url, client)
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

    def _load_guards(self) -> None:
        path = self.config.data_dir / GUARDS_FILE
        with contextlib.suppress(OSError, ValueError, TypeError):
            self.guards = [bytes.fromhex(h) for h in json.loads(path.read_text())["guards"]]

    def _choose_guards(self) -> None:
        """Keep N_GUARDS stable peers as guards: the ones we hold links to first (a guard we cannot
        link to is no first hop, and it would shrink the eligible ORDBs); unlinked ones only fill
        in, and the link manager keeps trying to reach them."""
        stable = {r.node_id for r in self.view.all() if r.stable}
        linked = [n for n in self.links.neighbour_ids() if n in stable]
        new = [g for g in self.guards if g in linked]
        for n in linked:
            if len(new) >= N_GUARDS:
                break
            if n not in new:
                new.append(n)
        for g in [*self.guards, *sorted(stable)]:
            if len(new) >= N_GUARDS:
                break
            if g not in new and g in stable:
                new.append(g)
        changed = new != self.guards
        self.guards = new
        self.links.set_guards(set(self.guards))
        if changed:
            data = json.dumps({"guards": [g.hex() for g in self.guards]}).encode()
            atomic_write_private(self.config.data_dir / GUARDS_FILE, data)

    # ---- keeping K links (peer/net/topology.py decides which) ---------------------------------------
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

    def _signaller_for(self, rec: PeerRecord) -> list[Signaller]:
        """Ways to deliver an offer to ``rec``'s peer, in order: an introducer we are linked to
        (so bridges see less), then each bridge we share with it (a record's neighbour list may
        be out of date, so an introducer may no longer reach the peer)."""
        out: list[Signaller] = []
        for n in getattr(rec, "neighbours", ()):
            chan = self.links.chan_of(n)
            if chan is not None:
                out.append(_NeighbourSignaller(self, chan))
                break
        for url in rec.route.bridges:
            client = self.bridges.get(url)
            if client is not None:
                out.append(_BridgeSignaller(url, client))
        return out

    # ---- events from the onion core -----------------------------------------------------------
    def _on_event(self, e: ev.Event) -> None:
        if isinstance(e, (ev.RelayMessageReceived, ev.StreamWritable, ev.CircuitClosed)):
            handled = False
            handled = self.downloads.handle(e) or handled
            if self.holder is not None:
                handled = self.holder.handle(e) or handled
            handled = self.ordb.handle(e) or handled
        if isinstance(e, ev.ChannelClosed):
            self.links.channel_closed(e.chan)
        elif isinstance(e, ev.CircuitClosed):
            with contextlib.suppress(ValueError):
                self._circuits.remove(e.circ)
            self._paths.pop(e.circ, None)
        elif isinstance(e, ev.LinkMessageReceived):
            msg = e.message
            if isinstance(msg, Introduce):
                self._introduce_for(e.chan, msg)
            elif isinstance(msg, Introduced):
                self.links.on_introduced(msg.source, msg.blob, _NeighbourSignaller(self, e.chan))
            elif isinstance(msg, LinkClosing):
                self.links.on_link_closing(e.chan, msg)
            elif isinstance(msg, LinkKeep):
                self.links.on_link_keep(e.chan, msg)

    def _introduce_for(self, chan: int, msg: Introduce) -> None:
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

    # ---- circuits and streams -----------------------------------------------------------------
    def hop_of(self, rec: PeerRecord) -> HopSpec:
        return HopSpec(
            rec.node_id, rec.ntor_key, (LinkSpecPeerNodeId(rec.node_id), LinkSpecEd25519(rec.identity_key))
        )

    async def build_circuit(
        self, *, hops: int | None = None, want_exit: bool = True, avoid: tuple[bytes, ...] = ()
    ) -> tuple[int, list[PeerRecord]]:
        def choose() -> list[PeerRecord]:
            return select_path(
                self.view,
                own_node_id=self.keys.node_id,
                first_hops=[g for g in self.guards if g in self.links.neighbours],
                hops=hops or self.config.hops,
                rng=self.rng,
                want_exit=want_exit,
                subnet_rule=self.config.subnet_rule,
                avoid=avoid,
            )

        try:
            path = choose()
        except PathError:
            # records change as links come and go: refresh the view once before giving up
            await self._refresh_view()
            path = choose()
        chan = self.links.chan_of(path[0].node_id)
        if chan is None:
            raise PathError("the guard's link went away")
        circ = await self.driver.build_circuit(chan, [self.hop_of(r) for r in path])
        self._circuits.append(circ)
        self._paths[circ] = [r.node_id for r in path]
        return circ, path

    async def open_stream(self, host: str, port: int) -> OnionStream:
        """A stream to host:port through a 3-hop circuit to an exit peer (reused while it lives)."""
        last: Exception | None = None
        for attempt in range(6):
            circ = next((c for c in reversed(self._circuits) if c in self.node.circuits), None)
            if circ is None or attempt:
                try:
                    circ, _path = await self.build_circuit()
                except (PathError, CircuitError) as exc:
                    last = exc
                    log.warning("no circuit for a stream yet (attempt %d): %s", attempt + 1, exc)
                    await asyncio.sleep(1.0)
                    await self._refresh_view()
                    continue
            try:
                return await self.driver.open_stream(circ, host, port)
            except (StreamError, CircuitError) as exc:
                last = exc
                if isinstance(exc, StreamError) and exc.end_reason is not None:
                    break  # the exit answered: retrying elsewhere would not change its answer
        reason = last.end_reason if isinstance(last, StreamError) else None
        raise StreamOpenError(f"could not open a stream: {last}", reason)

    async def _open_socks_stream(self, host: str, port: int) -> OnionStream:
        try:
            return await self.open_stream(host, port)
        except StreamOpenError:
            raise
        except PeerError as exc:
            raise StreamOpenError(str(exc)) from exc

    # ---- ORDB circuits (DESIGN §5: never our own ORDB, disjoint from guards and neighbours) ---------
    def eligible_ordbs(self, exclude: set[bytes] | None = None) -> list[PeerRecord]:
        return eligible_ordbs(
            self.view,
            own_node_id=self.keys.node_id,
            guards=self.guards,
            neighbours=self.links.neighbour_ids(),
            exclude=exclude or set(),
        )

    async def build_ordb_circuit(self, exclude: set[bytes]) -> tuple[int, bytes]:
        """A circuit of 2 hops then an ORDB chosen uniformly among the eligible ones we can reach.

        Neighbour lists in records lag behind links that move: when an extension fails, the view
        is refreshed and the choice made again."""
        errors: list[str] = []
        if self.config.one_hop_ordb:  # NEGATIVE CONTROL for the anonymity test: breaks DESIGN §5 on purpose
            for n in self.links.neighbour_ids():
                rec = self.view.get(n)
                chan = self.links.chan_of(n)
                if rec is None or chan is None or n in exclude:
                    continue
                circ = await self.driver.build_circuit(chan, [self.hop_of(rec)], timeout=20)
                return circ, n
            raise PathError("no neighbour for a 1-hop ORDB circuit")
        for attempt in range(3):
            cands = self.eligible_ordbs(exclude)
            self.rng.shuffle(cands)
            linked_guards = [g for g in self.guards if g in self.links.neighbours]
            for target in cands:
                path = None
                for before in (2, 3):  # at least 2 hops before an ORDB; 3 when the graph needs it
                    try:
                        path = select_path_to(
                            self.view,
                            target,
                            own_node_id=self.keys.node_id,
                            first_hops=linked_guards,
                            rng=self.rng,
                            before=before,
                            subnet_rule=self.config.subnet_rule,
                        )
                        break
                    except PathError as exc:
                        errors.append(str(exc))
                if path is None:
                    continue
                chan = self.links.chan_of(path[0].node_id)
                if chan is None:
                    continue
                try:
                    circ = await self.driver.build_circuit(chan, [self.hop_of(r) for r in path], timeout=20)
                except CircuitError as exc:
                    errors.append(str(exc))
                    continue
                self._paths[circ] = [r.node_id for r in path]
                return circ, target.node_id
            if not cands:
                errors.append("no eligible ORDB (rule: never our own, our guards or our neighbours)")
            await self._refresh_view()
            if attempt:
                await asyncio.sleep(0.5)
        raise PathError(f"no circuit to an eligible ORDB: {errors[-1] if errors else 'no candidates'}")

    def _record_dht(self, op: str, hash_name: bytes) -> None:
        if self.node.recorder is not None:
            from dht.keys import provider_key

            self.node.recorder(
                {"kind": "dht", "op": op, "key": provider_key(hash_name), "hash_name": hash_name}
            )

    async def _publish_provider(self, hash_name: bytes) -> int:
        """Our provider record for a hash_name into the DHT; how many nodes took it (0: failed)."""
        self._record_dht("publish_provider", hash_name)
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

    async def _find_providers(self, hash_name: bytes) -> list[object]:
        self._record_dht("find_providers", hash_name)
        recs = await self.dht.find_providers(hash_name)
        return [r for r in recs if r.node_id != self.keys.node_id]

    async def _forward_query(self, prov: object, body: bytes) -> tuple[int, int] | None:
        """ORDB to ORDB (DESIGN §6): link to the ORDB found in the DHT, 1-hop circuit, forward."""
        assert isinstance(prov, ProviderRecord)
        lock = self._forward_locks.setdefault(prov.node_id, asyncio.Lock())
        async with lock:  # one link setup per remote ORDB at a time; later queries reuse it
            chan = self.links.chan_of(prov.node_id, ordb=True)
            if chan is None:
                via = self._signaller_for(prov)  # type: ignore[arg-type]
                if not via:
                    return None
                await self.links.connect(prov, via, purpose=1)  # type: ignore[arg-type]
                chan = self.links.chan_of(prov.node_id, ordb=True)
                if chan is None:
                    return None
            circ = self._forward_circuits.get(prov.node_id)
            if circ is None or circ not in self.node.circuits:  # one 1-hop circuit per remote ORDB
                hop = HopSpec(
                    prov.node_id,
                    prov.ntor_key,
                    (LinkSpecPeerNodeId(prov.node_id), LinkSpecEd25519(prov.identity_key)),
                )
                circ = await self.driver.build_circuit(chan, [hop], timeout=20)
                self._forward_circuits[prov.node_id] = circ
        sid = self.node.open_db_stream(circ, RelayCommand.DB_QUERY, body)
        self.driver.flush()
        return circ, sid

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
        return Download(
            node=self.node,
            kick=self.driver.flush,
            store=self.store,
            hash_name=link.hash_name,
            key=link.key,
            build_circuit=self.build_ordb_circuit,
            count_ordbs=lambda: len(self.eligible_ordbs()),
            on_quarter=self._seed,
            want_circuits=self.config.download_circuits,
            rng=self.rng,
        )

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
            "circuits": len([c for c in self._circuits if c in self.node.circuits]),
            "circuit_paths": [
                [n.hex()[:16] for n in p] for c, p in self._paths.items() if c in self.node.circuits
            ],
            "relayed_circuits": len(self.node.circuits)
            - len([c for c in self._circuits if c in self.node.circuits]),
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
