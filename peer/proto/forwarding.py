"""Circuits this node relays as an OR (tor-spec §5.1-5.3, §5.5-5.6), sans-I/O.

CREATE2 is answered with an ntor handshake and makes a relay circuit with one crypto layer.
Relay cells from the OP lose that layer: a recognised one ends here (at this hop's edge, or
EXTEND2, turned into CREATE2 on the next channel), any other is passed to the next channel.
Cells from the next hop gain the layer and go back toward the OP.  Links are never opened
inside an EXTEND (DESIGN §4): an EXTEND2 to a peer with no open channel fails.
"""

from __future__ import annotations

from collections.abc import Mapping

from peer.crypto.keys import X25519KeyPair
from peer.crypto.ntor import HTYPE_NTOR, ntor_server
from peer.crypto.relaycrypto import RelayCrypto
from peer.errors import HandshakeError, WireError
from peer.proto import events as ev
from peer.proto.channel import Channel
from peer.proto.circuit import MAX_RELAY_EARLY, Edge, RelayCircuit
from peer.proto.state import NodeState
from peer.proto.violation import ChannelViolation, CircuitViolation
from peer.wire.cells import Cell, Create2, Created2, Destroy
from peer.wire.commands import CellCommand, DestroyReason, RelayCommand
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecLegacyId, LinkSpecPeerNodeId
from peer.wire.relay import Extend2, Extended2, peek_header, relay_payload

RELAY = int(CellCommand.RELAY)
RELAY_EARLY = int(CellCommand.RELAY_EARLY)
EXTEND2 = int(RelayCommand.EXTEND2)


class Forwarding:
    """The OR side of the node: relay circuits between two channels, and their own last hop."""

    def __init__(self, state: NodeState, ntor_keys: Mapping[bytes, X25519KeyPair]) -> None:
        self._s = state
        #: the ntor keys CREATE2 is accepted for (rotation keeps the old key a while)
        self.ntor_keys = dict(ntor_keys)

    def create2(self, chan: int, ch: Channel, cell: Cell, handle: int | None) -> None:
        """A CREATE2 from the previous hop: a new relay circuit, or DESTROY if the handshake fails."""
        s = self._s
        cid = cell.circ_id
        if handle is not None or cid in ch.circ_ids:
            raise ChannelViolation("CREATE2 on a circuit id already in use")
        if ch.is_own_circ_id(cid):
            raise ChannelViolation("CREATE2 with a circuit id from our half of the space")
        if ch.peer is not None and ch.peer.is_tor_relay:
            raise ChannelViolation("CREATE2 from a tor relay: we are not a relay in its network")
        try:
            msg = Create2.decode_payload(cell.payload)
            if msg.htype != HTYPE_NTOR:
                raise HandshakeError(f"unsupported handshake type {msg.htype}")
            reply, keys = ntor_server(msg.hdata, s.node_id, self.ntor_keys, s.rand)
        except (WireError, HandshakeError):
            ch.send_cell(cid, CellCommand.DESTROY, Destroy(DestroyReason.PROTOCOL).encode_payload(), s.now)
            return
        h = s.new_handle()
        s.circuits[h] = RelayCircuit(handle=h, prev_chan=chan, prev_id=cid, edge=Edge(RelayCrypto(keys)))
        s.attach(chan, ch, cid, h)
        ch.send_cell(cid, CellCommand.CREATED2, Created2(reply).encode_payload(), s.now)
        if s.config.record:
            prev = ch.peer.node_id if ch.peer else b""
            s.events.append(ev.Observed.of("circuit", circ=h, prev=prev, next=None, prev_circ_id=cid))

    def created(self, circ: RelayCircuit, chan: int, hdata: bytes) -> None:
        """CREATED2 from the next hop: EXTENDED2 back to the OP."""
        if not circ.extending or chan != circ.next_chan:
            raise CircuitViolation("unexpected CREATED2")
        circ.extending = False
        self.send(circ, RelayCommand.EXTENDED2, 0, Extended2(hdata).encode())

    def forward(self, circ: RelayCircuit, cmd: int, payload: bytes) -> bytes | None:
        """A relay cell from the OP side: the plaintext if it ends at our edge, else None
        (passed on to the next hop, or an EXTEND2 handled here)."""
        early = cmd == RELAY_EARLY
        if early:
            circ.early_received += 1
            if circ.early_received > MAX_RELAY_EARLY:
                raise CircuitViolation(f"more than {MAX_RELAY_EARLY} RELAY_EARLY cells")
        crypto = circ.edge.crypto
        p = crypto.decrypt_forward(payload)
        if p[1] == 0 and p[2] == 0 and crypto.recognize_forward(p):
            if p[0] == EXTEND2:
                self._extend(circ, p, early)
                return None
            return p
        if circ.next_chan is None or circ.next_id is None or circ.extending:
            raise CircuitViolation("a relay cell not recognised at the last hop (bad digest)")
        s = self._s
        nch = s.channels.get(circ.next_chan)
        if nch is not None:
            nch.send_relay_cells(circ.next_id, cmd, [p], s.now)
        return None

    def backward(self, circ: RelayCircuit, cmd: int, payload: bytes) -> None:
        """A relay cell from the next hop: our layer added, passed back toward the OP."""
        if cmd == RELAY_EARLY:
            raise CircuitViolation("RELAY_EARLY travelling toward the OP")
        s = self._s
        p = circ.edge.crypto.encrypt_backward(payload)
        pch = s.channels.get(circ.prev_chan)
        if pch is not None:
            pch.send_relay_cells(circ.prev_id, RELAY, [p], s.now)

    def send(self, circ: RelayCircuit, command: int, stream_id: int, data: bytes) -> None:
        """A relay cell from our own edge toward the OP."""
        s = self._s
        crypto = circ.edge.crypto
        p = crypto.encrypt_backward(crypto.seal_backward(relay_payload(command, stream_id, data, s.rand)))
        ch = s.channels.get(circ.prev_chan)
        if ch is not None:
            ch.send_relay_cells(circ.prev_id, RELAY, [p], s.now)

    def _extend(self, circ: RelayCircuit, p: bytes, early: bool) -> None:
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
        s = self._s
        if node_id == s.node_id:
            raise CircuitViolation("EXTEND2 to ourselves")
        target = s.channel_for_peer(node_id=node_id, ed25519_id=ed_id, rsa_id=rsa_id)
        if target is None or target == circ.prev_chan:
            # Links are never opened inside an EXTEND (DESIGN §4): no link, no extension.
            raise CircuitViolation("EXTEND2 to a peer we have no link to", DestroyReason.CONNECTFAILED)
        nch = s.channels[target]
        nid = nch.allocate_circ_id(s.rand)
        if s.config.record:
            next_id = nch.peer.node_id if nch.peer else b""
            s.events.append(ev.Observed.of("extend", circ=circ.handle, next=next_id, next_circ_id=nid))
        circ.next_chan, circ.next_id, circ.extending = target, nid, True
        s.attach(target, nch, nid, circ.handle)
        nch.send_cell(nid, CellCommand.CREATE2, Create2(msg.htype, msg.hdata).encode_payload(), s.now)
