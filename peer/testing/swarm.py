"""N full peers (OP + OR) in one process over in-memory links: the test and demo harness.

Every peer runs the real onion core and the real asyncio driver; only the transport is
in memory.  Links are made explicitly (``connect``) or as a full mesh.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.net.driver import NodeDriver, OnionStream
from peer.net.handshake import PeerKeys, peer_handshake
from peer.proto.channel import LivenessConfig
from peer.proto.circuit import HopSpec
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode
from peer.transport.memory import MemoryLink, memory_link_pair


@dataclass(eq=False)
class SwarmPeer:
    index: int
    keys: PeerKeys
    node: OnionNode
    driver: NodeDriver
    chans: dict[int, int] = field(default_factory=dict)  # peer index -> channel
    links: dict[int, MemoryLink] = field(default_factory=dict)

    @property
    def hop(self) -> HopSpec:
        return HopSpec(self.keys.node_id, self.keys.ntor.public, self.keys.link_specs())


class Swarm:
    """A set of in-process peers; use ``async with Swarm.start(6) as swarm``."""

    def __init__(self, peers: list[SwarmPeer], liveness: LivenessConfig | None) -> None:
        self.peers = peers
        self._liveness = liveness

    @classmethod
    async def start(
        cls,
        n: int,
        *,
        exit_policy: ExitPolicy | None = None,
        seed: int | None = None,
        mesh: bool = True,
        liveness: LivenessConfig | None = None,
        auto_consume: bool = False,
    ) -> Swarm:
        randbytes: Callable[[int], bytes] = random.Random(seed).randbytes if seed is not None else os.urandom
        peers: list[SwarmPeer] = []
        for i in range(n):
            keys = PeerKeys.generate(randbytes)
            node = OnionNode(
                node_id=keys.node_id,
                ntor_keys={keys.ntor.public: keys.ntor},
                randbytes=randbytes,
                config=NodeConfig(
                    exit_policy=exit_policy or ExitPolicy.reject_all(), auto_consume=auto_consume
                ),
            )
            peers.append(SwarmPeer(i, keys, node, NodeDriver(node)))
        swarm = cls(peers, liveness)
        if mesh:
            await asyncio.gather(*(swarm.connect(i, j) for i in range(n) for j in range(i + 1, n)))
        return swarm

    async def connect(self, i: int, j: int) -> None:
        a, b = self.peers[i], self.peers[j]
        la, lb = memory_link_pair()
        a.links[j], b.links[i] = la, lb
        ca = a.driver.add_link(la, peer_handshake(a.keys, la, time.time), liveness=self._liveness)
        cb = b.driver.add_link(lb, peer_handshake(b.keys, lb, time.time), liveness=self._liveness)
        a.chans[j], b.chans[i] = ca, cb
        await asyncio.gather(a.driver.wait_open(ca), b.driver.wait_open(cb))

    async def build_circuit(self, op: int, path: list[int], timeout: float = 30.0) -> int:
        origin = self.peers[op]
        return await origin.driver.build_circuit(
            origin.chans[path[0]], [self.peers[k].hop for k in path], timeout=timeout
        )

    async def open_stream(self, op: int, circ: int, host: str, port: int) -> OnionStream:
        return await self.peers[op].driver.open_stream(circ, host, port)

    async def close(self) -> None:
        for p in self.peers:
            await p.driver.close()

    async def __aenter__(self) -> Swarm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
