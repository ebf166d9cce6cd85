"""Circuit, hop and stream state for the onion core (tor-spec §5-7), sans-I/O.

Plain state holders: an :class:`Edge` is a hop's crypto and streams on top of its circuit
window, a :class:`Stream` its send buffer and end on top of its stream window (the window
rules are in :mod:`peer.proto.flow`).  The parts of :mod:`peer.proto.node` do the dispatch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from peer.crypto.ntor import NtorClientState
from peer.crypto.relaycrypto import RelayCrypto
from peer.proto.flow import CircuitWindow, StreamWindow
from peer.wire.linkspec import LinkSpec

MAX_RELAY_EARLY = 8
MAX_HOPS = 8
#: Stream send buffer thresholds (bytes) for StreamWritable.
SEND_HIGH_WATER = 256 * 1024
SEND_LOW_WATER = 64 * 1024


class CircuitState(enum.Enum):
    BUILDING = "building"
    OPEN = "open"
    CLOSED = "closed"


class StreamState(enum.Enum):
    CONNECTING = "connecting"  # BEGIN sent (OP) or connect in progress (exit)
    OPEN = "open"
    HALF_CLOSED = "half-closed"  # we sent END; cells in flight for it are still accepted
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HopSpec:
    """Who to extend to: the ntor ID (NodeID between peers, RSA SHA-1 id for tor relays),
    its ntor onion key, and the link specifiers to put in EXTEND2."""

    node_id: bytes
    ntor_key: bytes
    link_specs: tuple[LinkSpec, ...] = ()


@dataclass(slots=True)
class Stream(StreamWindow):
    """A stream at one of its edges; its windows come from :class:`StreamWindow`."""

    stream_id: int
    state: StreamState
    sendbuf: bytearray = field(default_factory=bytearray)
    end_after_flush: bool = False
    end_reason: int = 6  # END reason DONE
    #: DATA for ordinary streams, DB_DATA for ORDB streams (both count against the windows)
    data_cmd: int = 2
    #: how the stream is ended from our side: END (with end_reason) or DB_END (with end_body)
    end_cmd: int = 3
    end_body: bytes = b""
    blocked_writer: bool = False  # a writer waits for StreamWritable


@dataclass(slots=True)
class Edge(CircuitWindow):
    """One end of a circuit's flow control: the OP's view of one hop, or an OR's own hop.

    ``crypto`` is this hop's tor1 state; the windows (:class:`CircuitWindow`) count DATA cells
    between the OP and this hop.
    """

    crypto: RelayCrypto
    streams: dict[int, Stream] = field(default_factory=dict)


@dataclass(slots=True)
class OriginCircuit:
    """A circuit this node built as an OP."""

    handle: int
    chan: int
    circ_id: int
    path: list[HopSpec]
    hops: list[Edge] = field(default_factory=list)
    state: CircuitState = CircuitState.BUILDING
    pending: NtorClientState | None = None
    early_sent: int = 0
    next_stream_id: int = 1

    @property
    def is_origin(self) -> bool:
        return True


@dataclass(slots=True)
class RelayCircuit:
    """A circuit this node relays as an OR (or ends, as the last hop)."""

    handle: int
    prev_chan: int
    prev_id: int
    edge: Edge
    next_chan: int | None = None
    next_id: int | None = None
    extending: bool = False
    early_received: int = 0
    state: CircuitState = CircuitState.OPEN

    @property
    def is_origin(self) -> bool:
        return False


Circuit = OriginCircuit | RelayCircuit
