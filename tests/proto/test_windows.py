"""SENDME windows at their exact boundaries (tor-spec §7.3-7.4, authenticated SENDME v1, docs/circuits.md).

Circuit windows are 1000 DATA cells (SENDME every 100), stream windows 500 (SENDME every 50).
Both directions are checked: the OP sending to the exit, and the exit sending to the OP.  The
receiver's application does not consume by itself (``auto_consume`` off), so stream SENDMEs go
only when the test says the data was read; circuit SENDMEs are held on the wire where a test
needs the sender to wait for them.  Only the node's public API and the harness are used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from peer.proto import events as ev
from peer.wire.cells import CELL_LEN
from peer.wire.commands import RelayCommand
from peer.wire.relay import Sendme
from tests.proto.harness import Net, TNode

CIRC_WINDOW, CIRC_STEP = 1000, 100
STREAM_WINDOW, STREAM_STEP = 500, 50
CELL_DATA = 498  # RELAY_DATA_MAX: bytes of one DATA cell


@dataclass
class Ends:
    """A 2-hop circuit 0 -> 1 -> 2 with open streams, seen as a sender and a receiver."""

    net: Net
    sender: TNode
    send_handle: int
    receiver: TNode
    recv_handle: int
    sids: list[int]
    back_wire: tuple[int, int]  # (node, chan) that carries the receiver's SENDMEs to the sender
    back_into: tuple[int, int]  # (node, chan) where those cells arrive at the sender

    def received(self, sid: int | None = None) -> int:
        """DATA cells the receiver got so far (on one stream, or on all)."""
        return sum(
            1
            for e in self.receiver.events
            if isinstance(e, ev.StreamDataReceived)
            and e.circ == self.recv_handle
            and (sid is None or e.stream_id == sid)
        )

    def received_bytes(self, sid: int) -> bytes:
        return b"".join(
            e.data
            for e in self.receiver.events
            if isinstance(e, ev.StreamDataReceived) and e.circ == self.recv_handle and e.stream_id == sid
        )

    def closed(self) -> list[ev.CircuitClosed]:
        return [e for t in self.net.nodes for e in t.events if isinstance(e, ev.CircuitClosed)]


def setup(direction: str, streams: int = 1) -> Ends:
    net = Net(3)
    net.mesh()
    circ = net.build(0, [1, 2])
    sids, xc = [], 0
    for _ in range(streams):
        sid, xc = net.open_exit_stream(0, circ, 2)
        sids.append(sid)
    op, exit_ = net.nodes[0], net.nodes[2]
    if direction == "op-to-exit":
        ends = Ends(net, op, circ, exit_, xc, sids, (1, net.chan[(1, 0)]), (0, net.chan[(0, 1)]))
    else:
        ends = Ends(net, exit_, xc, op, circ, sids, (1, net.chan[(1, 2)]), (2, net.chan[(2, 1)]))
    ends.receiver.node.config = replace(ends.receiver.node.config, auto_consume=False)
    for t in net.nodes:
        t.events.clear()
    return ends


def hold_back_traffic(ends: Ends) -> list[bytes]:
    """Keep every cell travelling from the receiver's side toward the sender (its SENDMEs)."""
    held: list[bytes] = []

    def tap(i: int, chan: int, msg: bytes) -> bytes | None:
        if (i, chan) == ends.back_wire:
            assert len(msg) % CELL_LEN == 0
            held.extend(msg[k : k + CELL_LEN] for k in range(0, len(msg), CELL_LEN))
            return None
        return msg

    ends.net.tap = tap
    return held


def release_one(ends: Ends, held: list[bytes]) -> None:
    node, chan = ends.back_into
    ends.net.nodes[node].node.channel_receive(chan, held.pop(0), ends.net.now)
    ends.net.pump()


DIRECTIONS = ["op-to-exit", "exit-to-op"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sender_stops_at_the_stream_window_and_resumes_per_stream_sendme(direction: str) -> None:
    ends = setup(direction)
    (sid,) = ends.sids
    data = ends.net.rng.randbytes(CELL_DATA * 620)
    ends.sender.node.stream_send(ends.send_handle, sid, data)
    ends.net.pump()
    # exactly one stream window of cells, then the sender waits; nothing is broken
    assert ends.received(sid) == STREAM_WINDOW
    assert ends.sender.node.stream_buffered(ends.send_handle, sid) == CELL_DATA * (620 - STREAM_WINDOW)
    assert not ends.closed()
    # circuit SENDMEs flowed meanwhile: only the stream window holds the sender back
    assert ends.sender.node.window_state(ends.send_handle)[-1][0] == CIRC_WINDOW
    # the reader consumed 49 cells: no stream SENDME yet, nothing more is sent
    ends.receiver.node.stream_consumed(ends.recv_handle, sid, STREAM_STEP - 1)
    ends.net.pump()
    assert ends.received(sid) == STREAM_WINDOW
    # the 50th: one stream SENDME, and exactly 50 more cells
    ends.receiver.node.stream_consumed(ends.recv_handle, sid, 1)
    ends.net.pump()
    assert ends.received(sid) == STREAM_WINDOW + STREAM_STEP
    # 70 more consumed: one SENDME (the remaining 20 wait for the next 30), 50 more cells
    ends.receiver.node.stream_consumed(ends.recv_handle, sid, 70)
    ends.net.pump()
    assert ends.received(sid) == 600
    ends.receiver.node.stream_consumed(ends.recv_handle, sid, 30)
    ends.net.pump()
    assert ends.received(sid) == 620
    assert ends.received_bytes(sid) == data
    assert not ends.closed()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_first_data_cell_past_the_stream_window_closes_the_circuit(direction: str) -> None:
    ends = setup(direction)
    (sid,) = ends.sids
    # a whole window, sent by the rules: accepted, the circuit stays
    ends.sender.node.stream_send(ends.send_handle, sid, b"w" * (CELL_DATA * STREAM_WINDOW))
    ends.net.pump()
    assert ends.received(sid) == STREAM_WINDOW
    assert not ends.closed()
    assert ends.recv_handle in ends.receiver.node.circuits
    # cell 501 without a SENDME (a sender ignoring its window): the receiver closes the circuit
    ends.sender.node.send_relay(ends.send_handle, RelayCommand.DATA, sid, b"!")
    ends.net.pump()
    at_receiver = [e for e in ends.receiver.events if isinstance(e, ev.CircuitClosed)]
    assert at_receiver and "stream deliver window overrun" in at_receiver[0].message
    assert ends.received(sid) == STREAM_WINDOW  # the overrunning cell was not delivered
    assert ends.recv_handle not in ends.receiver.node.circuits
    assert ends.send_handle not in ends.sender.node.circuits  # the DESTROY reached the sender


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_streams_share_the_circuit_window_and_resume_per_circuit_sendme(direction: str) -> None:
    ends = setup(direction, streams=3)
    held = hold_back_traffic(ends)
    per_stream = 400  # under the stream window; three of them are over the circuit window
    payload = {sid: ends.net.rng.randbytes(CELL_DATA * per_stream) for sid in ends.sids}
    for sid in ends.sids:
        ends.sender.node.stream_send(ends.send_handle, sid, payload[sid])
    ends.net.pump()
    # with no circuit SENDME back, the streams together send exactly one circuit window
    assert ends.received() == CIRC_WINDOW
    assert all(ends.received(sid) <= per_stream for sid in ends.sids)
    assert ends.sender.node.window_state(ends.send_handle)[-1][0] == 0
    left = sum(ends.sender.node.stream_buffered(ends.send_handle, sid) for sid in ends.sids)
    assert left == CELL_DATA * (3 * per_stream - CIRC_WINDOW)
    assert len(held) == CIRC_WINDOW // CIRC_STEP  # one authenticated SENDME per 100 cells received
    assert not ends.closed()
    # each circuit SENDME let through opens the window by exactly 100 cells
    for k in (1, 2):
        release_one(ends, held)
        assert ends.received() == CIRC_WINDOW + k * CIRC_STEP
    assert ends.received() == 3 * per_stream
    while held:  # the rest (and those for the new cells) only raise the window back to its start
        release_one(ends, held)
    assert ends.sender.node.window_state(ends.send_handle)[-1][0] == CIRC_WINDOW
    for sid in ends.sids:
        assert ends.received_bytes(sid) == payload[sid]
    assert not ends.closed()


def test_a_circuit_sendme_nobody_asked_for_closes_the_circuit() -> None:
    """The receiver side of the circuit window: a SENDME beyond those due is a violation."""
    ends = setup("op-to-exit")
    (sid,) = ends.sids
    ends.sender.node.stream_send(ends.send_handle, sid, b"v" * (CELL_DATA * CIRC_STEP))
    ends.net.pump()
    assert ends.received(sid) == CIRC_STEP and not ends.closed()
    # the exit already sent the one SENDME due for these 100 cells; a second one is not due
    ends.receiver.node.send_relay(ends.recv_handle, RelayCommand.SENDME, 0, Sendme(1, bytes(20)).encode())
    ends.net.pump()
    at_sender = [e for e in ends.sender.events if isinstance(e, ev.CircuitClosed)]
    assert at_sender and "unexpected" in at_sender[0].message
