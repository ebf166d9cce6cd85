"""Our onion proxy on the Tor network: verified directory -> path -> TLS link -> circuit -> stream.

Glue between the sans-I/O onion core (``peer.proto`` through ``peer.driver.NodeDriver``) and the
Tor network: the first hop is reached over a TLS link whose CERTS must validate and match the
consensus identities (tor-spec §4.2); the circuit is extended with ntor (HTYPE 2) to relays
chosen by :func:`peer.tor.guards.select_path`; streams are opened with BEGIN at the exit.
Used by ``peersm tor get`` and ``peersm tor socks`` (:mod:`peer.tor.cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peer.driver import NodeDriver, OnionStream, StreamError
from peer.errors import PeerError
from peer.proto import events as ev
from peer.proto.channel import HandshakeConfig
from peer.proto.circuit import HopSpec
from peer.proto.node import OnionNode
from peer.proto.peerinfo import PeerInfo
from peer.socks import StreamOpenError
from peer.tor.certs import TlsCertMismatch, check_expected_identity, validate_relay_certs
from peer.tor.directory import AuthoritySpec, DirectoryClient, NetworkDirectory, Relay
from peer.tor.guards import GuardSet, select_path
from peer.transport.tls import TlsLink, connect_tls
from peer.wire.cells import Certs, NetAddress
from peer.wire.linkspec import LinkSpec, LinkSpecEd25519, LinkSpecIPv4, LinkSpecIPv6, LinkSpecLegacyId

log = logging.getLogger(__name__)


def hop_spec(relay: Relay) -> HopSpec:
    """The EXTEND2 target: link specifiers in tor's order 00 (IPv4), 02 (RSA id), 03 (Ed25519), 01."""
    specs: list[LinkSpec] = []
    ip = ipaddress.ip_address(relay.address.strip("[]"))
    if ip.version == 4:
        specs.append(LinkSpecIPv4(ip.packed, relay.orport))
    specs.append(LinkSpecLegacyId(relay.rsa_id))
    if relay.ed25519_id is not None:
        specs.append(LinkSpecEd25519(relay.ed25519_id))
    if ip.version == 6:
        specs.append(LinkSpecIPv6(ip.packed, relay.orport))
    return HopSpec(node_id=relay.rsa_id, ntor_key=relay.ntor_key, link_specs=tuple(specs))


def relay_validator(link: TlsLink, relay: Relay, clock: Callable[[], float]) -> Callable[[Certs], PeerInfo]:
    """CERTS check for a link to ``relay``: valid certificates, bound to this TLS certificate,
    proving the identities the consensus names."""

    def validate(certs: Certs) -> PeerInfo:
        fp = link.peer_cert_fingerprint
        if fp is None:
            raise TlsCertMismatch("the TLS layer saw no certificate")
        proved = validate_relay_certs(certs, fp, clock())
        check_expected_identity(proved, relay.rsa_id, relay.ed25519_id)
        return PeerInfo(
            node_id=proved.rsa_id, ed25519_id=proved.ed25519_id, rsa_id=proved.rsa_id, is_tor_relay=True
        )

    return validate


@dataclass(frozen=True, slots=True)
class BuiltCircuit:
    chan: int
    circ: int
    path: tuple[Relay, ...]
    build_seconds: float


class TorClient:
    """A Tor client over our onion core.  ``async with TorClient(...) as c: s = await c.open_stream(h, p)``."""

    def __init__(
        self,
        authorities: Sequence[AuthoritySpec],
        data_dir: Path | str | None,
        *,
        hops: int = 3,
        allow_same_subnet: bool = False,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 60.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.dir_client = DirectoryClient(authorities, data_dir)
        self.guards = GuardSet.in_data_dir(data_dir) if data_dir is not None else GuardSet(None)
        self.hops = hops
        self.allow_same_subnet = allow_same_subnet
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        self.timeout = timeout
        self.progress = progress or (lambda _msg: None)
        self.directory: NetworkDirectory | None = None
        self._driver: NodeDriver | None = None
        self._chans: dict[bytes, int] = {}  # guard rsa_id -> open channel
        self._circuits: dict[int, BuiltCircuit] = {}  # exit port -> circuit (reused)
        self._end_reasons: dict[tuple[int, int], int] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> TorClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.progress("fetching and verifying the consensus")
        self.directory = await self.dir_client.get(self.clock())
        self.progress(
            f"consensus verified ({len(self.directory.signed_by)} authority signatures, "
            f"{len(self.directory.relays)} relays)"
        )
        node = OnionNode(node_id=os.urandom(20), ntor_keys={}, randbytes=os.urandom)
        self._driver = NodeDriver(node)
        self._driver.on_event = self._on_event

    def _on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.StreamEnded) and e.remote:
            self._end_reasons[(e.circ, e.stream_id)] = e.reason
            if len(self._end_reasons) > 1024:
                self._end_reasons.pop(next(iter(self._end_reasons)))
        elif isinstance(e, ev.CircuitClosed):
            for port, built in list(self._circuits.items()):
                if built.circ == e.circ:
                    del self._circuits[port]
        elif isinstance(e, ev.ChannelClosed):
            for rsa_id, chan in list(self._chans.items()):
                if chan == e.chan:
                    del self._chans[rsa_id]

    @property
    def driver(self) -> NodeDriver:
        if self._driver is None:
            raise PeerError("TorClient not started")
        return self._driver

    async def _channel_to(self, relay: Relay) -> int:
        chan = self._chans.get(relay.rsa_id)
        if chan is not None:
            return chan
        link = await connect_tls(relay.address, relay.orport, timeout=self.timeout)
        other = NetAddress.from_ip(relay.address.strip("[]"))
        handshake = HandshakeConfig(validate=relay_validator(link, relay, self.clock), other_address=other)
        chan = self.driver.add_link(link, handshake)
        await self.driver.wait_open(chan, self.timeout)
        self._chans[relay.rsa_id] = chan
        return chan

    async def build_circuit(self, port: int) -> BuiltCircuit:
        """A new circuit whose exit accepts ``port``."""
        if self.directory is None:
            raise PeerError("TorClient not started")
        path = select_path(
            self.directory,
            port,
            guards=self.guards,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.clock(),
            hops=self.hops,
            allow_same_subnet=self.allow_same_subnet,
        )
        self.progress(f"building a {len(path)}-hop circuit")
        start = time.perf_counter()
        chan = await self._channel_to(path[0])
        circ = await self.driver.build_circuit(chan, [hop_spec(r) for r in path], timeout=self.timeout)
        built = BuiltCircuit(chan, circ, path, time.perf_counter() - start)
        self.progress(f"circuit built in {built.build_seconds:.2f} s")
        return built

    async def circuit_for(self, port: int) -> BuiltCircuit:
        async with self._lock:
            built = self._circuits.get(port)
            if built is None:
                built = await self.build_circuit(port)
                self._circuits[port] = built
            return built

    async def open_stream(self, host: str, port: int) -> OnionStream:
        """A stream to ``host:port`` through the exit (names are resolved by the exit).

        Raises :class:`StreamOpenError` carrying the END reason when the exit refuses."""
        built = await self.circuit_for(port)
        try:
            return await self.driver.open_stream(built.circ, host, port, timeout=self.timeout)
        except StreamError as exc:
            reason = next((r for (c, _s), r in reversed(self._end_reasons.items()) if c == built.circ), None)
            raise StreamOpenError(str(exc), reason) from exc

    async def close(self) -> None:
        if self._driver is not None:
            for built in list(self._circuits.values()):
                with contextlib.suppress(PeerError):
                    self._driver.destroy_circuit(built.circ)
            await self._driver.close()
            self._driver = None
