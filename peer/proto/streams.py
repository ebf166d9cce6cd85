"""Streams at a circuit's edge (tor-spec §6-7; DESIGN §6 for DB streams), sans-I/O.

An edge is the OP's view of one hop or an OR's own hop.  Here: the relay cells that end at an
edge (DATA, SENDME, END, CONNECTED, BEGIN at an exit, the DB_* block), stream state and send
buffers packaged into cells under the windows of :mod:`peer.proto.flow`, exits (BEGIN checked
against the exit policy, answered by :meth:`EdgeStreams.exit_connected` or ``exit_failed``)
and DB streams (opened at an endpoint by their first DB message, ended by DB_END).
"""

from __future__ import annotations

from collections.abc import Callable

from peer.errors import UsageError
from peer.proto import events as ev
from peer.proto.circuit import (
    SEND_HIGH_WATER,
    SEND_LOW_WATER,
    Circuit,
    Edge,
    OriginCircuit,
    RelayCircuit,
    Stream,
    StreamState,
)
from peer.proto.state import NodeState
from peer.proto.violation import CircuitViolation
from peer.wire.commands import DestroyReason, EndReason, RelayCommand
from peer.wire.relay import RELAY_DATA_MAX, Begin, Connected, End, Sendme

DATA = int(RelayCommand.DATA)
#: Relay commands that count against the SENDME windows like DATA (DESIGN §6: DB_DATA does).
DATA_LIKE = frozenset({int(RelayCommand.DATA), int(RelayCommand.DB_DATA)})
PRIVATE_BASE = 200
#: DB messages whose first appearance on a stream id opens a DB stream at an endpoint.
DB_OPENING = frozenset(
    {int(RelayCommand.DB_INFO), int(RelayCommand.DB_QUERY), int(RelayCommand.DB_CONNECTED)}
)

#: How an edge sends a relay cell: (circuit, hop index at an OP or -1, command, stream id, body).
EdgeSender = Callable[[Circuit, int, int, int, bytes], None]


class EdgeStreams:
    """Every stream that ends at one of this node's edges, OP or OR."""

    def __init__(self, state: NodeState, send: EdgeSender) -> None:
        self._s = state
        self._send = send

    def locate(self, handle: int, stream_id: int) -> tuple[Circuit, Edge, int]:
        """``(circuit, edge, hop index)`` of a stream (hop -1 at an OR); UsageError if unknown."""
        circ = self._s.circuits.get(handle)
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

    # ---- the application's side ------------------------------------------------------------------
    def send(self, handle: int, stream_id: int, data: bytes) -> bool:
        """Queue data on a stream; False when the writer should wait for StreamWritable."""
        circ, edge, hop = self.locate(handle, stream_id)
        st = edge.streams[stream_id]
        if st.state not in (StreamState.OPEN, StreamState.CONNECTING):
            raise UsageError("stream is not open")
        st.sendbuf += data
        self.pump(circ, edge, hop, st)
        if len(st.sendbuf) >= SEND_HIGH_WATER:
            st.blocked_writer = True
            return False
        return True

    def close(self, handle: int, stream_id: int, reason: int) -> None:
        """END after the queued data (an OP sends reason MISC for its own streams)."""
        self._end_after_flush(handle, stream_id, reason=int(reason))

    def consumed(self, handle: int, stream_id: int, cells: int) -> None:
        try:
            circ, edge, hop = self.locate(handle, stream_id)
        except UsageError:
            return
        st = edge.streams[stream_id]
        st.consumed(cells)
        self._stream_sendmes(circ, hop, st)

    def db_end(self, handle: int, stream_id: int, body: bytes) -> None:
        """DB_END(``body``) once the queued DB_DATA has gone."""
        self._end_after_flush(handle, stream_id, db_end=body)

    def _end_after_flush(
        self, handle: int, stream_id: int, *, reason: int | None = None, db_end: bytes | None = None
    ) -> None:
        """Mark an open stream to end once its queued data has gone: END(``reason``), or
        DB_END(``db_end``) on a DB stream.  Unknown or already ending streams are left alone."""
        try:
            circ, edge, hop = self.locate(handle, stream_id)
        except UsageError:
            return
        st = edge.streams[stream_id]
        if st.state in (StreamState.HALF_CLOSED, StreamState.CLOSED):
            return
        st.end_after_flush = True
        if db_end is not None:
            st.end_cmd = RelayCommand.DB_END
            st.end_body = db_end
        if reason is not None:
            st.end_reason = reason
        self.pump(circ, edge, hop, st)

    def buffered(self, handle: int, stream_id: int) -> int:
        try:
            _circ, edge, _hop = self.locate(handle, stream_id)
        except UsageError:
            return 0
        return len(edge.streams[stream_id].sendbuf)

    # ---- exits -------------------------------------------------------------------------------------
    def exit_connected(self, handle: int, stream_id: int, address: bytes | None) -> None:
        circ, edge, hop = self.locate(handle, stream_id)
        st = edge.streams[stream_id]
        if st.state is not StreamState.CONNECTING:
            return
        st.state = StreamState.OPEN
        self._send(
            circ,
            hop,
            RelayCommand.CONNECTED,
            stream_id,
            Connected(address, 300 if address else None).encode(),
        )
        self.pump(circ, edge, hop, st)

    def exit_failed(self, handle: int, stream_id: int, reason: int) -> None:
        try:
            circ, edge, hop = self.locate(handle, stream_id)
        except UsageError:
            return
        edge.streams.pop(stream_id, None)
        self._send(circ, hop, RelayCommand.END, stream_id, End(reason).encode())

    def _begin(self, circ: RelayCircuit, sid: int, body: bytes) -> None:
        if sid == 0:
            raise CircuitViolation("BEGIN on stream 0")
        if sid in circ.edge.streams:
            raise CircuitViolation("BEGIN on a stream id in use")
        if circ.next_chan is not None:
            raise CircuitViolation("BEGIN at a hop that is not the last")
        msg = Begin.decode(body)
        host = msg.address.strip("[]")
        if not self._s.config.exit_policy.allows(host, msg.port):
            self._send(circ, -1, RelayCommand.END, sid, End(EndReason.EXITPOLICY).encode())
            return
        circ.edge.streams[sid] = Stream(sid, StreamState.CONNECTING)
        self._s.events.append(ev.ExitConnectRequested(circ.handle, sid, host, msg.port))

    # ---- packaging under the windows -------------------------------------------------------------
    def pump(self, circ: Circuit, edge: Edge, hop: int, st: Stream) -> None:
        """Package what the windows allow of a stream's buffer; END once it is empty."""
        if st.state is not StreamState.OPEN:
            return
        buf = st.sendbuf
        send = self._send
        while buf and edge.package_window > 0 and st.package_window > 0:
            chunk = bytes(buf[:RELAY_DATA_MAX])
            del buf[:RELAY_DATA_MAX]
            send(circ, hop, st.data_cmd, st.stream_id, chunk)
            st.packaged()
            if edge.packaged():
                crypto = edge.crypto
                edge.expect_sendme(
                    crypto.forward_digest() if isinstance(circ, OriginCircuit) else crypto.backward_digest()
                )
        if not buf and st.end_after_flush:
            st.state = StreamState.HALF_CLOSED
            st.end_after_flush = False
            if st.end_cmd == RelayCommand.DB_END:
                send(circ, hop, RelayCommand.DB_END, st.stream_id, st.end_body)
            else:
                reason = st.end_reason
                if isinstance(circ, OriginCircuit):
                    reason = EndReason.MISC  # tor-spec §6.3: only MISC for streams we originated
                send(circ, hop, RelayCommand.END, st.stream_id, End(int(reason)).encode())
        if st.blocked_writer and len(buf) <= SEND_LOW_WATER:
            st.blocked_writer = False
            self._s.events.append(ev.StreamWritable(circ.handle, st.stream_id))

    def _pump_all(self, circ: Circuit, edge: Edge, hop: int) -> None:
        for st in list(edge.streams.values()):
            if edge.package_window <= 0:
                break
            self.pump(circ, edge, hop, st)

    def _stream_sendmes(self, circ: Circuit, hop: int, st: Stream) -> None:
        if st.state is not StreamState.OPEN and st.state is not StreamState.CONNECTING:
            return
        for _ in range(st.sendmes_due()):
            self._send(circ, hop, RelayCommand.SENDME, st.stream_id, b"")

    # ---- relay cells that end at an edge ---------------------------------------------------------
    def cell(self, circ: Circuit, edge: Edge, hop: int, cmd: int, sid: int, body: bytes) -> None:
        """A recognised relay cell for ``edge`` (``hop``: its index at an OP, -1 at an OR)."""
        origin = isinstance(circ, OriginCircuit)
        events = self._s.events
        if cmd in DATA_LIKE:
            if sid == 0:
                raise CircuitViolation("DATA on stream 0", DestroyReason.PROTOCOL)
            if edge.delivered():
                digest = edge.crypto.backward_digest() if origin else edge.crypto.forward_digest()
                self._send(circ, hop, RelayCommand.SENDME, 0, Sendme(1, digest).encode())
            st = edge.streams.get(sid)
            if st is None:
                raise CircuitViolation("DATA for an unknown stream")
            st.delivered()
            if st.state is StreamState.HALF_CLOSED:
                return  # in flight when we ended it: counted, dropped
            if cmd == DATA:
                events.append(ev.StreamDataReceived(circ.handle, sid, body))
            else:
                events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            if self._s.config.auto_consume:
                st.consumed(1)
            self._stream_sendmes(circ, hop, st)
            return
        if cmd == RelayCommand.SENDME:
            if sid == 0:
                edge.sendme_received(Sendme.decode(body))
                self._pump_all(circ, edge, hop)
                return
            st = edge.streams.get(sid)
            if st is None:
                raise CircuitViolation("SENDME for an unknown stream")
            if st.state is StreamState.HALF_CLOSED:
                return
            st.sendme_received()
            self.pump(circ, edge, hop, st)
            return
        if cmd == RelayCommand.END:
            st = edge.streams.pop(sid, None) if sid else None
            if st is None:
                if sid == 0:
                    raise CircuitViolation("END on stream 0")
                raise CircuitViolation("END for an unknown stream")
            if st.state is not StreamState.HALF_CLOSED:
                reason = body[0] if body else int(EndReason.MISC)
                events.append(ev.StreamEnded(circ.handle, sid, reason, True))
            return
        if cmd == RelayCommand.CONNECTED:
            st = edge.streams.get(sid)
            if st is None or not origin:
                raise CircuitViolation("CONNECTED for an unknown stream")
            if st.state is StreamState.CONNECTING:
                Connected.decode(body)
                st.state = StreamState.OPEN
                events.append(ev.StreamConnected(circ.handle, sid))
                self.pump(circ, edge, hop, st)
            return
        if cmd == RelayCommand.BEGIN and not origin:
            assert isinstance(circ, RelayCircuit)
            self._begin(circ, sid, body)
            return
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
            events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return
        if cmd == RelayCommand.DB_END:
            st = edge.streams.pop(sid, None) if sid else None
            if st is not None:
                # passed up even when we had ended the stream already: a late DB_END BAD_PIECE
                # still tells the ORDB which delivery was bad
                events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return  # a DB_END for a stream already gone is dropped (both ends may end at once)
        if cmd >= PRIVATE_BASE:
            events.append(ev.RelayMessageReceived(circ.handle, hop, cmd, sid, body))
            return
        # DROP, padding negotiation and unknown commands: dropped, already counted (tor-spec §6.1)
