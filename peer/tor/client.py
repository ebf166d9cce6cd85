"""Our onion proxy on the Tor network (issue: Tor network client).

Links to tor relays are TLS links; the handshake is tor's, as an initiator that does not
authenticate: VERSIONS offering 4 and 5, the relay's CERTS validated (types 2, 4, 5, 7,
type 5 bound to this TLS certificate) and compared with the consensus, then NETINFO.  The
1 s / 5 s liveness rule of peer links does not apply here.  Circuits use the same onion
core as our peer network (CREATE2/EXTEND2 with ntor, tor1, SENDME v1).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import time
from collections.abc import Callable

from peer.errors import HandshakeError
from peer.net.driver import NodeDriver, OnionStream
from peer.proto.channel import HandshakeConfig, LivenessConfig
from peer.proto.circuit import HopSpec
from peer.proto.node import NodeConfig, OnionNode
from peer.proto.peerinfo import PeerInfo
from peer.tor.certs import check_expected_identity, validate_relay_certs
from peer.tor.directory import NetworkDirectory, Relay
from peer.tor.guards import GuardSet, select_path
from peer.transport.tls import TlsLink, connect_tls
from peer.wire.cells import Certs, NetAddress
from peer.wire.linkspec import LinkSpec, LinkSpecEd25519, LinkSpecIPv4, LinkSpecIPv6, LinkSpecLegacyId

#: Links to tor relays follow tor's own rules: no 1 s keepalive, no 5 s death.
TOR_LIVENESS = LivenessConfig(keepalive=None, dead_after=None, handshake_timeout=30.0)


def relay_link_specs(relay: Relay) -> tuple[LinkSpec, ...]:
    """EXTEND2 link specifiers in tor's order: IPv4, legacy id, Ed25519 id, IPv6 (tor-spec §5.1.2)."""
    ip = ipaddress.ip_address(relay.address)
    specs: list[LinkSpec] = []
    if ip.version == 4:
        specs.append(LinkSpecIPv4(ip.packed, relay.orport))
    specs.append(LinkSpecLegacyId(relay.rsa_id))
    if relay.ed25519_id is not None:
        specs.append(LinkSpecEd25519(relay.ed25519_id))
    if ip.version == 6:
        specs.append(LinkSpecIPv6(ip.packed, relay.orport))
    return tuple(specs)


def relay_hop(relay: Relay) -> HopSpec:
    """For ntor with tor relays the 20-byte ID is the relay's RSA identity digest."""
    return HopSpec(relay.rsa_id, relay.ntor_key, relay_link_specs(relay))


def relay_handshake(relay: Relay, link: TlsLink, clock: Callable[[], float]) -> HandshakeConfig:
    def validate(certs: Certs) -> PeerInfo:
        seen = link.peer_cert_fingerprint
        if seen is None:
            raise HandshakeError("the TLS layer did not report the relay's certificate")
        proved = validate_relay_certs(certs, seen, clock())
        check_expected_identity(proved, relay.rsa_id, relay.ed25519_id)
        return PeerInfo(proved.rsa_id, ed25519_id=proved.ed25519_id, rsa_id=proved.rsa_id, is_tor_relay=True)

    return HandshakeConfig(validate=validate, certs=None, other_address=NetAddress.from_ip(relay.address))


class TorClient:
    """An onion proxy for the Tor network, built from a verified directory."""

    def __init__(
        self,
        directory: NetworkDirectory,
        *,
        guards: GuardSet,
        rng: random.Random | None = None,
        allow_same_subnet: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.guards = guards
        self.rng = rng or random.SystemRandom()
        self.allow_same_subnet = allow_same_subnet
        self.clock = clock
        # Our node never accepts CREATE2 from tor relays; its NodeID is random and unused.
        self.node = OnionNode(
            node_id=os.urandom(20), ntor_keys={}, randbytes=os.urandom, config=NodeConfig(auto_consume=False)
        )
        self.driver = NodeDriver(self.node)
        self._chans: dict[bytes, int] = {}
        self._exits: dict[int, Relay] = {}  # open circuits and their exits, reused for streams
        self.last_path: tuple[Relay, ...] = ()

    async def channel_to(self, relay: Relay, timeout: float = 30.0) -> int:
        chan = self._chans.get(relay.rsa_id)
        if chan is not None and chan in self.node.channels:
            return chan
        link = await connect_tls(relay.address, relay.orport, timeout=timeout)
        chan = self.driver.add_link(link, relay_handshake(relay, link, self.clock), liveness=TOR_LIVENESS)
        await self.driver.wait_open(chan, timeout)
        self._chans[relay.rsa_id] = chan
        return chan

    def choose_path(self, port: int, hops: int = 3) -> tuple[Relay, ...]:
        return select_path(
            self.directory,
            port,
            guards=self.guards,
            rng=self.rng,
            now=self.clock(),
            hops=hops,
            allow_same_subnet=self.allow_same_subnet,
        )

    async def build_circuit(self, path: tuple[Relay, ...], timeout: float = 60.0) -> int:
        chan = await self.channel_to(path[0])
        circ = await self.driver.build_circuit(chan, [relay_hop(r) for r in path], timeout=timeout)
        self.last_path = path
        return circ

    async def open_stream(self, host: str, port: int, *, hops: int = 3) -> OnionStream:
        """A stream to host:port, on an open circuit whose exit allows the port, else a new one."""
        for circ, exit_relay in list(self._exits.items()):
            if circ in self.node.circuits and exit_relay.is_exit_for(port):
                return await self.driver.open_stream(circ, host, port)
            if circ not in self.node.circuits:
                del self._exits[circ]
        path = self.choose_path(port, hops)
        circ = await self.build_circuit(path)
        self._exits[circ] = path[-1]
        return await self.driver.open_stream(circ, host, port)

    async def close(self) -> None:
        await self.driver.close()


async def read_http_response(
    stream: OnionStream, on_progress: Callable[[int, int | None], None], sink: Callable[[bytes], None]
) -> tuple[int, dict[str, str]]:
    """Read an HTTP/1.0 response from ``stream``: returns (status, headers); the body goes to ``sink``."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.read()
        if not chunk:
            raise HandshakeError("the server closed the connection before answering")
        head += chunk
        if len(head) > 64 * 1024:
            raise HandshakeError("HTTP response headers are too long")
    raw, _, rest = head.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise HandshakeError(f"not an HTTP response: {lines[0][:60]!r}") from None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    total = None
    with contextlib.suppress(ValueError, KeyError):
        total = int(headers["content-length"])
    got = len(rest)
    if rest:
        sink(rest)
    on_progress(got, total)
    while True:
        chunk = await stream.read()
        if not chunk:
            break
        sink(chunk)
        got += len(chunk)
        on_progress(got, total)
    if total is not None and got != total:
        raise HandshakeError(f"the body ended after {got} of {total} bytes")
    return status, headers
