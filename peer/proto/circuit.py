"""Circuit, hop and stream state for the onion core (tor-spec §5-7), sans-I/O.

These are plain state holders with the window arithmetic; :mod:`peer.proto.node` does
the dispatch.  Flow control follows tor-spec §7.3-7.4 with authenticated SENDME v1:
circuit windows start at 1000 and move by 100, stream windows start at 500 and move by 50.
The side that packages DATA remembers its running digest after every 100th DATA cell;
the receiving side echoes the digest of its receiving direction after that same cell.
A circuit SENDME whose digest does not match, or a window pushed past its start,
tears the circuit down.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from peer.crypto.ntor import NtorClientState
from peer.crypto.relaycrypto import RelayCrypto
from peer.wire.linkspec import LinkSpec

CIRCWINDOW_START = 1000
CIRCWINDOW_INCREMENT = 100
STREAMWINDOW_START = 500
STREAMWINDOW_INCREMENT = 50
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
class Stream:
    stream_id: int
    state: StreamState
    package_window: int = STREAMWINDOW_START
    deliver_window: int = STREAMWINDOW_START
    sendbuf: bytearray = field(default_factory=bytearray)
    end_after_flush: bool = False
    end_reason: int = 6  # END reason DONE
    #: DATA for ordinary streams, DB_DATA for ORDB streams (both count against the windows)
    data_cmd: int = 2
    #: how the stream is ended from our side: END (with end_reason) or DB_END (with end_body)
    end_cmd: int = 3
    end_body: bytes = b""
    blocked_writer: bool = False  # a writer waits for StreamWritable
    unacked_consumed: int = 0  # DATA cells consumed by the app and not yet acknowledged


@dataclass(slots=True)
class Edge:
    """One end of a circuit's flow control: the OP's view of one hop, or an OR's own hop.

    ``crypto`` is this hop's tor1 state; windows count DATA cells between the OP and this hop.
    """

    crypto: RelayCrypto
    package_window: int = CIRCWINDOW_START
    deliver_window: int = CIRCWINDOW_START
    data_sent: int = 0
    data_received: int = 0
    sendme_expected: deque[bytes] = field(default_factory=deque)
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
