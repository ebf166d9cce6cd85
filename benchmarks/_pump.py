"""A tiny synchronous pump between sans-I/O OnionNodes, shared by the benchmarks."""

from __future__ import annotations

import random
from dataclasses import dataclass

from peer.net.handshake import PeerKeys, handshake_for
from peer.proto.circuit import HopSpec
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode

WALL = 1_800_000_000.0


@dataclass(eq=False)
class BNode:
    keys: PeerKeys
    node: OnionNode

    @property
    def hop(self) -> HopSpec:
        return HopSpec(self.keys.node_id, self.keys.ntor.public, self.keys.link_specs())


class Mesh:
    """Nodes joined pairwise by in-memory channels; ``pump()`` moves bytes until quiet."""

    def __init__(self, n: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.nodes: list[BNode] = []
        for _ in range(n):
            keys = PeerKeys.generate(self.rng.randbytes)
            node = OnionNode(
                node_id=keys.node_id,
                ntor_keys={keys.ntor.public: keys.ntor},
                randbytes=self.rng.randbytes,
                config=NodeConfig(exit_policy=ExitPolicy.parse("accept 127.0.0.1:*")),
            )
            self.nodes.append(BNode(keys, node))
        self.wires: dict[tuple[int, int], tuple[int, int]] = {}
        self.chan: dict[tuple[int, int], int] = {}
        for i in range(n):
            for j in range(i + 1, n):
                self._connect(i, j)

    def _connect(self, i: int, j: int) -> None:
        a, b = self.nodes[i], self.nodes[j]
        fa, fb = self.rng.randbytes(32), self.rng.randbytes(32)
        ca = a.node.add_channel(
            initiator=True, handshake=handshake_for(a.keys, fa, lambda: fb, lambda: WALL), now=0
        )
        cb = b.node.add_channel(
            initiator=False, handshake=handshake_for(b.keys, fb, lambda: fa, lambda: WALL), now=0
        )
        self.wires[(i, ca)], self.wires[(j, cb)] = (j, cb), (i, ca)
        self.chan[(i, j)], self.chan[(j, i)] = ca, cb
        self.pump()

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for (i, ci), (j, cj) in self.wires.items():
                for msg in self.nodes[i].node.pop_messages(ci, 31 * 514):
                    self.nodes[j].node.channel_receive(cj, msg, 0.0)
                    moved = True
        for t in self.nodes:
            t.node.pop_events()
