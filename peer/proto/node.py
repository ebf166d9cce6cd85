"""The onion node core: channels, origin and relay circuits, streams (sans-I/O).

One object per peer plays every role: OP (circuits it builds), OR (circuits it relays)
and exit/endpoint (streams that end here).  The driver feeds it link bytes and the time
and sends what :meth:`OnionNode.pop_messages` returns; results come out as events.

Scoping of bad input (what is closed; docs/circuits.md has the full table):
  - framing, handshake, a second VERSIONS, a CREATE2 on a circuit id in use: the channel;
  - an unrecognised cell at the last hop or the OP (bad digest), DATA on stream 0, more than
    8 RELAY_EARLY, EXTEND2 outside RELAY_EARLY, a forged SENDME, a window overrun, inbound
    RELAY_EARLY at the OP, a cell for an unknown stream: the circuit;
  - a recognised cell with an unknown relay command: the cell (dropped, still counted).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from peer.crypto.keys import X25519KeyPair
from peer.crypto.ntor import ntor_client_finish, ntor_client_start, ntor_server
from peer.crypto.relaycrypto import RelayCrypto
from peer.errors import HandshakeError, UsageError, WireError
from peer.proto import events as ev
from peer.proto.channel import Channel, ChannelClosedError, HandshakeConfig, LivenessConfig
from peer.proto.circuit import (
    CIRCWINDOW_INCREMENT,
    CIRCWINDOW_START,
    MAX_HOPS,
    MAX_RELAY_EARLY,
    SEND_HIGH_WATER,
    SEND_LOW_WATER,
    STREAMWINDOW_INCREMENT,
    STREAMWINDOW_START,
    CircuitState,
    Edge,
    HopSpec,
    OriginCircuit,
    RelayCircuit,
    Stream,
    StreamState,
)
from peer.proto.exitpolicy import ExitPolicy
from peer.wire.cells import Cell, Create2, Created2, Destroy
from peer.wire.commands import CellCommand, DestroyReason, EndReason, RelayCommand
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecLegacyId, LinkSpecPeerNodeId
from peer.wire.relay import (
    RELAY_DATA_MAX,
    Begin,
    Connected,
    End,
    Extend2,
    Extended2,
    Sendme,
    peek_header,
    relay_payload,
)

HTYPE_NTOR = 2
RELAY = int(CellCommand.RELAY)
RELAY_EARLY = int(CellCommand.RELAY_EARLY)
DATA = int(RelayCommand.DATA)
#: Relay commands that count against the SENDME windows like DATA (DESIGN §6: DB_DATA does).
DATA_LIKE = frozenset({int(RelayCommand.DATA), int(RelayCommand.DB_DATA)})
PRIVATE_BASE = 200
#: DB messages whose first appearance on a stream id opens a DB stream at an endpoint.
DB_OPENING = frozenset(
    {int(RelayCommand.DB_INFO), int(RelayCommand.DB_QUERY), int(RelayCommand.DB_CONNECTED)}
)


class CircuitViolation(Exception):
    """Internal: the remote broke a circuit rule; the circuit is torn down with ``reason``."""

    def __init__(self, message: str, reason: int = DestroyReason.PROTOCOL) -> None:
        super().__init__(message)
        self.reason = int(reason)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    exit_policy: ExitPolicy = field(default_factory=ExitPolicy.reject_all)
    #: When False the driver calls :meth:`OnionNode.stream_consumed` as the app reads, and
    #: stream SENDMEs wait for it (end-to-end back-pressure).
    auto_consume: bool = True


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
        self._ntor_keys = dict(ntor_keys)
        self._rand = randbytes
        self.config = config or NodeConfig()
        self.channels: dict[int, Channel] = {}
        self.circuits: dict[int, OriginCircuit | RelayCircuit] = {}
        # (chan, circ_id) -> circuit handle
        self._route: dict[tuple[int, int], int] = {}
        self._events: list[ev.Event] = []
        self._next_chan = 1
        self._next_circ = 1
        self._now = 0.0
        #: test-only anonymity recorder (DESIGN §11); None unless a test switches it on
        self.recorder: Callable[[dict[str, object]], None] | None = None

    # ---- events ------------------------------------------------------------------------------
    def pop_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def set_ntor_keys(self, keys: Mapping[bytes, X25519KeyPair]) -> None:
        """Replace the accepted ntor keys (rotation keeps the old key in the map for a while)."""
        self._ntor_keys = dict(keys)

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
        self._now = now
        try:
            cells = ch.receive_data(data, now)
        except ChannelClosedError:
            self._channel_gone(chan, ch.close_reason)
            return
        if ch.just_opened:
            ch.just_opened = False
            assert ch.peer is not None
            self._events.append(ev.ChannelOpened(chan, ch.peer))
        if ch.link_messages:
            for m in ch.link_messages:
                self._events.append(ev.LinkMessageReceived(chan, m))
            ch.link_messages.clear()
        for cell in cells:
            try:
                self._circuit_cell(chan, ch, cell)
            except _ChannelViolation as exc:
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
        self._events.append(ev.ChannelClosed(chan, reason))

    def pop_messages(self, chan: int, max_bytes: int = 16 * 1024) -> list[bytes]:
        ch = self.channels.get(chan)
        return ch.pop_messages(max_bytes) if ch is not None else []

    def channels_with_output(self) -> list[int]:
        return [c for c, ch in self.channels.items() if ch.pending_bytes]

    def get_timer(self) -> float | None:
        times = [t for ch in self.channels.values() if (t := ch.get_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
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
        if node_id is None and ed25519_id is None and rsa_id is None:
            return None
        for chan, ch in self.channels.items():
            p = ch.peer
            if p is None or ch.state.value != "open":
                continue
            if node_id is not None and p.node_id != node_id:
                continue
            if ed25519_id is not None and p.ed25519_id != ed25519_id:
                continue
            if rsa_id is not None and p.rsa_id != rsa_id:
                continue
            return chan
        return None

    # ---- OP: building circuits ------------------------------------------------------------------
    def build_circuit(self, chan: int, path: list[HopSpec]) -> int:
        """Start a circuit through ``path`` (first hop = the peer on ``chan``); CircuitBuilt follows."""
        if not 1 <= len(path) <= MAX_HOPS:
            raise UsageError(f"a circuit has 1 to {MAX_HOPS} hops")
        ch = self.channels.get(chan)
        if ch is None or ch.state.value != "open":
            raise UsageError("build_circuit needs an open channel")
        cid = ch.allocate_circ_id(self._rand)
        handle = self._new_handle()
        circ = OriginCircuit(handle=handle, chan=chan, circ_id=cid, path=list(path))
        self.circuits[handle] = circ
        self._route[(chan, cid)] = handle
        ch.circ_ids.add(cid)
        state, onionskin = ntor_client_start(path[0].node_id, path[0].ntor_key, self._rand)
        circ.pending = state
        ch.send_cell(cid, CellCommand.CREATE2, Create2(HTYPE_NTOR, onionskin).encode_payload(), self._now)
        if self.recorder is not None:
            self.recorder(
                {
                    "kind": "circuit",
                    "circ": handle,
                    "prev": "self",
                    "next": path[0].node_id,
                    "next_circ_id": cid,
                }
            )
        return handle

    def _extend_next(self, circ: OriginCircuit) -> None:
        hop = circ.path[len(circ.hops)]
        state, onionskin = ntor_client_start(hop.node_id, hop.ntor_key, self._rand)
        circ.pending = state
        body = Extend2(hop.link_specs, HTYPE_NTOR, onionskin).encode()
        if circ.early_sent >= MAX_RELAY_EARLY:
            raise UsageError("no RELAY_EARLY left for EXTEND2")
        self._op_send(circ, len(circ.hops) - 1, RelayCommand.EXTEND2, 0, body)

    def destroy_circuit(self, handle: int) -> None:
        """Tear a circuit down from this side (an OP always sends reason NONE)."""
        if handle in self.circuits:
            self._destroy(handle, DestroyReason.NONE, "closed locally")

    def _new_handle(self) -> int:
        h = self._next_circ
        self._next_circ += 1
        return h

    def _op_send(self, circ: OriginCircuit, hop: int, command: int, stream_id: int, data: bytes) -> None:
        plain = relay_payload(command, stream_id, data, self._rand)
        p = circ.hops[hop].crypto.seal_forward(plain)
        for i in range(hop, -1, -1):
            p = circ.hops[i].crypto.encrypt_forward(p)
        if circ.early_sent < MAX_RELAY_EARLY:
            circ.early_sent += 1
            cmd = RELAY_EARLY
        else:
            cmd = RELAY
        ch = self.channels.get(circ.chan)
        if ch is not None:
            ch.send_relay_cells(circ.circ_id, cmd, [p], self._now)

    def _or_send(self, circ: RelayCircuit, command: int, stream_id: int, data: bytes) -> None:
        crypto = circ.edge.crypto
        p = crypto.encrypt_backward(crypto.seal_backward(relay_payload(command, stream_id, data, self._rand)))
        ch = self.channels.get(circ.prev_chan)
        if ch is not None:
            ch.send_relay_cells(circ.prev_id, RELAY, [p], self._now)

    def _send_from_edge(
        self, circ: OriginCircuit | RelayCircuit, hop: int, command: int, sid: int, data: bytes
    ) -> None:
        if isinstance(circ, OriginCircuit):
            self._op_send(circ, hop, command, sid, data)
        else:
            self._or_send(circ, command, sid, data)

    # ---- streams (both ends) ----------------------------------------------------------------------
    def open_stream(self, handle: int, host: str, port: int, *, hop: int = -1) -> int:
        """Send BEGIN to ``hop`` (default: the last) of an open origin circuit; StreamConnected follows."""
        circ = self._origin(handle)
        idx = hop % len(circ.hops)
        edge = circ.hops[idx]
        sid = self._alloc_stream_id(circ, edge)
        edge.streams[sid] = Stream(sid, StreamState.CONNECTING)
        self._op_send(circ, idx, RelayCommand.BEGIN, sid, Begin(host, port, 0).encode())
        return sid

    def _alloc_stream_id(self, circ: OriginCircuit, edge: Edge) -> int:
        for _ in range(65535):
            sid = circ.next_stream_id
            circ.next_stream_id = sid % 65535 + 1
            if all(sid not in e.streams for e in circ.hops):
                return sid
        raise UsageError("no free stream id on this circuit")

    def _edge_and_hop(self, handle: int, stream_id: int) -> tuple[OriginCircuit | RelayCircuit, Edge, int]:
        circ = self.circuits.get(handle)
        if circ is None:
            raise UsageError("no such circuit")
        if isinstance(circ, OriginCircuit):
            for i, e in enumerate(circ.hops):
                if stream_id in e.streams:
                    return circ, e, i
            raise UsageError("no such stream")
        if stream_id not in circ.edge.streams:
            raise UsageError("no such stream")
        return circ, circ.edge, -1

    def stream_send(self, handle: int, stream_id: int, data: bytes) -> bool:
        """Queue data on a stream; returns False when the writer should wait for StreamWritable."""
        circ, edge, hop = self._edge_and_hop(handle, stream_id)
        st = edge.streams[stream_id]
        if st.state not in (StreamState.OPEN, StreamState.CONNECTING):
            raise UsageError("stream is not open")
        st.sendbuf += data
        self._pump(circ, edge, hop, st)
        if len(st.sendbuf) >= SEND_HIGH_WATER:
            st.blocked_writer = True
            return False
        return True

    def stream_close(self, handle: int, stream_id: int, reason: int = EndReason.DONE) -> None:
        """Send END after the queued data (tor: an OP sends reason MISC for its own streams)."""
        try:
            circ, edge, hop = self._edge_and_hop(handle, stream_id)
        except UsageError:
            return
        st = edge.streams[stream_id]
        if st.state in (StreamState.HALF_CLOSED, StreamState.CLOSED):
            return
        st.end_after_flush = True
        st.end_reason = int(reason)
        self._pump(circ, edge, hop, st)

    def stream_consumed(self, handle: int, stream_id: int, cells: int) -> None:
        """The application consumed ``cells`` DATA cells of a stream (when auto_consume is off)."""
        try:
            circ, edge, hop = self._edge_and_hop(handle, stream_id)
        except UsageError:
            return
        st = edge.streams[stream_id]
        st.unacked_consumed += cells
        self._maybe_stream_sendme(circ, hop, st, force=True)

    def open_db_stream(self, handle: int, command: int, body: bytes, *, hop: int = -1) -> int:
        """OP: open an ORDB stream on an open circuit with its first message (DB_INFO, DB_QUERY or
        DB_CONNECTED); DB_DATA then flows on it under the stream and circuit windows."""
        if command not in DB_OPENING:
            raise UsageError("a DB stream opens with DB_INFO, DB_QUERY or DB_CONNECTED")
        circ = self._origin(handle)
        idx = hop % len(circ.hops)
        edge = circ.hops[idx]
        sid = self._alloc_stream_id(circ, edge)
        edge.streams[sid] = Stream(
            sid, StreamState.OPEN, data_cmd=RelayCommand.DB_DATA, end_cmd=RelayCommand.DB_END
        )
        self._op_send(circ, idx, command, sid, body)
        return sid

    def db_end(self, handle: int, stream_id: int, body: bytes) -> None:
        """End a DB stream with DB_END(``body``) once its queued DB_DATA has gone."""
        try:
            circ, edge, hop = self._edge_and_hop(handle, stream_id)
        except UsageError:
            return
        st = edge.streams[stream_id]
        if st.state in (StreamState.HALF_CLOSED, StreamState.CLOSED):
            return
        st.end_after_flush = True
        st.end_cmd = RelayCommand.DB_END
        st.end_body = body
        self._pump(circ, edge, hop, st)

    def stream_buffered(self, handle: int, stream_id: int) -> int:
        """Bytes queued on a stream and not yet packaged into cells (0 if the stream is gone)."""
        try:
            _circ, edge, _hop = self._edge_and_hop(handle, stream_id)
        except UsageError:
            return 0
        return len(edge.streams[stream_id].sendbuf)

    def exit_connected(self, handle: int, stream_id: int, address: bytes | None = None) -> None:
        circ, edge, hop = self._edge_and_hop(handle, stream_id)
        st = edge.streams[stream_id]
        if st.state is not StreamState.CONNECTING:
            return
        st.state = StreamState.OPEN
        self._send_from_edge(
            circ,
            hop,
            RelayCommand.CONNECTED,
            stream_id,
            Connected(address, 300 if address else None).encode(),
        )
        self._pump(circ, edge, hop, st)

    def exit_failed(self, handle: int, stream_id: int, reason: int) -> None:
        try:
            circ, edge, hop = self._edge_and_hop(handle, stream_id)
        except UsageError:
            return
        edge.streams.pop(stream_id, None)
        self._send_from_edge(circ, hop, RelayCommand.END, stream_id, End(reason).encode())

    def _pump(self, circ: OriginCircuit | RelayCircuit, edge: Edge, hop: int, st: Stream) -> None:
        if st.state is not StreamState.OPEN:
            return
        buf = st.sendbuf
        while buf and edge.package_window > 0 and st.package_window > 0:
            chunk = bytes(buf[:RELAY_DATA_MAX])
            del buf[:RELAY_DATA_MAX]
            self._send_from_edge(circ, hop, st.data_cmd, st.stream_id, chunk)
            edge.package_window -= 1
            st.package_window -= 1
            edge.data_sent += 1
            if edge.data_sent % CIRCWINDOW_INCREMENT == 0:
                crypto = edge.crypto
                edge.sendme_expected.append(
                    crypto.forward_digest() if isinstance(circ, OriginCircuit) else crypto.backward_digest()
                )
        if not buf and st.end_after_flush:
            st.state = StreamState.HALF_CLOSED
            st.end_after_flush = False
            if st.end_cmd == RelayCommand.DB_END:
                self._send_from_edge(circ, hop, RelayCommand.DB_END, st.stream_id, st.end_body)
            else:
                reason = st.end_reason
                if isinstance(circ, OriginCircuit):
                    reason = EndReason.MISC  # tor-spec §6.3: only MISC for streams we originated
                self._send_from_edge(circ, hop, RelayCommand.END, st.stream_id, End(int(reason)).encode())
        if st.blocked_writer and len(buf) <= SEND_LOW_WATER:
            st.blocked_writer = False
            self._events.append(ev.StreamWritable(self._handle_of(circ), st.stream_id))

    @staticmethod
    def _handle_of(circ: OriginCircuit | RelayCircuit) -> int:
        return circ.handle

    def _pump_all(self, circ: OriginCircuit | RelayCircuit, edge: Edge, hop: int) -> None:
        for st in list(edge.streams.values()):
            if edge.package_window <= 0:
                break
            self._pump(circ, edge, hop, st)

    def _maybe_stream_sendme(
        self, circ: OriginCircuit | RelayCircuit, hop: int, st: Stream, force: bool = False
    ) -> None:
        if st.state is not StreamState.OPEN and st.state is not StreamState.CONNECTING:
            return
        while (
            st.deliver_window <= STREAMWINDOW_START - STREAMWINDOW_INCREMENT
            and st.unacked_consumed >= STREAMWINDOW_INCREMENT
        ):
            st.deliver_window += STREAMWINDOW_INCREMENT
            st.unacked_consumed -= STREAMWINDOW_INCREMENT
            self._send_from_edge(circ, hop, RelayCommand.SENDME, st.stream_id, b"")

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
                    self._op_relay(circ, cmd, cell.payload)
                elif chan == circ.prev_chan and cid == circ.prev_id:
                    self._or_forward(circ, cmd, cell.payload)
                else:
                    self._or_backward(circ, cmd, cell.payload)
            except CircuitViolation as exc:
                self._destroy(handle, exc.reason, str(exc))
            except (WireError, HandshakeError) as exc:
                self._destroy(handle, DestroyReason.PROTOCOL, f"{type(exc).__name__}: {exc}")
            return
        if cid == 0:
            return  # circuit cells on circuit id 0 are ignored (tor-spec §5.1)
        if cmd == CellCommand.CREATE2:
            self._on_create2(chan, ch, cell, handle)
        elif cmd in (CellCommand.CREATE_FAST, CellCommand.CREATE):
            # decoded, never used: CREATE_FAST loses forward secrecy, TAP is gone (DESIGN §5)
            if handle is not None:
                raise _ChannelViolation("CREATE on a circuit id already in use")
            ch.send_cell(
                cid, CellCommand.DESTROY, Destroy(DestroyReason.PROTOCOL).encode_payload(), self._now
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

    def _on_create2(self, chan: int, ch: Channel, cell: Cell, handle: int | None) -> None:
        cid = cell.circ_id
        if handle is not None or cid in ch.circ_ids:
            raise _ChannelViolation("CREATE2 on a circuit id already in use")
        if ch.is_own_circ_id(cid):
            raise _ChannelViolation("CREATE2 with a circuit id from our half of the space")
        if ch.peer is not None and ch.peer.is_tor_relay:
            raise _ChannelViolation("CREATE2 from a tor relay: we are not a relay in its network")
        try:
            msg = Create2.decode_payload(cell.payload)
            if msg.htype != HTYPE_NTOR:
                raise HandshakeError(f"unsupported handshake type {msg.htype}")
            reply, keys = ntor_server(msg.hdata, self.node_id, self._ntor_keys, self._rand)
        except (WireError, HandshakeError):
            ch.send_cell(
                cid, CellCommand.DESTROY, Destroy(DestroyReason.PROTOCOL).encode_payload(), self._now
            )
            return
        h = self._new_handle()
        self.circuits[h] = RelayCircuit(handle=h, prev_chan=chan, prev_id=cid, edge=Edge(RelayCrypto(keys)))
        self._route[(chan, cid)] = h
        ch.circ_ids.add(cid)
        ch.send_cell(cid, CellCommand.CREATED2, Created2(reply).encode_payload(), self._now)
        if self.recorder is not None:
            self.recorder(
                {
                    "kind": "circuit",
                    "circ": h,
                    "prev": ch.peer.node_id if ch.peer else b"",
                    "next": None,
                    "prev_circ_id": cid,
                }
            )

    def _on_created2(self, chan: int, cell: Cell, handle: int | None) -> None:
        if handle is None:
            return
        circ = self.circuits[handle]
        try:
            msg = Created2.decode_payload(cell.payload)
            if isinstance(circ, OriginCircuit):
                if circ.hops or circ.pending is None:
                    raise CircuitViolation("unexpected CREATED2")
                self._hop_done(circ, msg.hdata)
            else:
                if not circ.extending or chan != circ.next_chan:
                    raise CircuitViolation("unexpected CREATED2")
                circ.extending = False
                self._or_send(circ, RelayCommand.EXTENDED2, 0, Extended2(msg.hdata).encode())
        except CircuitViolation as exc:
            self._destroy(handle, exc.reason, str(exc))
        except (WireError, HandshakeError) as exc:
            self._destroy(handle, DestroyReason.PROTOCOL, f"{type(exc).__name__}: {exc}")

    def _hop_done(self, circ: OriginCircuit, reply: bytes) -> None:
        assert circ.pending is not None
        keys = ntor_client_finish(circ.pending, reply)
        circ.pending = None
        circ.hops.append(Edge(RelayCrypto(keys)))
        if len(circ.hops) == len(circ.path):
            circ.state = CircuitState.OPEN
            self._events.append(ev.CircuitBuilt(circ.handle, len(circ.hops)))
        else:
            self._extend_next(circ)

    # ---- OP: relay cells coming back --------------------------------------------------------------
    def _op_relay(self, circ: OriginCircuit, cmd: int, payload: bytes) -> None:
        if cmd == RELAY_EARLY:
            raise CircuitViolation("inbound RELAY_EARLY")
        p = payload
        for i, hop in enumerate(circ.hops):
            p = hop.crypto.decrypt_backward(p)
            if p[1] == 0 and p[2] == 0 and hop.crypto.recognize_backward(p):
                self._edge_cell(circ, hop, i, p)
                return
        raise CircuitViolation("a relay cell no hop recognises (bad digest)")

    # ---- OR: relay cells in both directions -------------------------------------------------------
    def _or_forward(self, circ: RelayCircuit, cmd: int, payload: bytes) -> None:
        early = cmd == RELAY_EARLY
        if early:
            circ.early_received += 1
            if circ.early_received > MAX_RELAY_EARLY:
                raise CircuitViolation(f"more than {MAX_RELAY_EARLY} RELAY_EARLY cells")
        crypto = circ.edge.crypto
        p = crypto.decrypt_forward(payload)
        if p[1] == 0 and p[2] == 0 and crypto.recognize_forward(p):
            if p[0] == RelayCommand.EXTEND2:
                self._on_extend2(circ, p, early)
            else:
                self._edge_cell(circ, circ.edge, -1, p)
            return
        if circ.next_chan is None or circ.next_id is None or circ.extending:
            raise CircuitViolation("a relay cell not recognised at the last hop (bad digest)")
        nch = self.channels.get(circ.next_chan)
        if nch is not None:
            nch.send_relay_cells(circ.next_id, cmd, [p], self._now)

    def _or_backward(self, circ: RelayCircuit, cmd: int, payload: bytes) -> None:
        if cmd == RELAY_EARLY:
            raise CircuitViolation("RELAY_EARLY travelling toward the OP")
        p = circ.edge.crypto.encrypt_backward(payload)
        pch = self.channels.get(circ.prev_chan)
        if pch is not None:
            pch.send_relay_cells(circ.prev_id, RELAY, [p], self._now)

    def _on_extend2(self, circ: RelayCircuit, p: bytes, early: bool) -> None:
        if not early:
            raise CircuitViolation("EXTEND2 outside RELAY_EARLY")
        if circ.next_chan is not None or circ.extending:
            raise CircuitViolation("EXTEND2 on a circuit that already extends")
        _cmd, _rec, sid, _dig, length = peek_header(p)
        if sid != 0:
            raise CircuitViolation("EXTEND2 on a stream")
        msg = Extend2.decode(p[11 : 11 + length])
        node_id = ed_id = rsa_id = None
        for spec in msg.link_specs:
            if isinstance(spec, LinkSpecPeerNodeId):
                node_id = spec.node_id
            elif isinstance(spec, LinkSpecEd25519):
                ed_id = spec.key
            elif isinstance(spec, LinkSpecLegacyId):
                rsa_id = spec.rsa_id
        if node_id == self.node_id:
            raise CircuitViolation("EXTEND2 to ourselves")
        target = self.channel_for_peer(node_id=node_id, ed25519_id=ed_id, rsa_id=rsa_id)
        if target is None or target == circ.prev_chan:
            # Links are never opened inside an EXTEND (DESIGN §4): no link, no extension.
            raise CircuitViolation("EXTEND2 to a peer we have no link to", DestroyReason.CONNECTFAILED)
        nch = self.channels[target]
        if self.recorder is not None:
            self.recorder(
                {"kind": "extend", "circ": circ.handle, "next": nch.peer.node_id if nch.peer else b""}
            )
        nid = nch.allocate_circ_id(self._rand)
        circ.next_chan, circ.next_id, circ.extending = target, nid, True
        self._route[(target, nid)] = circ.handle
        nch.circ_ids.add(nid)
        nch.send_cell(nid, CellCommand.CREATE2, Create2(msg.htype, msg.hdata).encode_payload(), self._now)

    # ---- cells that end at an edge (OP hop or OR endpoint) ----------------------------------------
    def _edge_cell(self, circ: OriginCircuit | RelayCircuit, edge: Edge, hop: int, p: bytes) -> None:
        cmd, _rec, sid, _dig, length = peek_header(p)
        body = p[11 : 11 + length]
        origin = isinstance(circ, OriginCircuit)
        if self.recorder is not None:
            self.recorder(
                {"kind": "payload", "circ": circ.handle, "hop": hop, "cmd": cmd, "stream": sid, "data": body}
            )
        if cmd in DATA_LIKE:
            if sid == 0:
                raise CircuitViolation("DATA on stream 0", DestroyReason.PROTOCOL)
            edge.deliver_window -= 1
            edge.data_received += 1
            if edge.deliver_window < 0:
                raise CircuitViolation("circuit deliver window overrun")
            if edge.deliver_window <= CIRCWINDOW_START - CIRCWINDOW_INCREMENT:
                edge.deliver_window += CIRCWINDOW_INCREMENT
                digest = edge.crypto.backward_digest() if origin else edge.crypto.forward_digest()
                self._send_from_edge(circ, hop, RelayCommand.SENDME, 0, Sendme(1, digest).encode())
            st = edge.streams.get(sid)
            if st is None:
                raise CircuitViolation("DATA for an unknown stream")
            st.deliver_window -= 1
            if st.deliver_window < 0:
                raise CircuitViolation("stream deliver window overrun")
            if st.state is StreamState.HALF_CLOSED:
                return  # in flight when we ended it: counted, dropped
            if cmd == DATA:
                self._events.append(ev.StreamDataReceived(circ.handle, sid, body))
            else:
                self._events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            if self.config.auto_consume:
                st.unacked_consumed += 1
            self._maybe_stream_sendme(circ, hop, st)
            return
        if cmd == RelayCommand.SENDME:
            if sid == 0:
                msg = Sendme.decode(body)
                if msg.version != 1 or not edge.sendme_expected:
                    raise CircuitViolation("unexpected or unauthenticated circuit SENDME")
                want = edge.sendme_expected.popleft()
                if not _ct_eq(want, msg.digest):
                    raise CircuitViolation("forged SENDME digest")
                edge.package_window += CIRCWINDOW_INCREMENT
                if edge.package_window > CIRCWINDOW_START:
                    raise CircuitViolation("circuit package window overrun")
                self._pump_all(circ, edge, hop)
                return
            st = edge.streams.get(sid)
            if st is None:
                raise CircuitViolation("SENDME for an unknown stream")
            if st.state is StreamState.HALF_CLOSED:
                return
            st.package_window += STREAMWINDOW_INCREMENT
            if st.package_window > STREAMWINDOW_START:
                raise CircuitViolation("stream package window overrun")
            self._pump(circ, edge, hop, st)
            return
        if cmd == RelayCommand.END:
            st = edge.streams.pop(sid, None) if sid else None
            if st is None:
                if sid == 0:
                    raise CircuitViolation("END on stream 0")
                raise CircuitViolation("END for an unknown stream")
            if st.state is not StreamState.HALF_CLOSED:
                reason = body[0] if body else int(EndReason.MISC)
                self._events.append(ev.StreamEnded(circ.handle, sid, reason, True))
            return
        if cmd == RelayCommand.CONNECTED:
            st = edge.streams.get(sid)
            if st is None or not origin:
                raise CircuitViolation("CONNECTED for an unknown stream")
            if st.state is StreamState.CONNECTING:
                Connected.decode(body)
                st.state = StreamState.OPEN
                self._events.append(ev.StreamConnected(circ.handle, sid))
                self._pump(circ, edge, hop, st)
            return
        if cmd == RelayCommand.BEGIN and not origin:
            assert isinstance(circ, RelayCircuit)
            self._on_begin(circ, sid, body)
            return
        if cmd == RelayCommand.EXTENDED2 and origin:
            assert isinstance(circ, OriginCircuit)
            if circ.pending is None or hop != len(circ.hops) - 1 or sid != 0:
                raise CircuitViolation("unexpected EXTENDED2")
            self._hop_done(circ, Extended2.decode(body).hdata)
            return
        if cmd == RelayCommand.TRUNCATED:
            raise CircuitViolation("circuit truncated", DestroyReason.DESTROYED)
        if cmd in DB_OPENING:
            # DB_INFO / DB_QUERY / DB_CONNECTED: the first one on a new stream id opens it at the
            # endpoint (only an OP opens streams, as in tor: DESIGN §6)
            st = edge.streams.get(sid) if sid else None
            if sid and st is None:
                if origin:
                    raise CircuitViolation("a DB message on a stream this OP did not open")
                edge.streams[sid] = Stream(
                    sid, StreamState.OPEN, data_cmd=RelayCommand.DB_DATA, end_cmd=RelayCommand.DB_END
                )
            elif st is not None and st.state is StreamState.HALF_CLOSED:
                return
            self._events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return
        if cmd == RelayCommand.DB_END:
            st = edge.streams.pop(sid, None) if sid else None
            if st is not None:
                # passed up even when we had ended the stream already: a late DB_END BAD_PIECE
                # still tells the ORDB which delivery was bad
                self._events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return  # a DB_END for a stream already gone is dropped (both ends may end at once)
        if cmd >= PRIVATE_BASE:
            self._events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return
        # DROP, padding negotiation and unknown commands: dropped, already counted (tor-spec §6.1)

    def _on_begin(self, circ: RelayCircuit, sid: int, body: bytes) -> None:
        if sid == 0:
            raise CircuitViolation("BEGIN on stream 0")
        if sid in circ.edge.streams:
            raise CircuitViolation("BEGIN on a stream id in use")
        if circ.next_chan is not None:
            raise CircuitViolation("BEGIN at a hop that is not the last")
        msg = Begin.decode(body)
        host = msg.address.strip("[]")
        if not self.config.exit_policy.allows(host, msg.port):
            self._or_send(circ, RelayCommand.END, sid, End(EndReason.EXITPOLICY).encode())
            return
        circ.edge.streams[sid] = Stream(sid, StreamState.CONNECTING)
        self._events.append(ev.ExitConnectRequested(circ.handle, sid, host, msg.port))

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
        for chan, cid in legs:
            self._route.pop((chan, cid), None)
            ch = self.channels.get(chan)
            if ch is None:
                continue
            ch.circ_ids.discard(cid)
            if chan != from_chan and chan != skip_chan:
                ch.send_cell(cid, CellCommand.DESTROY, Destroy(reason_out).encode_payload(), self._now)
        for edge in edges:
            for sid, st in edge.streams.items():
                if st.state is not StreamState.HALF_CLOSED:
                    self._events.append(ev.StreamEnded(handle, sid, int(EndReason.DESTROY), False))
            edge.streams.clear()
        shown = remote_reason if remote_reason is not None else reason
        self._events.append(ev.CircuitClosed(handle, int(shown), message))

    def _origin(self, handle: int) -> OriginCircuit:
        circ = self.circuits.get(handle)
        if not isinstance(circ, OriginCircuit) or circ.state is not CircuitState.OPEN:
            raise UsageError("not an open origin circuit")
        return circ

    def send_relay(self, handle: int, command: int, stream_id: int, data: bytes, *, hop: int = -1) -> None:
        """Send a relay message from an edge (private DB_* commands, or DROP)."""
        circ = self.circuits.get(handle)
        if circ is None:
            raise UsageError("no such circuit")
        if isinstance(circ, OriginCircuit):
            self._op_send(circ, hop % len(circ.hops), command, stream_id, data)
        else:
            self._or_send(circ, command, stream_id, data)

    def send_link_message(self, chan: int, command: int, payload: bytes) -> None:
        """Send a private link-level cell (DB_INTRODUCE, ...) on a channel."""
        ch = self.channels.get(chan)
        if ch is not None and ch.state.value == "open":
            ch.send_cell(0, command, payload, self._now)

    def window_state(self, handle: int) -> list[tuple[int, int]]:
        """(package_window, deliver_window) of each edge, for tests and status."""
        circ = self.circuits.get(handle)
        if circ is None:
            return []
        edges = circ.hops if isinstance(circ, OriginCircuit) else [circ.edge]
        return [(e.package_window, e.deliver_window) for e in edges]


class _ChannelViolation(Exception):
    """Internal: a circuit cell that breaks a channel-level rule."""


def _ct_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
