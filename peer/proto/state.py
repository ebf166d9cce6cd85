"""What the parts of one onion node share (sans-I/O): its configuration, its channels, the
circuit table with the (channel, circuit id) routes into it, the events not yet popped,
the time of the input being handled and the randomness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from peer.proto import events as ev
from peer.proto.channel import Channel
from peer.proto.circuit import Circuit
from peer.proto.exitpolicy import ExitPolicy


@dataclass(frozen=True, slots=True)
class NodeConfig:
    exit_policy: ExitPolicy = field(default_factory=ExitPolicy.reject_all)
    #: When False the driver calls :meth:`OnionNode.stream_consumed` as the app reads, and
    #: stream SENDMEs wait for it (end-to-end back-pressure).
    auto_consume: bool = True
    #: Test only (DESIGN §11): emit :class:`~peer.proto.events.Observed` for the anonymity
    #: recorder.  Off by default: a log of who fetched what is a seizure risk.
    record: bool = False


@dataclass(eq=False, slots=True)
class NodeState:
    node_id: bytes
    rand: Callable[[int], bytes]
    config: NodeConfig
    channels: dict[int, Channel] = field(default_factory=dict)
    circuits: dict[int, Circuit] = field(default_factory=dict)
    #: (chan, circ_id) -> circuit handle, for every leg of every circuit
    route: dict[tuple[int, int], int] = field(default_factory=dict)
    events: list[ev.Event] = field(default_factory=list)
    now: float = 0.0
    next_handle: int = 1

    def new_handle(self) -> int:
        h = self.next_handle
        self.next_handle += 1
        return h

    def attach(self, chan: int, ch: Channel, circ_id: int, handle: int) -> None:
        """Route cells for ``circ_id`` on ``chan`` to circuit ``handle``."""
        self.route[(chan, circ_id)] = handle
        ch.circ_ids.add(circ_id)

    def channel_for_peer(
        self, *, node_id: bytes | None = None, ed25519_id: bytes | None = None, rsa_id: bytes | None = None
    ) -> int | None:
        """An open channel whose proven identity matches every identity given."""
        if node_id is None and ed25519_id is None and rsa_id is None:
            return None
        for chan, ch in self.channels.items():
            p = ch.peer
            if p is None or ch.state.value != "open":
                continue
            if node_id is not None and p.node_id != node_id:
                continue
            if ed25519_id is not None and p.ed25519_id != ed25519_id:
                continue
            if rsa_id is not None and p.rsa_id != rsa_id:
                continue
            return chan
        return None
