"""A synchronous network of sans-I/O OnionNodes: no asyncio, no sockets, a fake clock.

``Net.pump()`` moves queued messages between connected channels until nothing moves,
like aioquic's ``roundtrip`` helpers.  Link fingerprints are random bytes standing in
for DTLS certificate fingerprints.  With ``record=True`` the nodes emit the anonymity
recorder's :class:`~peer.proto.events.Observed` records, which ``pump`` hands to each
node's ``recorder`` as the driver would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.net.handshake import PeerKeys, handshake_for
from peer.proto import events as ev
from peer.proto.channel import LivenessConfig
from peer.proto.circuit import HopSpec
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode

WALL = 1_800_000_000.0


@dataclass(eq=False)
class TNode:
    keys: PeerKeys
    node: OnionNode
    events: list[ev.Event] = field(default_factory=list)
    #: gets the node's Observed records (``Net(record=True)``), like the driver's Recorder
    recorder: Callable[[dict[str, object]], None] | None = None

    @property
    def hop(self) -> HopSpec:
        return HopSpec(self.keys.node_id, self.keys.ntor.public, self.keys.link_specs())

    def take(self, kind: type) -> list:
        """Remove and return the collected events of one type."""
        got = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return got


class Net:
    def __init__(
        self,
        n: int,
        seed: int = 1,
        *,
        exit_policy: str = "accept 127.0.0.1:*",
        liveness: LivenessConfig | None = None,
        record: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.liveness = liveness
        self.nodes: list[TNode] = []
        for _ in range(n):
            keys = PeerKeys.generate(self.rng.randbytes)
            node = OnionNode(
                node_id=keys.node_id,
                ntor_keys={keys.ntor.public: keys.ntor},
                randbytes=self.rng.randbytes,
                config=NodeConfig(exit_policy=ExitPolicy.parse(exit_policy), record=record),
            )
            self.nodes.append(TNode(keys, node))
        # (node index, chan) -> (node index, chan)
        self.wires: dict[tuple[int, int], tuple[int, int]] = {}
        self.chan: dict[tuple[int, int], int] = {}  # (i, j) -> i's channel to j
        self.tap: Callable[[int, int, bytes], bytes | None] | None = None

    def connect(self, i: int, j: int, *, fp_seen_by_i: bytes | None = None) -> tuple[int, int]:
        a, b = self.nodes[i], self.nodes[j]
        fa, fb = self.rng.randbytes(32), self.rng.randbytes(32)
        seen_a = fp_seen_by_i if fp_seen_by_i is not None else fb
        ca = a.node.add_channel(
            initiator=True,
            handshake=handshake_for(a.keys, fa, lambda: seen_a, lambda: WALL),
            now=self.now,
            liveness=self.liveness,
        )
        cb = b.node.add_channel(
            initiator=False,
            handshake=handshake_for(b.keys, fb, lambda: fa, lambda: WALL),
            now=self.now,
            liveness=self.liveness,
        )
        self.wires[(i, ca)] = (j, cb)
        self.wires[(j, cb)] = (i, ca)
        self.chan[(i, j)], self.chan[(j, i)] = ca, cb
        self.pump()
        return ca, cb

    def mesh(self) -> None:
        for i in range(len(self.nodes)):
            for j in range(i + 1, len(self.nodes)):
                self.connect(i, j)

    def pump(self, max_rounds: int = 100_000) -> None:
        for _ in range(max_rounds):
            moved = False
            for (i, ci), (j, cj) in list(self.wires.items()):
                src = self.nodes[i].node
                for msg in src.pop_messages(ci):
                    if self.tap is not None:
                        out = self.tap(i, ci, msg)
                        if out is None:
                            continue
                        msg = out
                    if (j, cj) in self.wires:
                        self.nodes[j].node.channel_receive(cj, msg, self.now)
                    moved = True
            for (i, ci), (j, cj) in list(self.wires.items()):
                # a channel closed at one end: the transport goes, the other end learns it
                if ci not in self.nodes[i].node.channels:
                    del self.wires[(i, ci)]
                    if cj in self.nodes[j].node.channels:
                        self.nodes[j].node.channel_lost(cj, "link closed by the other side")
                        moved = True
            for t in self.nodes:
                for e in t.node.pop_events():
                    if not isinstance(e, ev.Observed):
                        t.events.append(e)
                    elif t.recorder is not None:
                        t.recorder(e.record())
            if not moved:
                return
        raise AssertionError("network did not settle")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for t in self.nodes:
            t.node.handle_timer(self.now)
        self.pump()

    def build(self, op: int, path: list[int]) -> int:
        t = self.nodes[op]
        handle = t.node.build_circuit(self.chan[(op, path[0])], [self.nodes[k].hop for k in path])
        self.pump()
        built = [e for e in t.take(ev.CircuitBuilt) if e.circ == handle]
        assert built, f"circuit {path} was not built: {t.events}"
        return handle

    def open_exit_stream(self, op: int, circ: int, exit_index: int, port: int = 80) -> tuple[int, int]:
        """Open a stream from ``op`` and accept it at the exit; returns (stream_id, exit circ handle)."""
        sid = self.nodes[op].node.open_stream(circ, "127.0.0.1", port)
        self.pump()
        req = self.nodes[exit_index].take(ev.ExitConnectRequested)
        assert req, "no BEGIN reached the exit"
        self.nodes[exit_index].node.exit_connected(req[-1].circ, req[-1].stream_id, b"\x7f\x00\x00\x01")
        self.pump()
        assert self.nodes[op].take(ev.StreamConnected)
        return sid, req[-1].circ
