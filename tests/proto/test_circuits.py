"""Circuits, streams and flow control on the sans-I/O core (no asyncio, fake clock)."""

from __future__ import annotations

import pytest

from peer.proto import events as ev
from peer.proto.circuit import OriginCircuit, RelayCircuit
from peer.proto.flow import CIRCWINDOW_START
from peer.wire.commands import CellCommand, DestroyReason, EndReason, RelayCommand
from peer.wire.relay import relay_payload
from tests.proto.harness import Net


def transfer(net: Net, op: int, exit_index: int, circ: int, sid: int, exit_circ: int, nbytes: int) -> None:
    """Send ``nbytes`` OP -> exit and back; check both arrive intact and windows stay in bounds."""
    data = net.rng.randbytes(nbytes)
    opn, exn = net.nodes[op], net.nodes[exit_index]
    opn.node.stream_send(circ, sid, data)
    got = bytearray()
    for _ in range(10_000):
        net.pump()
        for e in exn.take(ev.StreamDataReceived):
            got += e.data
        oc = opn.node.circuits[circ]
        assert isinstance(oc, OriginCircuit)
        edge = oc.hops[-1]
        xc = exn.node.circuits[exit_circ]
        assert isinstance(xc, RelayCircuit)
        in_flight = edge.data_sent - xc.edge.data_received
        assert 0 <= in_flight <= CIRCWINDOW_START
        if len(got) >= nbytes:
            break
    assert bytes(got) == data
    back = net.rng.randbytes(nbytes)
    exn.node.stream_send(exit_circ, sid, back)
    got = bytearray()
    for _ in range(10_000):
        net.pump()
        for e in opn.take(ev.StreamDataReceived):
            got += e.data
        if len(got) >= nbytes:
            break
    assert bytes(got) == back


@pytest.mark.parametrize("hops", [1, 2, 3, 5])
def test_build_and_transfer(hops: int) -> None:
    net = Net(6)
    net.mesh()
    path = list(range(1, hops + 1))
    circ = net.build(0, path)
    sid, xc = net.open_exit_stream(0, circ, path[-1])
    transfer(net, 0, path[-1], circ, sid, xc, 1_200_000)  # > 2,400 cells: many SENDME rounds


def test_relay_early_hides_length_and_extend2_only_in_relay_early() -> None:
    net = Net(5)
    net.mesh()
    seen: list[int] = []

    def tap(i: int, chan: int, msg: bytes) -> bytes:
        if i == 0:
            for k in range(0, len(msg), 514):
                if msg[k + 4] in (CellCommand.RELAY, CellCommand.RELAY_EARLY):
                    seen.append(msg[k + 4])
        return msg

    net.tap = tap
    circ = net.build(0, [1, 2, 3])
    sid, xc = net.open_exit_stream(0, circ, 3)
    transfer(net, 0, 3, circ, sid, xc, 20_000)
    # the first 8 relay cells leave as RELAY_EARLY (two EXTEND2 among them), then RELAY
    assert seen[:8] == [CellCommand.RELAY_EARLY] * 8
    assert set(seen[8:]) == {CellCommand.RELAY}


def test_forged_sendme_digest_tears_down_the_circuit() -> None:
    net = Net(4)
    net.mesh()
    circ = net.build(0, [1, 2, 3])
    sid, xc = net.open_exit_stream(0, circ, 3)
    exn = net.nodes[3]
    # the OP sends 100 DATA cells; instead of the authenticated SENDME the exit would send,
    # inject one with a wrong digest from the exit
    exn.node.config = exn.node.config.__class__(exit_policy=exn.node.config.exit_policy, auto_consume=True)
    opn = net.nodes[0]
    opc = opn.node.circuits[circ]
    assert isinstance(opc, OriginCircuit)
    xcirc = exn.node.circuits[xc]
    assert isinstance(xcirc, RelayCircuit)
    # stop the exit from answering by hand-feeding: mark its deliver window so it does not send SENDMEs
    xcirc.edge.deliver_window = 10**9
    opn.node.stream_send(circ, sid, b"x" * 498 * 100)
    net.pump()
    assert len(opc.hops[-1].sendme_expected) == 1
    from peer.wire.relay import Sendme

    exn.node.send_relay(xc, RelayCommand.SENDME, 0, Sendme(1, b"\x00" * 20).encode())
    net.pump()
    closed = opn.take(ev.CircuitClosed)
    assert closed and closed[0].circ == circ and "forged SENDME" in closed[0].message
    assert circ not in opn.node.circuits
    # the DESTROY propagated: no node keeps a piece of the circuit
    net.pump()
    for t in net.nodes[1:]:
        assert not t.node.circuits


def test_window_overrun_by_a_peer_loses_the_circuit() -> None:
    net = Net(3)
    net.mesh()
    circ = net.build(0, [1, 2])
    sid, _xc = net.open_exit_stream(0, circ, 2)
    opc = net.nodes[0].node.circuits[circ]
    assert isinstance(opc, OriginCircuit)
    # a misbehaving OP that ignores its package window
    opc.hops[-1].package_window = 10**6
    opc.hops[-1].streams[sid].package_window = 10**6
    net.nodes[2].node.config = net.nodes[2].node.config.__class__(auto_consume=False)
    net.nodes[0].node.stream_send(circ, sid, b"y" * 498 * 1200)
    net.pump()
    closed = net.nodes[2].take(ev.CircuitClosed)
    assert closed and "window overrun" in closed[0].message


def test_exit_policy_refuses_and_default_policy_rejects_everything() -> None:
    net = Net(3, exit_policy="accept 127.0.0.1:80")
    net.mesh()
    circ = net.build(0, [1, 2])
    sid = net.nodes[0].node.open_stream(circ, "127.0.0.1", 22)
    net.pump()
    ended = net.nodes[0].take(ev.StreamEnded)
    assert ended and ended[0].stream_id == sid and ended[0].reason == EndReason.EXITPOLICY
    assert not net.nodes[2].take(ev.ExitConnectRequested)
    net2 = Net(2, exit_policy="")
    net2.mesh()
    c2 = net2.build(0, [1])
    net2.nodes[0].node.open_stream(c2, "127.0.0.1", 80)
    net2.pump()
    assert net2.nodes[0].take(ev.StreamEnded)[0].reason == EndReason.EXITPOLICY


def test_destroy_propagates_both_ways() -> None:
    net = Net(5)
    net.mesh()
    circ = net.build(0, [1, 2, 3, 4])
    net.nodes[0].node.destroy_circuit(circ)
    net.pump()
    for t in net.nodes:
        assert not t.node.circuits
    # from the far end: the exit tears down, the OP hears of it
    circ = net.build(0, [1, 2, 3])
    xhandle = next(iter(net.nodes[3].node.circuits))
    net.nodes[3].node._destroy(xhandle, DestroyReason.RESOURCELIMIT, "test")
    net.pump()
    assert net.nodes[0].take(ev.CircuitClosed)
    for t in net.nodes:
        assert not t.node.circuits


def test_extend_to_a_peer_without_a_link_is_refused() -> None:
    net = Net(4)
    net.connect(0, 1)
    net.connect(1, 2)  # 1 has no link to 3
    t = net.nodes[0]
    handle = t.node.build_circuit(net.chan[(0, 1)], [net.nodes[1].hop, net.nodes[3].hop])
    net.pump()
    closed = t.take(ev.CircuitClosed)
    assert closed and closed[0].circ == handle and closed[0].reason == DestroyReason.CONNECTFAILED


def test_create_fast_gets_destroy_protocol() -> None:
    net = Net(2)
    net.mesh()
    ch = net.nodes[0].node.channels[net.chan[(0, 1)]]
    got: list[bytes] = []

    def tap(i: int, c: int, m: bytes) -> bytes:
        if i == 1:
            got.append(m)
        return m

    net.tap = tap
    ch.send_cell(0x80000001, CellCommand.CREATE_FAST, b"\x01" * 20, net.now)
    net.pump()
    assert any(m[4] == CellCommand.DESTROY and m[5] == DestroyReason.PROTOCOL for m in got)


def test_half_closed_stream_accepts_in_flight_data_and_ids_are_not_reused() -> None:
    net = Net(3)
    net.mesh()
    circ = net.build(0, [1, 2])
    sid, xc = net.open_exit_stream(0, circ, 2)
    opn, exn = net.nodes[0], net.nodes[2]
    # the exit sends data, and before it arrives the OP closes the stream
    exn.node.stream_send(xc, sid, b"z" * 5000)
    opn.node.stream_close(circ, sid)
    oc = opn.node.circuits[circ]
    assert isinstance(oc, OriginCircuit)
    assert oc.hops[-1].streams[sid].state.value == "half-closed"
    new_sid = opn.node.open_stream(circ, "127.0.0.1", 80)
    assert new_sid != sid
    net.pump()
    assert not opn.take(ev.StreamDataReceived)  # counted and dropped, circuit still up
    assert circ in opn.node.circuits
    # the exit saw the END, and answers nothing; the OP's half-closed entry goes when the exit ends
    assert exn.take(ev.StreamEnded)


def test_begin_on_a_stream_id_in_use_closes_the_circuit() -> None:
    net = Net(3)
    net.mesh()
    circ = net.build(0, [1, 2])
    sid, _xc = net.open_exit_stream(0, circ, 2)
    from peer.wire.relay import Begin

    net.nodes[0].node.send_relay(circ, RelayCommand.BEGIN, sid, Begin("127.0.0.1", 80, 0).encode())
    net.pump()
    closed = net.nodes[2].take(ev.CircuitClosed)
    assert closed and "stream id in use" in closed[0].message


def test_payload_padding_is_four_zero_bytes_then_random() -> None:
    net = Net(1)
    p = relay_payload(RelayCommand.DATA, 1, b"abc", net.rng.randbytes)
    assert len(p) == 509
    assert p[11 + 3 : 11 + 3 + 4] == b"\x00" * 4
    assert p[11 + 7 :] != b"\x00" * (509 - 18)
