"""The channel: one link's cell framing, handshake, liveness and circuit-id space (sans-I/O).

tor-spec §2-4 ("Negotiating channels"), link protocol v4/v5 only.

Handshake as both roles:
  initiator:  -> VERSIONS
  responder:  <- VERSIONS   -> VERSIONS, CERTS, [AUTH_CHALLENGE], NETINFO
  initiator:  <- VERSIONS, CERTS (validated), [AUTH_CHALLENGE ignored], NETINFO
              -> [CERTS] , NETINFO        (CERTS only between our peers; a tor client sends none)
  responder:  <- [CERTS (validated)], NETINFO   -> open
Between our peers both sides send CERTS carrying the peer certificate, and both check the
fingerprint it certifies against the one their DTLS/TLS layer saw (the validator does).

Scoping of bad input (docs/circuits.md): anything that breaks framing, a second VERSIONS,
a cell not allowed before the handshake, or a bad certificate closes the *channel*; circuit
cells are handed to the node, which closes only the circuit concerned.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.errors import HandshakeError, PeerError, WireError
from peer.proto.peerinfo import PeerInfo
from peer.wire.cells import (
    CELL_LEN,
    AuthChallenge,
    Cell,
    Certs,
    NetAddress,
    Netinfo,
    Versions,
    decode_message,
    encode_versions_cell,
    pull_cell,
)
from peer.wire.commands import CellCommand

#: Circuit cells handed to the node (tor-spec §3).
CIRCUIT_COMMANDS = frozenset(
    {
        CellCommand.CREATE,
        CellCommand.CREATED,
        CellCommand.RELAY,
        CellCommand.DESTROY,
        CellCommand.CREATE_FAST,
        CellCommand.CREATED_FAST,
        CellCommand.RELAY_EARLY,
        CellCommand.CREATE2,
        CellCommand.CREATED2,
    }
)
#: Private link-level cells (DESIGN §4) handed to the runtime.
LINK_COMMANDS = frozenset(
    {
        CellCommand.DB_FIND_PEER,
        CellCommand.DB_FOUND_PEER,
        CellCommand.DB_INTRODUCE,
        CellCommand.DB_INTRODUCED,
        CellCommand.DB_LINK_CLOSING,
        CellCommand.DB_LINK_KEEP,
    }
)
#: Cells allowed before the handshake completes (tor-spec §4).
HANDSHAKE_COMMANDS = frozenset(
    {
        CellCommand.VERSIONS,
        CellCommand.VPADDING,
        CellCommand.CERTS,
        CellCommand.AUTH_CHALLENGE,
        CellCommand.AUTHENTICATE,
        CellCommand.NETINFO,
    }
)
SUPPORTED_VERSIONS = (4, 5)


class ChannelState(enum.Enum):
    AWAIT_VERSIONS = "await-versions"
    AWAIT_CERTS = "await-certs"
    AWAIT_NETINFO = "await-netinfo"
    OPEN = "open"
    CLOSED = "closed"


CertsValidator = Callable[[Certs], PeerInfo]


@dataclass(frozen=True, slots=True)
class HandshakeConfig:
    """How this side authenticates and checks the other.

    ``certs`` is the CERTS cell we send (None: we do not authenticate, as a tor client);
    ``validate`` checks the other side's CERTS and says who it is (it raises HandshakeError);
    ``require_peer_certs`` is False only on a responder that accepts unauthenticated clients.
    """

    validate: CertsValidator
    certs: Certs | None = None
    require_peer_certs: bool = True
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    #: The remote's address as we see it, for NETINFO (ATYPE 4 with zeros when unknown).
    other_address: NetAddress = field(default_factory=lambda: NetAddress(4, b"\x00\x00\x00\x00"))


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """Keepalive on peer links (DESIGN §4); both None on links to tor relays."""

    keepalive: float | None = 1.0  # send PADDING after this long without sending
    dead_after: float | None = 5.0  # declare the link dead after this long without receiving
    handshake_timeout: float = 30.0


class ChannelClosedError(PeerError):
    kind = "channel-closed"


class Channel:
    """One link's protocol state.  Feed it bytes with :meth:`receive_data`; read what to send
    with :meth:`pop_messages`; circuit cells come back from ``receive_data`` for the node."""

    def __init__(
        self,
        *,
        initiator: bool,
        handshake: HandshakeConfig,
        now: float,
        framed: bool = True,
        liveness: LivenessConfig | None = None,
    ) -> None:
        self.initiator = initiator
        self.framed = framed
        self._hs = handshake
        self._live = liveness or LivenessConfig(None, None)
        self.state = ChannelState.AWAIT_VERSIONS
        self.link_version = 0
        self.peer: PeerInfo | None = None
        self.close_reason = ""
        self._circid_len = 2  # until VERSIONS is negotiated
        self._inbuf = bytearray()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._started = now
        self._last_sent = now
        self._last_received = now
        self._got_certs = False
        self._sent_final = False
        self.circ_ids: set[int] = set()
        self.link_messages: list[object] = []
        self.just_opened = False
        if initiator:
            self._queue_raw(encode_versions_cell(self._hs.versions), now)

    # ---- output -------------------------------------------------------------------------
    def _queue_raw(self, data: bytes, now: float) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        self._last_sent = now

    def send_cell(self, circ_id: int, command: int, payload: bytes, now: float) -> None:
        """Queue one cell (payload is padded for fixed cells)."""
        if self.state is ChannelState.CLOSED:
            return
        if len(payload) == 509 and command not in (7,) and command < 128:
            data = circ_id.to_bytes(4, "big") + bytes((command,)) + payload
        else:
            data = Cell(circ_id, command, payload).encode(self._circid_len)
        self._out.append(data)
        self._out_bytes += len(data)
        self._last_sent = now

    def send_relay_cells(self, circ_id: int, command: int, payloads: list[bytes], now: float) -> None:
        """Queue several RELAY/RELAY_EARLY cells of one circuit (hot path)."""
        if self.state is ChannelState.CLOSED:
            return
        head = circ_id.to_bytes(4, "big") + bytes((command,))
        out = self._out
        for p in payloads:
            out.append(head + p)
        self._out_bytes += CELL_LEN * len(payloads)
        self._last_sent = now

    @property
    def pending_bytes(self) -> int:
        return self._out_bytes

    def pop_messages(self, max_bytes: int = 16 * 1024) -> list[bytes]:
        """Everything queued, packed into messages of whole cells of at most ``max_bytes``
        (a single larger variable cell travels alone)."""
        if not self._out:
            return []
        msgs: list[bytes] = []
        cur: list[bytes] = []
        size = 0
        for c in self._out:
            if cur and size + len(c) > max_bytes:
                msgs.append(b"".join(cur))
                cur, size = [], 0
            cur.append(c)
            size += len(c)
        if cur:
            msgs.append(b"".join(cur))
        self._out.clear()
        self._out_bytes = 0
        return msgs

    def data_to_send(self) -> bytes:
        return b"".join(self.pop_messages(1 << 62))

    # ---- circuit ids (tor-spec §5.1.1) -------------------------------------------------
    def allocate_circ_id(self, randbytes: Callable[[int], bytes]) -> int:
        """A random unused circuit id with the MSB set iff we initiated the link."""
        msb = 0x80000000 if self.initiator else 0
        for _ in range(64):
            cid = (int.from_bytes(randbytes(4), "big") & 0x7FFFFFFF) | msb
            if cid & 0x7FFFFFFF and cid not in self.circ_ids:
                return cid
        raise HandshakeError("no free circuit id on this channel")

    def is_own_circ_id(self, circ_id: int) -> bool:
        return bool(circ_id & 0x80000000) == self.initiator

    # ---- input --------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[Cell]:
        """Parse bytes from the link; return circuit cells for the node.

        Raises ChannelClosedError when the input closes the channel (the reason is kept in
        ``close_reason``); the caller then tears down every circuit on it.
        """
        if self.state is ChannelState.CLOSED:
            raise ChannelClosedError(self.close_reason or "channel closed")
        self._last_received = now
        buf = self._inbuf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        out: list[Cell] = []
        pos = 0
        n = len(view)
        if self.state is ChannelState.AWAIT_VERSIONS and n >= 3 and view[2] != CellCommand.VERSIONS:
            # tell garbage at once, without waiting for a whole cell of it
            self.close("the first cell must be VERSIONS (garbage before the handshake)")
            raise ChannelClosedError(self.close_reason)
        try:
            while pos < n:
                if (
                    self.state is ChannelState.OPEN
                    and n - pos >= CELL_LEN
                    and (view[pos + 4] in (3, 9))  # RELAY / RELAY_EARLY fast path
                ):
                    out.append(
                        Cell(
                            int.from_bytes(view[pos : pos + 4], "big"),
                            view[pos + 4],
                            bytes(view[pos + 5 : pos + CELL_LEN]),
                        )
                    )
                    pos += CELL_LEN
                    continue
                got = pull_cell(memoryview(view)[pos:], self._circid_len)
                if got is None:
                    break
                cell, used = got
                pos += used
                c = self._handle_cell(cell, now)
                if c is not None:
                    out.append(c)
        except (WireError, HandshakeError) as exc:
            self.close(f"{type(exc).__name__}: {exc}")
            raise ChannelClosedError(self.close_reason) from exc
        rest = bytes(view[pos:])
        if self.framed and rest:
            self.close("a message ended inside a cell (wrong cell length)")
            raise ChannelClosedError(self.close_reason)
        self._inbuf = bytearray(rest)
        return out

    def _fail(self, message: str) -> None:
        raise WireError(message)

    def _handle_cell(self, cell: Cell, now: float) -> Cell | None:
        cmd = cell.command
        if self.state is not ChannelState.OPEN:
            if cmd not in HANDSHAKE_COMMANDS:
                self._fail(f"cell {cmd} before the handshake completed")
            self._handshake_cell(cell, now)
            return None
        if cmd in CIRCUIT_COMMANDS:
            return cell
        if cmd in (CellCommand.PADDING, CellCommand.VPADDING, CellCommand.PADDING_NEGOTIATE):
            return None
        if cmd == CellCommand.VERSIONS:
            self._fail("a second VERSIONS cell")
        if cmd in HANDSHAKE_COMMANDS:
            self._fail(f"handshake cell {cmd} after the handshake")
        if cmd in LINK_COMMANDS:
            self.link_messages.append(decode_message(cell))
            return None
        return None  # unknown cell commands are dropped (tor-spec §3)

    def _handshake_cell(self, cell: Cell, now: float) -> None:
        cmd = cell.command
        if cmd == CellCommand.VPADDING:
            return None
        if self.state is ChannelState.AWAIT_VERSIONS:
            if cmd != CellCommand.VERSIONS:
                self._fail("the first cell must be VERSIONS")
            msg = decode_message(cell)
            assert isinstance(msg, Versions)
            common = set(msg.versions) & set(self._hs.versions)
            if not common:
                raise HandshakeError(f"no common link protocol version (they offer {sorted(msg.versions)})")
            self.link_version = max(common)
            self._circid_len = 4
            if not self.initiator:
                self._queue_raw(encode_versions_cell(self._hs.versions), now)
                if self._hs.certs is not None:
                    self.send_cell(0, CellCommand.CERTS, self._hs.certs.encode_payload(), now)
                self._send_netinfo(now)
                self.state = (
                    ChannelState.AWAIT_CERTS if self._hs.require_peer_certs else ChannelState.AWAIT_NETINFO
                )
            else:
                self.state = ChannelState.AWAIT_CERTS
            return None
        if cmd == CellCommand.VERSIONS:
            self._fail("a second VERSIONS cell")
        if cmd == CellCommand.CERTS:
            if self._got_certs:
                self._fail("a second CERTS cell")
            msg = decode_message(cell)
            assert isinstance(msg, Certs)
            self.peer = self._hs.validate(msg)
            self._got_certs = True
            self.state = ChannelState.AWAIT_NETINFO
            return None
        if cmd == CellCommand.AUTH_CHALLENGE:
            if not self.initiator:
                self._fail("AUTH_CHALLENGE sent to a responder")
            msg = decode_message(cell)
            assert isinstance(msg, AuthChallenge)
            return None  # we never authenticate with AUTHENTICATE; ignoring it is allowed
        if cmd == CellCommand.AUTHENTICATE:
            self._fail("AUTHENTICATE is not supported")
        if cmd == CellCommand.NETINFO:
            if self.state is ChannelState.AWAIT_CERTS:
                raise HandshakeError("NETINFO before CERTS: the peer did not authenticate")
            msg = decode_message(cell)
            assert isinstance(msg, Netinfo)
            if self.initiator:
                if self._hs.certs is not None:
                    self.send_cell(0, CellCommand.CERTS, self._hs.certs.encode_payload(), now)
                self._send_netinfo(now)
            if self.peer is None:  # an unauthenticated client on our responder
                self.peer = PeerInfo(node_id=b"")
            self.state = ChannelState.OPEN
            self.just_opened = True
        return None

    def _send_netinfo(self, now: float) -> None:
        # Clients SHOULD send a zero timestamp (tor-spec §4.5); we never reveal our clock.
        msg = Netinfo(timestamp=0, other_address=self._hs.other_address, my_addresses=())
        self.send_cell(0, CellCommand.NETINFO, msg.encode_payload(), now)

    # ---- timers -------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.state is ChannelState.CLOSED:
            return None
        times: list[float] = []
        if self.state is not ChannelState.OPEN:
            times.append(self._started + self._live.handshake_timeout)
        else:
            if self._live.keepalive is not None:
                times.append(self._last_sent + self._live.keepalive)
        if self._live.dead_after is not None:
            times.append(self._last_received + self._live.dead_after)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Send keepalive PADDING or declare the link dead (raises ChannelClosedError)."""
        if self.state is ChannelState.CLOSED:
            return
        if self.state is not ChannelState.OPEN and now >= self._started + self._live.handshake_timeout:
            self.close("handshake timed out")
            raise ChannelClosedError(self.close_reason)
        dead = self._live.dead_after
        if dead is not None and now - self._last_received >= dead:
            self.close(f"link dead: nothing received for {now - self._last_received:.1f} s")
            raise ChannelClosedError(self.close_reason)
        keep = self._live.keepalive
        if self.state is ChannelState.OPEN and keep is not None and now - self._last_sent >= keep:
            self.send_cell(0, CellCommand.PADDING, b"", now)

    def close(self, reason: str) -> None:
        if self.state is not ChannelState.CLOSED:
            self.state = ChannelState.CLOSED
            self.close_reason = reason
