"""Routing the onion core's circuit events to their owner (one lookup, no handler tried in turn).

A circuit we build belongs to whoever asked for it (a download, the holder, the ORDB's forwarding);
a stream can be owned apart from its circuit (the holder serving on a requester's stream that ends
at our ORDB).  Circuits that end here and belong to nobody in particular go to the default owner
(the ORDB role: circuits that other peers build to us carry ORDB business only).
"""

from __future__ import annotations

from collections.abc import Callable

from peer.proto import events as ev

Handler = Callable[[ev.Event], object]
CircuitEvent = ev.RelayMessageReceived | ev.StreamWritable | ev.CircuitClosed


class EventRoutes:
    """Who owns which circuit and stream; :meth:`route` delivers one event to its owner(s)."""

    def __init__(self, default: Handler) -> None:
        self._default = default
        self._circuits: dict[int, Handler] = {}
        self._streams: dict[tuple[int, int], Handler] = {}

    def own_circuit(self, circ: int, owner: Handler) -> None:
        self._circuits[circ] = owner

    def own_stream(self, circ: int, stream_id: int, owner: Handler) -> None:
        self._streams[(circ, stream_id)] = owner

    def release_stream(self, circ: int, stream_id: int) -> None:
        self._streams.pop((circ, stream_id), None)

    def owner_of(self, circ: int) -> Handler | None:
        return self._circuits.get(circ)

    def route(self, e: CircuitEvent) -> None:
        """Deliver ``e`` to the owner of its stream, else of its circuit, else the default owner.
        A closed circuit is told to its owner and to each distinct owner of one of its streams,
        then forgotten."""
        if isinstance(e, ev.CircuitClosed):
            owners: list[Handler] = [self._circuits.pop(e.circ, self._default)]
            for key in [k for k in self._streams if k[0] == e.circ]:
                h = self._streams.pop(key)
                if h not in owners:
                    owners.append(h)
            for h in owners:
                h(e)
            return
        owner = self._streams.get((e.circ, e.stream_id)) or self._circuits.get(e.circ) or self._default
        owner(e)

    def __len__(self) -> int:
        return len(self._circuits) + len(self._streams)
