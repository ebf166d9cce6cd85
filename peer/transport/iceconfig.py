"""WebRTC configuration and the ICE address policy (DESIGN §4 "Links", §12 "loopback only").

Which local addresses a peer may reveal in its SDP is a privacy decision, so it is
configuration, never left to the ICE library's defaults:

* ``WebRtcConfig.ice_allow`` lists addresses and networks.  An entry without a
  prefix length (``127.3.0.1``, ``2001:db8::5``) is an address we bind to and
  announce even when no interface carries it (any 127/8 address works on Linux
  loopback, which is how tests stand distinct hosts on one machine).  An entry
  with a prefix length (``127.0.0.0/8``, or a LAN prefix) allows every interface address that
  falls inside it.  ``None`` (the default) means every real interface address
  except loopback, link-local, multicast and unspecified ones.
* ``WebRtcConfig.ice_servers`` lists STUN/TURN servers; the default is empty, so
  no default setting sends a packet off this machine.  Configuring a server is an
  explicit consent to announce the server-reflexive or relayed address it reports.

:class:`IcePolicy` turns the configuration into the list of addresses to bind, and
checks every SDP we produce: a host candidate, related address or connection line
outside the policy raises :class:`IcePolicyError` before the SDP leaves this
module's callers.  It also strips remote candidates that are not IP literals, so an
mDNS (``.local``) candidate can never make us send a multicast query.

The UDP receive buffer helper lives here too: the kernel silently caps
``SO_RCVBUF`` at ``net.core.rmem_max``, so we try ``SO_RCVBUFFORCE`` (root), read
the value back and report whether it was capped.

This module must not import aiortc (only ``peer.transport.webrtc`` does).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import ifaddr

from peer.errors import TransportError, UsageError

log = logging.getLogger(__name__)

#: Default UDP receive buffer (issue 4: the default buffer dropped half the datagrams
#: between processes; 4 MiB removed the drops).
DEFAULT_RCVBUF = 4 * 1024 * 1024
#: Default high-water mark of the data channel's send buffer (bytes queued in aiortc).
DEFAULT_SEND_BUFFER = 1024 * 1024
#: Default limit of bytes received but not yet read before the link is closed.
DEFAULT_RECV_QUEUE_LIMIT = 8 * 1024 * 1024
#: Linux SO_RCVBUFFORCE (asm-generic/socket.h); Python's socket module does not export it.
SO_RCVBUFFORCE: int | None = getattr(
    socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None
)
#: Largest message a WebRtcLink sends or accepts (aiortc advertises 65,536).
DEFAULT_MAX_MESSAGE_SIZE = 65536

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class IcePolicyError(TransportError):
    """An SDP would reveal (or a configuration names) an address outside the ICE policy."""

    kind = "ice-policy"


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server (``stun:host:port``, ``turn:host:port?transport=udp``, ``turns:...``).

    aiortc uses the first STUN and the first TURN server only.
    """

    url: str
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise UsageError(f"not a STUN/TURN URL: {self.url!r}")


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    """Configuration of WebRTC links (one instance is shared by many links).

    ``ice_allow``: addresses and networks that may be bound and announced (see the
    module docstring); ``None`` = real interfaces minus loopback.  Tests pass
    loopback addresses explicitly, e.g. ``WebRtcConfig(ice_allow=("127.0.0.1",))``.
    """

    ice_allow: tuple[str, ...] | None = None
    #: STUN/TURN servers; empty by default.  Plain URL strings are converted at run time.
    ice_servers: tuple[IceServer, ...] = ()
    #: SO_RCVBUF requested for each ICE socket (bytes).
    rcvbuf: int = DEFAULT_RCVBUF
    #: ``send`` waits while more than this many bytes are queued in the data channel.
    send_buffer: int = DEFAULT_SEND_BUFFER
    #: The link is closed (ReceiveQueueOverflow) when more than this many received
    #: bytes wait unread: aiortc has no receive-side back-pressure.
    recv_queue_limit: int = DEFAULT_RECV_QUEUE_LIMIT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        if self.ice_allow is not None:
            if isinstance(self.ice_allow, str) or not isinstance(self.ice_allow, tuple):
                # Accept any iterable of strings from callers, store a tuple (hashable, frozen).
                entries = (self.ice_allow,) if isinstance(self.ice_allow, str) else tuple(self.ice_allow)
                object.__setattr__(self, "ice_allow", entries)
            for entry in self.ice_allow or ():
                parse_allow_entry(entry)
        # Plain URL strings are accepted for servers that need no credentials.
        servers = tuple(IceServer(s) if isinstance(s, str) else s for s in self.ice_servers)
        object.__setattr__(self, "ice_servers", servers)
        for name in ("rcvbuf", "send_buffer", "recv_queue_limit", "max_message_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"WebRtcConfig.{name} must be positive")
        if self.recv_queue_limit < self.max_message_size:
            raise UsageError("WebRtcConfig.recv_queue_limit must hold at least one message")

    @classmethod
    def loopback(cls, *addresses: str) -> WebRtcConfig:
        """A configuration for tests: bind and announce only the given 127/8 addresses.

        Change other fields with ``dataclasses.replace``.
        """
        allow = addresses or ("127.0.0.1",)
        for a in allow:
            if not ipaddress.ip_address(a).is_loopback:
                raise UsageError(f"not a loopback address: {a!r}")
        return cls(ice_allow=tuple(allow))


def parse_allow_entry(entry: str) -> tuple[IpNetwork, bool]:
    """Parse one ``ice_allow`` entry: (network, explicit) where explicit = a bare address."""
    try:
        if "/" in entry:
            return ipaddress.ip_network(entry, strict=False), False
        return ipaddress.ip_network(ipaddress.ip_address(entry)), True
    except ValueError as exc:
        raise UsageError(f"bad ice_allow entry {entry!r}: {exc}") from None


def interface_addresses() -> list[str]:
    """Every IP address configured on a local interface (IPv6 scoped addresses skipped)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
            else:
                address, _flowinfo, scope_id = ip.ip
                if scope_id == 0:
                    found.append(address)
    return found


def _is_public_candidate(address: IpAddress) -> bool:
    return not (
        address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class IcePolicy:
    """The resolved policy: what to bind, what may appear in our SDP."""

    bind: tuple[str, ...]
    allowed: tuple[IpNetwork, ...]
    servers: bool = field(default=False)

    @classmethod
    def from_config(
        cls, config: WebRtcConfig, interfaces: Callable[[], Iterable[str]] = interface_addresses
    ) -> IcePolicy:
        """Resolve the configuration against the current interfaces (``interfaces`` is injectable)."""
        bind: list[str] = []
        allowed: list[IpNetwork] = []
        current = [ipaddress.ip_address(a) for a in interfaces()]
        if config.ice_allow is None:
            for address in current:
                if _is_public_candidate(address) and str(address) not in bind:
                    bind.append(str(address))
                    allowed.append(ipaddress.ip_network(address))
        else:
            for entry in config.ice_allow:
                network, explicit = parse_allow_entry(entry)
                allowed.append(network)
                if explicit:
                    candidates = [network.network_address]
                else:
                    candidates = [a for a in current if a.version == network.version and a in network]
                for address in candidates:
                    if not address.is_unspecified and str(address) not in bind:
                        bind.append(str(address))
        return cls(bind=tuple(bind), allowed=tuple(allowed), servers=bool(config.ice_servers))

    def allows(self, host: str) -> bool:
        """True when ``host`` (an IP literal) lies inside the policy."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.allowed)

    def check_local_sdp(self, sdp: str) -> None:
        """Raise IcePolicyError if our SDP would reveal an address outside the policy."""
        reflexive: set[str] = set()
        for cand in candidate_lines(sdp):
            if cand.type == "host":
                if not self.allows(cand.address):
                    raise IcePolicyError("local SDP holds a host candidate outside ice_allow")
            elif not self.servers:
                raise IcePolicyError(f"local SDP holds a {cand.type} candidate but no ICE server is set")
            else:
                reflexive.add(cand.address)
            # A relayed candidate's related address is the reflexive address the TURN server saw
            # (consented to by configuring the server); any other must be a local allowed address.
            if (
                cand.related is not None
                and cand.type != "relay"
                and not (_unspecified(cand.related) or self.allows(cand.related))
            ):
                raise IcePolicyError("local SDP holds a related address outside ice_allow")
        for address in connection_addresses(sdp):
            if not (_unspecified(address) or self.allows(address) or address in reflexive):
                raise IcePolicyError("local SDP holds a connection address outside ice_allow")


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class CandidateLine:
    """The parts of an SDP ``a=candidate`` line that the policy looks at (RFC 8839 §5.1)."""

    transport: str
    address: str
    type: str
    related: str | None


def candidate_lines(sdp: str) -> list[CandidateLine]:
    """Parse every ``a=candidate:`` line of an SDP; a malformed line raises TransportError."""
    found: list[CandidateLine] = []
    for line in sdp.splitlines():
        if not line.startswith("a=candidate:"):
            continue
        bits = line[len("a=candidate:") :].split()
        if len(bits) < 8 or bits[6] != "typ":
            raise TransportError("malformed ICE candidate line in SDP")
        related = bits[bits.index("raddr") + 1] if "raddr" in bits[8:-1] else None
        found.append(CandidateLine(transport=bits[2].lower(), address=bits[4], type=bits[7], related=related))
    return found


def connection_addresses(sdp: str) -> list[str]:
    """The addresses of every ``c=`` and ``o=`` line (RFC 8866 §5.2, §5.7)."""
    found: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("c=") or line.startswith("o="):
            bits = line.split()
            if len(bits) >= 3 and bits[-2] in ("IP4", "IP6"):
                found.append(bits[-1])
    return found


#: At most this many remote candidates are used, so that a remote SDP cannot turn our
#: ICE agent into a scanner of many addresses.
MAX_REMOTE_CANDIDATES = 16


def filter_remote_sdp(sdp: str, policy: IcePolicy | None = None) -> str:
    """Drop remote candidates we must not use.

    Dropped: non-IP hosts (mDNS ``.local``: resolving them would send multicast),
    non-UDP candidates, unspecified and multicast addresses, loopback addresses
    unless our own policy binds loopback (tests), and any beyond the first
    :data:`MAX_REMOTE_CANDIDATES`.
    """
    local_loopback = policy is not None and any(ipaddress.ip_address(a).is_loopback for a in policy.bind)
    kept: list[str] = []
    used = 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            bits = line[len("a=candidate:") :].split()
            if len(bits) < 8 or bits[2].lower() != "udp" or used >= MAX_REMOTE_CANDIDATES:
                continue
            try:
                address = ipaddress.ip_address(bits[4])
            except ValueError:
                continue
            if address.is_unspecified or address.is_multicast:
                continue
            if address.is_loopback and not local_loopback:
                continue
            used += 1
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def sdp_fingerprint_sha256(sdp: str) -> bytes | None:
    """The ``a=fingerprint:sha-256`` value of an SDP as 32 raw bytes (RFC 8122 §5), or None.

    Raises TransportError when the SDP holds two different SHA-256 fingerprints.
    """
    found: set[bytes] = set()
    for line in sdp.splitlines():
        if line.lower().startswith("a=fingerprint:sha-256 "):
            hexvalue = line.split(None, 1)[1].strip().replace(":", "")
            try:
                value = bytes.fromhex(hexvalue)
            except ValueError:
                raise TransportError("malformed DTLS fingerprint in SDP") from None
            if len(value) != 32:
                raise TransportError("malformed DTLS fingerprint in SDP")
            found.add(value)
    if len(found) > 1:
        raise TransportError("SDP holds several different DTLS fingerprints")
    return found.pop() if found else None


class _SockOpts(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def getsockopt(self, level: int, option: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class RcvbufResult:
    """What the kernel granted for SO_RCVBUF on one socket."""

    requested: int
    effective: int
    forced: bool

    @property
    def capped(self) -> bool:
        return self.effective < self.requested


def set_receive_buffer(sock: _SockOpts, size: int) -> RcvbufResult:
    """Ask for a ``size``-byte UDP receive buffer, read it back, warn when the kernel capped it.

    ``SO_RCVBUFFORCE`` (Linux, CAP_NET_ADMIN) ignores net.core.rmem_max; otherwise
    ``SO_RCVBUF`` is silently capped there.  Linux reports twice the usable size.
    """
    forced = False
    if SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            forced = True
        except OSError:
            forced = False
    if not forced:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    effective = got // 2 if sys.platform.startswith("linux") else got
    result = RcvbufResult(requested=size, effective=effective, forced=forced)
    if result.capped:
        log.warning(
            "UDP receive buffer capped by the kernel: asked %d bytes, got %d "
            "(raise net.core.rmem_max or run with CAP_NET_ADMIN); expect datagram drops",
            size,
            effective,
        )
    return result
