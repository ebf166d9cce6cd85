"""Channel handshake between peers, identity binding and liveness (sans-I/O, fake clock)."""

from __future__ import annotations

from peer.proto import events as ev
from peer.proto.channel import LivenessConfig
from peer.wire.commands import CellCommand
from tests.proto.harness import Net


def test_handshake_proves_each_side_identity() -> None:
    net = Net(2)
    net.connect(0, 1)
    opened0 = net.nodes[0].take(ev.ChannelOpened)
    opened1 = net.nodes[1].take(ev.ChannelOpened)
    assert opened0[0].peer.node_id == net.nodes[1].keys.node_id
    assert opened1[0].peer.node_id == net.nodes[0].keys.node_id
    assert opened0[0].peer.ntor_key == net.nodes[1].keys.ntor.public
    assert opened0[0].peer.ed25519_id == net.nodes[1].keys.identity.public
    ch = net.nodes[0].node.channels[net.chan[(0, 1)]]
    assert ch.link_version == 5


def test_a_man_in_the_middle_fingerprint_is_refused() -> None:
    """The peer certificate names the DTLS certificate the peer used; if the transport saw
    another one (someone relayed a tampered offer), the link is refused."""
    net = Net(2)
    net.connect(0, 1, fp_seen_by_i=b"\x01" * 32)
    closed = net.nodes[0].take(ev.ChannelClosed)
    assert closed and "another link certificate" in closed[0].reason
    assert not net.nodes[0].take(ev.ChannelOpened)


def test_circuit_ids_follow_the_msb_rule() -> None:
    net = Net(3)
    net.mesh()
    c = net.build(0, [1, 2])
    oc = net.nodes[0].node.circuits[c]
    assert oc.circ_id & 0x80000000  # type: ignore[union-attr]  # node 0 initiated the link to 1
    relay = next(iter(net.nodes[1].node.circuits.values()))
    assert relay.next_id is not None and relay.next_id & 0x80000000  # type: ignore[union-attr]
    c2 = net.build(2, [1, 0])  # node 2 is the responder on its link to 1
    oc2 = net.nodes[2].node.circuits[c2]
    assert not oc2.circ_id & 0x80000000  # type: ignore[union-attr]


def test_keepalive_padding_and_dead_link() -> None:
    net = Net(3, liveness=LivenessConfig(keepalive=1.0, dead_after=5.0))
    net.connect(0, 1)
    net.connect(0, 2)
    c = net.build(0, [1])
    sent: list[int] = []

    def tap(i: int, chan: int, msg: bytes) -> bytes | None:
        if i == 0 and chan == net.chan[(0, 1)]:
            sent.extend(msg[k + 4] for k in range(0, len(msg), 514))
        if i == 1:
            return None  # node 1 went silent (killed)
        return msg

    net.tap = tap
    for _ in range(4):
        net.advance(1.0)
    assert CellCommand.PADDING in sent  # idle for 1 s -> PADDING
    assert c in net.nodes[0].node.circuits
    net.advance(1.5)  # more than 5 s since anything came from 1
    closed = net.nodes[0].take(ev.ChannelClosed)
    assert closed and "dead" in closed[0].reason
    assert [e for e in net.nodes[0].take(ev.CircuitClosed) if e.circ == c]
    # the link to node 2 stays up: it keeps talking
    assert net.chan[(0, 2)] in net.nodes[0].node.channels
