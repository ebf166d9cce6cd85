"""Circuits this node builds as an OP (tor-spec §5.1-5.3, §5.6), sans-I/O.

Building: CREATE2 to the first hop, then one EXTEND2 per further hop, each an ntor handshake
with that hop.  Sending: seal for the target hop, then one layer per hop outward; the first
8 relay cells leave as RELAY_EARLY.  Receiving: peel the layers inward until a hop recognises
the cell.  Our streams on these circuits get their ids here (BEGIN, or the first message of
a DB stream).
"""

from __future__ import annotations

from peer.crypto.ntor import HTYPE_NTOR, ntor_client_finish, ntor_client_start
from peer.crypto.relaycrypto import RelayCrypto
from peer.errors import UsageError
from peer.proto import events as ev
from peer.proto.circuit import (
    MAX_HOPS,
    MAX_RELAY_EARLY,
    CircuitState,
    Edge,
    HopSpec,
    OriginCircuit,
    Stream,
    StreamState,
)
from peer.proto.state import NodeState
from peer.proto.streams import DB_OPENING
from peer.proto.violation import CircuitViolation
from peer.wire.cells import Create2
from peer.wire.commands import CellCommand, RelayCommand
from peer.wire.relay import Begin, Extend2, Extended2, relay_payload

RELAY = int(CellCommand.RELAY)
RELAY_EARLY = int(CellCommand.RELAY_EARLY)


class OriginCircuits:
    """The OP side of the node: builds circuits, layers and peels their cells, opens our streams."""

    def __init__(self, state: NodeState) -> None:
        self._s = state

    # ---- building ------------------------------------------------------------------------------
    def build(self, chan: int, path: list[HopSpec]) -> int:
        """Send CREATE2 to the first hop of ``path`` (the peer on ``chan``); returns the handle."""
        if not 1 <= len(path) <= MAX_HOPS:
            raise UsageError(f"a circuit has 1 to {MAX_HOPS} hops")
        s = self._s
        ch = s.channels.get(chan)
        if ch is None or ch.state.value != "open":
            raise UsageError("build_circuit needs an open channel")
        cid = ch.allocate_circ_id(s.rand)
        handle = s.new_handle()
        circ = OriginCircuit(handle=handle, chan=chan, circ_id=cid, path=list(path))
        s.circuits[handle] = circ
        s.attach(chan, ch, cid, handle)
        state, onionskin = ntor_client_start(path[0].node_id, path[0].ntor_key, s.rand)
        circ.pending = state
        ch.send_cell(cid, CellCommand.CREATE2, Create2(HTYPE_NTOR, onionskin).encode_payload(), s.now)
        if s.config.record:
            s.events.append(
                ev.Observed.of("circuit", circ=handle, prev="self", next=path[0].node_id, next_circ_id=cid)
            )
        return handle

    def created(self, circ: OriginCircuit, hdata: bytes) -> None:
        """CREATED2 from the first hop."""
        if circ.hops or circ.pending is None:
            raise CircuitViolation("unexpected CREATED2")
        self._hop_done(circ, hdata)

    def extended(self, circ: OriginCircuit, hop: int, stream_id: int, body: bytes) -> None:
        """EXTENDED2 from the last hop so far."""
        if circ.pending is None or hop != len(circ.hops) - 1 or stream_id != 0:
            raise CircuitViolation("unexpected EXTENDED2")
        self._hop_done(circ, Extended2.decode(body).hdata)

    def _hop_done(self, circ: OriginCircuit, reply: bytes) -> None:
        assert circ.pending is not None
        keys = ntor_client_finish(circ.pending, reply)
        circ.pending = None
        circ.hops.append(Edge(RelayCrypto(keys)))
        if len(circ.hops) == len(circ.path):
            circ.state = CircuitState.OPEN
            self._s.events.append(ev.CircuitBuilt(circ.handle, len(circ.hops)))
        else:
            self._extend_next(circ)

    def _extend_next(self, circ: OriginCircuit) -> None:
        hop = circ.path[len(circ.hops)]
        state, onionskin = ntor_client_start(hop.node_id, hop.ntor_key, self._s.rand)
        circ.pending = state
        body = Extend2(hop.link_specs, HTYPE_NTOR, onionskin).encode()
        if circ.early_sent >= MAX_RELAY_EARLY:
            raise UsageError("no RELAY_EARLY left for EXTEND2")
        self.send(circ, len(circ.hops) - 1, RelayCommand.EXTEND2, 0, body)

    # ---- our crypto layers -----------------------------------------------------------------------
    def send(self, circ: OriginCircuit, hop: int, command: int, stream_id: int, data: bytes) -> None:
        """A relay cell for hop ``hop``: sealed for it, one layer per hop up to it, then queued."""
        s = self._s
        plain = relay_payload(command, stream_id, data, s.rand)
        p = circ.hops[hop].crypto.seal_forward(plain)
        for i in range(hop, -1, -1):
            p = circ.hops[i].crypto.encrypt_forward(p)
        if circ.early_sent < MAX_RELAY_EARLY:
            circ.early_sent += 1
            cmd = RELAY_EARLY
        else:
            cmd = RELAY
        ch = s.channels.get(circ.chan)
        if ch is not None:
            ch.send_relay_cells(circ.circ_id, cmd, [p], s.now)

    def receive(self, circ: OriginCircuit, cmd: int, payload: bytes) -> tuple[int, bytes]:
        """Peel a relay cell coming back: ``(hop index, plaintext)`` of the hop that recognises it."""
        if cmd == RELAY_EARLY:
            raise CircuitViolation("inbound RELAY_EARLY")
        p = payload
        for i, hop in enumerate(circ.hops):
            p = hop.crypto.decrypt_backward(p)
            if p[1] == 0 and p[2] == 0 and hop.crypto.recognize_backward(p):
                return i, p
        raise CircuitViolation("a relay cell no hop recognises (bad digest)")

    # ---- our streams on them ---------------------------------------------------------------------
    def opened(self, handle: int) -> OriginCircuit:
        circ = self._s.circuits.get(handle)
        if not isinstance(circ, OriginCircuit) or circ.state is not CircuitState.OPEN:
            raise UsageError("not an open origin circuit")
        return circ

    def open_stream(self, handle: int, host: str, port: int, hop: int) -> int:
        """Send BEGIN to ``hop`` of an open origin circuit; returns the stream id."""
        circ = self.opened(handle)
        idx = hop % len(circ.hops)
        edge = circ.hops[idx]
        sid = self._new_stream_id(circ)
        edge.streams[sid] = Stream(sid, StreamState.CONNECTING)
        self.send(circ, idx, RelayCommand.BEGIN, sid, Begin(host, port, 0).encode())
        return sid

    def open_db_stream(self, handle: int, command: int, body: bytes, hop: int) -> int:
        """Open a DB stream with its first message (DB_INFO, DB_QUERY or DB_CONNECTED)."""
        if command not in DB_OPENING:
            raise UsageError("a DB stream opens with DB_INFO, DB_QUERY or DB_CONNECTED")
        circ = self.opened(handle)
        idx = hop % len(circ.hops)
        edge = circ.hops[idx]
        sid = self._new_stream_id(circ)
        edge.streams[sid] = Stream(
            sid, StreamState.OPEN, data_cmd=RelayCommand.DB_DATA, end_cmd=RelayCommand.DB_END
        )
        self.send(circ, idx, command, sid, body)
        return sid

    @staticmethod
    def _new_stream_id(circ: OriginCircuit) -> int:
        """The next stream id not in use at any hop (ids of half-closed streams are not reused)."""
        for _ in range(65535):
            sid = circ.next_stream_id
            circ.next_stream_id = sid % 65535 + 1
            if all(sid not in e.streams for e in circ.hops):
                return sid
        raise UsageError("no free stream id on this circuit")
