"""The onion node core: channels, origin and relay circuits, streams (sans-I/O).

One object per peer plays every role: OP (circuits it builds, :mod:`peer.proto.origin`), OR
(circuits it relays, :mod:`peer.proto.forwarding`) and exit/endpoint (streams that end here,
:mod:`peer.proto.streams`; their windows: :mod:`peer.proto.flow`).  This facade owns the
channels, routes their cells to those parts and tears circuits down.  The driver feeds it
link bytes and the time and sends what :meth:`OnionNode.pop_messages` returns; results come
out as events (with ``NodeConfig.record`` on, also :class:`~peer.proto.events.Observed`).

Scoping of bad input (what is closed; docs/circuits.md has the full table):
  - framing, handshake, a second VERSIONS, a CREATE2 on a circuit id in use: the channel;
  - an unrecognised cell at the last hop or the OP (bad digest), DATA on stream 0, more than
    8 RELAY_EARLY, EXTEND2 outside RELAY_EARLY, a forged SENDME, a window overrun, inbound
    RELAY_EARLY at the OP, a cell for an unknown stream: the circuit;
  - a recognised cell with an unknown relay command: the cell (dropped, still counted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from peer.crypto.keys import X25519KeyPair
from peer.errors import HandshakeError, UsageError, WireError
from peer.proto import events as ev
from peer.proto.channel import Channel, ChannelClosedError, HandshakeConfig, LivenessConfig
from peer.proto.circuit import Circuit, CircuitState, HopSpec, OriginCircuit, StreamState
from peer.proto.forwarding import Forwarding
from peer.proto.origin import OriginCircuits
from peer.proto.state import NodeConfig, NodeState
from peer.proto.streams import EdgeStreams
from peer.proto.violation import ChannelViolation, CircuitViolation
from peer.wire.cells import Cell, Created2, Destroy
from peer.wire.commands import CellCommand, DestroyReason, EndReason, RelayCommand
from peer.wire.relay import peek_header

__all__ = ["NodeConfig", "OnionNode"]

RELAY = int(CellCommand.RELAY)
RELAY_EARLY = int(CellCommand.RELAY_EARLY)
EXTENDED2 = int(RelayCommand.EXTENDED2)
TRUNCATED = int(RelayCommand.TRUNCATED)


class OnionNode:
    """Sans-I/O onion proxy + onion router."""

    def __init__(
        self,
        *,
        node_id: bytes,
        ntor_keys: Mapping[bytes, X25519KeyPair],
        randbytes: Callable[[int], bytes],
        config: NodeConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self._s = NodeState(node_id, randbytes, config or NodeConfig())
        self.channels: dict[int, Channel] = self._s.channels
        self.circuits: dict[int, Circuit] = self._s.circuits
        # (chan, circ_id) -> circuit handle
        self._route = self._s.route
        self._origin = OriginCircuits(self._s)
        self._forwarding = Forwarding(self._s, ntor_keys)
        self._streams = EdgeStreams(self._s, self._send_from_edge)
        self._next_chan = 1

    @property
    def config(self) -> NodeConfig:
        return self._s.config

    @config.setter
    def config(self, config: NodeConfig) -> None:
        self._s.config = config

    # ---- events ------------------------------------------------------------------------------
    def pop_events(self) -> list[ev.Event]:
        out, self._s.events = self._s.events, []
        return out

    def set_ntor_keys(self, keys: Mapping[bytes, X25519KeyPair]) -> None:
        """Replace the accepted ntor keys (rotation keeps the old key in the map for a while)."""
        self._forwarding.ntor_keys = dict(keys)

    # ---- channels ----------------------------------------------------------------------------
    def add_channel(
        self,
        *,
        initiator: bool,
        handshake: HandshakeConfig,
        now: float,
        framed: bool = True,
        liveness: LivenessConfig | None = None,
    ) -> int:
        chan = self._next_chan
        self._next_chan += 1
        self.channels[chan] = Channel(
            initiator=initiator, handshake=handshake, now=now, framed=framed, liveness=liveness
        )
        return chan

    def channel_receive(self, chan: int, data: bytes, now: float) -> None:
        ch = self.channels.get(chan)
        if ch is None:
            return
        self._s.now = now
        try:
            cells = ch.receive_data(data, now)
        except ChannelClosedError:
            self._channel_gone(chan, ch.close_reason)
            return
        events = self._s.events
        if ch.just_opened:
            ch.just_opened = False
            assert ch.peer is not None
            events.append(ev.ChannelOpened(chan, ch.peer))
        if ch.link_messages:
            for m in ch.link_messages:
                events.append(ev.LinkMessageReceived(chan, m))
            ch.link_messages.clear()
        for cell in cells:
            try:
                self._circuit_cell(chan, ch, cell)
            except ChannelViolation as exc:
                ch.close(str(exc))
                self._channel_gone(chan, str(exc))
                return

    def channel_lost(self, chan: int, reason: str = "link closed") -> None:
        """The transport under a channel went away."""
        ch = self.channels.get(chan)
        if ch is not None:
            ch.close(reason)
            self._channel_gone(chan, reason)

    def close_channel(self, chan: int, reason: str = "closed locally") -> None:
        self.channel_lost(chan, reason)

    def _channel_gone(self, chan: int, reason: str) -> None:
        if self.channels.pop(chan, None) is None:
            return
        for (c, _cid), handle in list(self._route.items()):
            if c == chan:
                self._destroy(
                    handle, DestroyReason.CHANNEL_CLOSED, f"channel closed: {reason}", skip_chan=chan
                )
        self._s.events.append(ev.ChannelClosed(chan, reason))

    def pop_messages(self, chan: int, max_bytes: int = 16 * 1024) -> list[bytes]:
        ch = self.channels.get(chan)
        return ch.pop_messages(max_bytes) if ch is not None else []

    def channels_with_output(self) -> list[int]:
        return [c for c, ch in self.channels.items() if ch.pending_bytes]

    def get_timer(self) -> float | None:
        times = [t for ch in self.channels.values() if (t := ch.get_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._s.now = now
        for chan, ch in list(self.channels.items()):
            t = ch.get_timer()
            if t is not None and t <= now:
                try:
                    ch.handle_timer(now)
                except ChannelClosedError:
                    self._channel_gone(chan, ch.close_reason)

    def channel_for_peer(
        self, *, node_id: bytes | None = None, ed25519_id: bytes | None = None, rsa_id: bytes | None = None
    ) -> int | None:
        """An open channel whose proven identity matches every identity given."""
        return self._s.channel_for_peer(node_id=node_id, ed25519_id=ed25519_id, rsa_id=rsa_id)

    def send_link_message(self, chan: int, command: int, payload: bytes) -> None:
        """Send a private link-level cell (DB_INTRODUCE, ...) on a channel."""
        ch = self.channels.get(chan)
        if ch is not None and ch.state.value == "open":
            ch.send_cell(0, command, payload, self._s.now)

    # ---- OP: circuits and streams we originate -------------------------------------------------
    def build_circuit(self, chan: int, path: list[HopSpec]) -> int:
        """Start a circuit through ``path`` (first hop = the peer on ``chan``); CircuitBuilt follows."""
        return self._origin.build(chan, path)

    def destroy_circuit(self, handle: int) -> None:
        """Tear a circuit down from this side (an OP always sends reason NONE)."""
        if handle in self.circuits:
            self._destroy(handle, DestroyReason.NONE, "closed locally")

    def open_stream(self, handle: int, host: str, port: int, *, hop: int = -1) -> int:
        """Send BEGIN to ``hop`` (default: the last) of an open origin circuit; StreamConnected follows."""
        return self._origin.open_stream(handle, host, port, hop)

    def open_db_stream(self, handle: int, command: int, body: bytes, *, hop: int = -1) -> int:
        """OP: open an ORDB stream on an open circuit with its first message (DB_INFO, DB_QUERY or
        DB_CONNECTED); DB_DATA then flows on it under the stream and circuit windows."""
        return self._origin.open_db_stream(handle, command, body, hop)

    def send_relay(self, handle: int, command: int, stream_id: int, data: bytes, *, hop: int = -1) -> None:
        """Send a relay message from an edge (private DB_* commands, or DROP)."""
        circ = self.circuits.get(handle)
        if circ is None:
            raise UsageError("no such circuit")
        if isinstance(circ, OriginCircuit):
            self._origin.send(circ, hop % len(circ.hops), command, stream_id, data)
        else:
            self._forwarding.send(circ, command, stream_id, data)

    def _send_from_edge(self, circ: Circuit, hop: int, command: int, sid: int, data: bytes) -> None:
        if isinstance(circ, OriginCircuit):
            self._origin.send(circ, hop, command, sid, data)
        else:
            self._forwarding.send(circ, command, sid, data)

    # ---- streams (both ends) --------------------------------------------------------------------
    def stream_send(self, handle: int, stream_id: int, data: bytes) -> bool:
        """Queue data on a stream; returns False when the writer should wait for StreamWritable."""
        return self._streams.send(handle, stream_id, data)

    def stream_close(self, handle: int, stream_id: int, reason: int = EndReason.DONE) -> None:
        """Send END after the queued data (tor: an OP sends reason MISC for its own streams)."""
        self._streams.close(handle, stream_id, reason)

    def stream_consumed(self, handle: int, stream_id: int, cells: int) -> None:
        """The application consumed ``cells`` DATA cells of a stream (when auto_consume is off)."""
        self._streams.consumed(handle, stream_id, cells)

    def db_end(self, handle: int, stream_id: int, body: bytes) -> None:
        """End a DB stream with DB_END(``body``) once its queued DB_DATA has gone."""
        self._streams.db_end(handle, stream_id, body)

    def stream_buffered(self, handle: int, stream_id: int) -> int:
        """Bytes queued on a stream and not yet packaged into cells (0 if the stream is gone)."""
        return self._streams.buffered(handle, stream_id)

    def exit_connected(self, handle: int, stream_id: int, address: bytes | None = None) -> None:
        self._streams.exit_connected(handle, stream_id, address)

    def exit_failed(self, handle: int, stream_id: int, reason: int) -> None:
        self._streams.exit_failed(handle, stream_id, reason)

    def window_state(self, handle: int) -> list[tuple[int, int]]:
        """(package_window, deliver_window) of each edge, for tests and status."""
        circ = self.circuits.get(handle)
        if circ is None:
            return []
        edges = circ.hops if isinstance(circ, OriginCircuit) else [circ.edge]
        return [(e.package_window, e.deliver_window) for e in edges]

    # ---- cells from channels ----------------------------------------------------------------------
    def _circuit_cell(self, chan: int, ch: Channel, cell: Cell) -> None:
        cmd = cell.command
        cid = cell.circ_id
        handle = self._route.get((chan, cid))
        if cmd in (RELAY, RELAY_EARLY):
            if handle is None:
                return  # a cell for a circuit we no longer know: drop (it may be in flight)
            circ = self.circuits[handle]
            try:
                if isinstance(circ, OriginCircuit):
                    hop, p = self._origin.receive(circ, cmd, cell.payload)
                    self._deliver(circ, hop, p)
                elif chan == circ.prev_chan and cid == circ.prev_id:
                    p2 = self._forwarding.forward(circ, cmd, cell.payload)
                    if p2 is not None:
                        self._deliver(circ, -1, p2)
                else:
                    self._forwarding.backward(circ, cmd, cell.payload)
            except CircuitViolation as exc:
                self._destroy(handle, exc.reason, str(exc))
            except (WireError, HandshakeError) as exc:
                self._destroy(handle, DestroyReason.PROTOCOL, f"{type(exc).__name__}: {exc}")
            return
        if cid == 0:
            return  # circuit cells on circuit id 0 are ignored (tor-spec §5.1)
        if cmd == CellCommand.CREATE2:
            self._forwarding.create2(chan, ch, cell, handle)
        elif cmd in (CellCommand.CREATE_FAST, CellCommand.CREATE):
            # decoded, never used: CREATE_FAST loses forward secrecy, TAP is gone (DESIGN §5)
            if handle is not None:
                raise ChannelViolation("CREATE on a circuit id already in use")
            ch.send_cell(
                cid, CellCommand.DESTROY, Destroy(DestroyReason.PROTOCOL).encode_payload(), self._s.now
            )
        elif cmd == CellCommand.CREATED2:
            self._on_created2(chan, cell, handle)
        elif cmd == CellCommand.DESTROY:
            if handle is not None:
                reason = cell.payload[0] if cell.payload else 0
                self._destroy(
                    handle, DestroyReason.DESTROYED, "destroyed by peer", from_chan=chan, remote_reason=reason
                )
        elif handle is not None:  # CREATED / CREATED_FAST on our circuits: unexpected
            self._destroy(handle, DestroyReason.PROTOCOL, f"unexpected cell {cmd}")

    def _on_created2(self, chan: int, cell: Cell, handle: int | None) -> None:
        if handle is None:
            return
        circ = self.circuits[handle]
        try:
            msg = Created2.decode_payload(cell.payload)
            if isinstance(circ, OriginCircuit):
                self._origin.created(circ, msg.hdata)
            else:
                self._forwarding.created(circ, chan, msg.hdata)
        except CircuitViolation as exc:
            self._destroy(handle, exc.reason, str(exc))
        except (WireError, HandshakeError) as exc:
            self._destroy(handle, DestroyReason.PROTOCOL, f"{type(exc).__name__}: {exc}")

    def _deliver(self, circ: Circuit, hop: int, p: bytes) -> None:
        """A relay cell recognised at one of our edges (``hop``: its index at an OP, -1 at an OR)."""
        cmd, _rec, sid, _dig, length = peek_header(p)
        body = p[11 : 11 + length]
        s = self._s
        if s.config.record:
            s.events.append(
                ev.Observed.of("payload", circ=circ.handle, hop=hop, cmd=cmd, stream=sid, data=body)
            )
        if isinstance(circ, OriginCircuit):
            if cmd == EXTENDED2:
                self._origin.extended(circ, hop, sid, body)
                return
            edge = circ.hops[hop]
        else:
            edge = circ.edge
        if cmd == TRUNCATED:
            raise CircuitViolation("circuit truncated", DestroyReason.DESTROYED)
        self._streams.cell(circ, edge, hop, cmd, sid, body)

    # ---- teardown -------------------------------------------------------------------------------
    def _destroy(
        self,
        handle: int,
        reason: int,
        message: str,
        *,
        from_chan: int | None = None,
        skip_chan: int | None = None,
        remote_reason: int | None = None,
    ) -> None:
        circ = self.circuits.pop(handle, None)
        if circ is None:
            return
        circ.state = CircuitState.CLOSED
        legs: list[tuple[int, int]] = []
        if isinstance(circ, OriginCircuit):
            legs.append((circ.chan, circ.circ_id))
            edges = circ.hops
            reason_out = int(DestroyReason.NONE)
        else:
            legs.append((circ.prev_chan, circ.prev_id))
            if circ.next_chan is not None and circ.next_id is not None:
                legs.append((circ.next_chan, circ.next_id))
            edges = [circ.edge]
            reason_out = int(reason)
        events = self._s.events
        for chan, cid in legs:
            self._route.pop((chan, cid), None)
            ch = self.channels.get(chan)
            if ch is None:
                continue
            ch.circ_ids.discard(cid)
            if chan != from_chan and chan != skip_chan:
                ch.send_cell(cid, CellCommand.DESTROY, Destroy(reason_out).encode_payload(), self._s.now)
        for edge in edges:
            for sid, st in edge.streams.items():
                if st.state is not StreamState.HALF_CLOSED:
                    events.append(ev.StreamEnded(handle, sid, int(EndReason.DESTROY), False))
            edge.streams.clear()
        shown = remote_reason if remote_reason is not None else reason
        events.append(ev.CircuitClosed(handle, int(shown), message))
