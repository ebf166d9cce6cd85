"""Events of the onion core go to their owner only (peer/net/routing.py)."""

from __future__ import annotations

from peer.net.routing import EventRoutes
from peer.proto import events as ev


class Sink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[ev.Event] = []

    def __call__(self, e: ev.Event) -> None:
        self.got.append(e)


def msg(circ: int, sid: int = 1) -> ev.RelayMessageReceived:
    return ev.RelayMessageReceived(circ=circ, hop=2, command=0, stream_id=sid, data=b"")


def test_an_owned_circuit_reaches_its_owner_only() -> None:
    ordb, download, holder = Sink("ordb"), Sink("download"), Sink("holder")
    routes = EventRoutes(default=ordb)
    routes.own_circuit(7, download)
    routes.own_circuit(8, holder)
    routes.route(msg(7))
    routes.route(ev.StreamWritable(8, 3))
    assert download.got == [msg(7)]
    assert holder.got == [ev.StreamWritable(8, 3)]
    assert ordb.got == []


def test_a_circuit_nobody_built_goes_to_the_default_owner() -> None:
    ordb, download = Sink("ordb"), Sink("download")
    routes = EventRoutes(default=ordb)
    routes.own_circuit(7, download)
    routes.route(msg(9))
    assert ordb.got == [msg(9)] and download.got == []


def test_a_stream_owner_comes_before_its_circuit_owner() -> None:
    ordb, holder = Sink("ordb"), Sink("holder")
    routes = EventRoutes(default=ordb)
    routes.own_stream(9, 4, holder)  # the holder serves on a requester's stream that ends at our ORDB
    routes.route(ev.StreamWritable(9, 4))
    routes.route(ev.StreamWritable(9, 5))
    assert holder.got == [ev.StreamWritable(9, 4)]
    assert ordb.got == [ev.StreamWritable(9, 5)]
    routes.release_stream(9, 4)
    routes.route(ev.StreamWritable(9, 4))
    assert ordb.got[-1] == ev.StreamWritable(9, 4) and len(holder.got) == 1


def test_a_closed_circuit_is_told_to_each_owner_once_then_forgotten() -> None:
    ordb, holder, download = Sink("ordb"), Sink("holder"), Sink("download")
    routes = EventRoutes(default=ordb)
    routes.own_stream(9, 4, holder)
    routes.own_stream(9, 6, holder)
    routes.own_circuit(7, download)
    closed9, closed7 = ev.CircuitClosed(9, 0), ev.CircuitClosed(7, 0)
    routes.route(closed9)
    routes.route(closed7)
    assert ordb.got == [closed9]
    assert holder.got == [closed9]  # once, though it owned two streams there
    assert download.got == [closed7]
    assert len(routes) == 0
    routes.route(msg(7))  # a reused circuit id is nobody's until it is owned again
    assert ordb.got[-1] == msg(7) and download.got == [closed7]
