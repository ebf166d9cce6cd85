"""Malformed input closes only what it must (issue: "Malformed-input scoping").

For each class: what is closed (the cell is dropped, the circuit, or the channel), and
another circuit still finishes its transfer intact.
"""

from __future__ import annotations

from peer.proto import events as ev
from peer.proto.circuit import OriginCircuit
from peer.wire.cells import Cell, encode_versions_cell
from peer.wire.commands import CellCommand, RelayCommand
from peer.wire.relay import relay_payload
from tests.proto.harness import Net
from tests.proto.test_circuits import transfer


def two_circuits(net: Net) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Two circuits 0 -> 1 -> 2 -> 3 on the same channels, each with an open stream."""
    out = []
    for _ in range(2):
        circ = net.build(0, [1, 2, 3])
        sid, xc = net.open_exit_stream(0, circ, 3)
        out.append((circ, sid, xc))
    return out[0], out[1]


def setup() -> tuple[Net, tuple[int, int, int], tuple[int, int, int]]:
    net = Net(4)
    net.mesh()
    a, b = two_circuits(net)
    return net, a, b


def assert_other_finishes(net: Net, b: tuple[int, int, int]) -> None:
    circ, sid, xc = b
    assert circ in net.nodes[0].node.circuits
    transfer(net, 0, 3, circ, sid, xc, 700_000)


def closed_at(net: Net, index: int, circ: int | None = None) -> list[ev.CircuitClosed]:
    got = net.nodes[index].take(ev.CircuitClosed)
    return [c for c in got if circ is None or c.circ == circ]


def test_bad_digest_closes_the_circuit() -> None:
    net, (a, sid, _), b = setup()
    opc = net.nodes[0].node.circuits[a]
    assert isinstance(opc, OriginCircuit)
    p = opc.hops[2].crypto.seal_forward(relay_payload(RelayCommand.DATA, sid, b"x", net.rng.randbytes))
    p = p[:20] + bytes([p[20] ^ 1]) + p[21:]
    for i in (2, 1, 0):
        p = opc.hops[i].crypto.encrypt_forward(p)
    net.nodes[0].node.channels[opc.chan].send_relay_cells(opc.circ_id, CellCommand.RELAY, [p], net.now)
    net.pump()
    at_exit = closed_at(net, 3)
    assert at_exit and "bad digest" in at_exit[0].message
    assert closed_at(net, 0, a)  # the DESTROY reached the OP
    assert a not in net.nodes[0].node.circuits
    assert_other_finishes(net, b)


def test_unknown_relay_command_drops_the_cell_only() -> None:
    net, (a, sid, xa), b = setup()
    net.nodes[0].node.send_relay(a, 150, 0, b"unknown")
    net.pump()
    assert not closed_at(net, 3) and a in net.nodes[0].node.circuits
    transfer(net, 0, 3, a, sid, xa, 100_000)  # the digest still counted it: the circuit works
    assert_other_finishes(net, b)


def test_data_on_stream_zero_closes_the_circuit() -> None:
    net, (a, _sid, _), b = setup()
    net.nodes[0].node.send_relay(a, RelayCommand.DATA, 0, b"x")
    net.pump()
    at_exit = closed_at(net, 3)
    assert at_exit and "stream 0" in at_exit[0].message
    assert a not in net.nodes[0].node.circuits
    assert_other_finishes(net, b)


def test_more_than_eight_relay_early_closes_the_circuit() -> None:
    net, (a, _sid, _), b = setup()
    opc = net.nodes[0].node.circuits[a]
    assert isinstance(opc, OriginCircuit)
    opc.early_sent = 0  # a misbehaving OP: 8 more RELAY_EARLY after the first 8
    for _ in range(8):
        net.nodes[0].node.send_relay(a, RelayCommand.DROP, 0, b"")
    net.pump()
    at_guard = closed_at(net, 1)
    assert at_guard and "RELAY_EARLY" in at_guard[0].message
    assert a not in net.nodes[0].node.circuits
    assert_other_finishes(net, b)


def test_garbage_before_the_handshake_closes_the_channel() -> None:
    net, _a, b = setup()
    t1 = net.nodes[1]
    from peer.proto.channel import HandshakeConfig

    def never(_c: object) -> object:
        raise AssertionError("not reached")

    chan = t1.node.add_channel(initiator=False, handshake=HandshakeConfig(validate=never), now=net.now)  # type: ignore[arg-type]
    t1.node.channel_receive(chan, b"\x00\x00\x09garbage" + bytes(100), net.now)
    net.pump()
    closed = [e for e in t1.take(ev.ChannelClosed) if e.chan == chan]
    assert closed and "VERSIONS" in closed[0].reason
    assert_other_finishes(net, b)


def test_wrong_cell_length_closes_the_channel_and_its_circuits() -> None:
    net = Net(5)
    net.mesh()
    _a, b = two_circuits(net)
    c = net.build(4, [1, 2])  # a circuit on the channel 4 <-> 1
    chan_at_1 = net.chan[(1, 4)]
    net.nodes[1].node.channel_receive(chan_at_1, b"\x80\x00\x00\x01\x03" + bytes(300), net.now)
    net.pump()
    closed = [e for e in net.nodes[1].take(ev.ChannelClosed) if e.chan == chan_at_1]
    assert closed and "cell" in closed[0].reason
    assert all(r[0] != chan_at_1 for r in net.nodes[1].node._route)  # its circuits are gone at 1
    assert [e for e in net.nodes[4].take(ev.CircuitClosed) if e.circ == c]  # and at their OP
    assert_other_finishes(net, b)


def test_second_versions_closes_the_channel() -> None:
    net = Net(5)
    net.mesh()
    _a, b = two_circuits(net)
    chan_at_1 = net.chan[(1, 4)]
    versions = Cell(0, CellCommand.VERSIONS, encode_versions_cell([4, 5])[5:]).encode(4)
    net.nodes[1].node.channel_receive(chan_at_1, versions, net.now)
    net.pump()
    closed = [e for e in net.nodes[1].take(ev.ChannelClosed) if e.chan == chan_at_1]
    assert closed and "VERSIONS" in closed[0].reason
    assert_other_finishes(net, b)


def test_create2_on_a_circuit_id_in_use_closes_the_channel() -> None:
    net = Net(5)
    net.mesh()
    _a, b = two_circuits(net)
    c = net.build(4, [1, 2])
    node4 = net.nodes[4].node
    oc = node4.circuits[c]
    assert isinstance(oc, OriginCircuit)
    node4.channels[oc.chan].send_cell(
        oc.circ_id, CellCommand.CREATE2, b"\x00\x02\x00\x54" + bytes(84), net.now
    )
    net.pump()
    closed = net.nodes[1].take(ev.ChannelClosed)
    assert closed and "in use" in closed[0].reason
    assert_other_finishes(net, b)
