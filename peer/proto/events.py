"""Events the sans-I/O onion core returns to its driver (named in the past tense, as in aioquic).

Circuits are named by ``circ`` handles (small ints unique within one node), streams
by ``(circ, stream_id)``.  Channels are named by ``chan`` handles.  :class:`Observed` is the
one event for tests only: it exists only while ``NodeConfig.record`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass

from peer.proto.peerinfo import PeerInfo


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    chan: int
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    chan: int
    reason: str


@dataclass(frozen=True, slots=True)
class LinkMessageReceived:
    """A private link-level cell (DB_FIND_PEER, DB_INTRODUCE, ...) for the runtime."""

    chan: int
    message: object


@dataclass(frozen=True, slots=True)
class CircuitBuilt:
    """An origin circuit reached its requested length (after each EXTENDED2 too: ``hops``)."""

    circ: int
    hops: int


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    circ: int
    reason: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class StreamConnected:
    circ: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamDataReceived:
    circ: int
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The stream is over: the remote sent END (``remote=True``) or the circuit closed."""

    circ: int
    stream_id: int
    reason: int
    remote: bool = True


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """A stream's send buffer drained below its low-water mark: the writer may send more."""

    circ: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class ExitConnectRequested:
    """A BEGIN at this node (the last hop) that the exit policy allows: connect and answer."""

    circ: int
    stream_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RelayMessageReceived:
    """A recognised relay cell with a private command (the DB_* block) for the runtime."""

    circ: int
    hop: int  # at an OP: the hop it came from; at an OR: -1
    command: int
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Observed:
    """Test only (DESIGN §11): one record for the anonymity recorder, emitted only when
    ``NodeConfig.record`` is on; the driver writes :meth:`record` to its ``Recorder``.

    ``kind`` is ``"circuit"`` (a circuit through us and its neighbours), ``"extend"`` (we
    extended a relayed circuit) or ``"payload"`` (a relay cell recognised here); ``fields``
    are the record's other keys and values, in order.
    """

    kind: str
    fields: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, kind: str, **fields: object) -> Observed:
        return cls(kind, tuple(fields.items()))

    def record(self) -> dict[str, object]:
        return {"kind": self.kind, **dict(self.fields)}


Event = (
    ChannelOpened
    | ChannelClosed
    | LinkMessageReceived
    | CircuitBuilt
    | CircuitClosed
    | StreamConnected
    | StreamDataReceived
    | StreamEnded
    | StreamWritable
    | ExitConnectRequested
    | RelayMessageReceived
    | Observed
)
