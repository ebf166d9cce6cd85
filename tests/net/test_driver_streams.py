"""The asyncio driver (peer.net.driver): streams through a real circuit to a real TCP server on
127.0.0.1, the exit side's guard and failures, and links that fail under it.

Three swarm peers (real onion core and driver over in-memory links); peer 0 builds 0 -> 1 -> 2,
peer 2 is the exit.  Its node accepts any destination: the driver's own loopback-only guard is
what refuses the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from peer.errors import LinkClosed
from peer.net.driver import CircuitError, NodeDriver, OnionStream, StreamError, _loopback_only
from peer.net.handshake import handshake_for, peer_handshake
from peer.proto import events as ev
from peer.proto.exitpolicy import ExitPolicy
from peer.testing.swarm import Swarm
from peer.transport.memory import memory_link_pair
from peer.wire.commands import CellCommand, EndReason
from peer.wire.linkcells import LinkCloseCode, LinkClosing

Server = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(3, exit_policy=ExitPolicy.parse("accept *:*"))
    yield s
    await s.close()


class Tcp:
    """A TCP server on 127.0.0.1 running ``handler`` for each connection."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, handler: Server) -> int:
        self.server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port


@pytest.fixture
async def tcp() -> AsyncIterator[Tcp]:
    t = Tcp()
    yield t
    if t.server is not None:
        t.server.close()
        await t.server.wait_closed()


async def stream_to(swarm: Swarm, host: str, port: int) -> OnionStream:
    circ = await swarm.build_circuit(0, [1, 2])
    return await swarm.open_stream(0, circ, host, port)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


# ---- streams -------------------------------------------------------------------------------------


async def test_reads_take_what_is_asked_and_end_cleanly(swarm: Swarm, tcp: Tcp) -> None:
    async def say_and_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello world")
        await w.drain()
        w.close()

    s = await stream_to(swarm, "127.0.0.1", await tcp.start(say_and_close))
    assert await s.read(5) == b"hello"
    assert await s.readexactly(6) == b" world"
    assert await s.read() == b""  # a clean end (END DONE)
    assert await s.read() == b""  # and it stays ended
    with pytest.raises(StreamError, match="stream closed"):
        await s.write(b"too late")


async def test_readexactly_reports_a_stream_that_ended_early(swarm: Swarm, tcp: Tcp) -> None:
    async def short(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"abc")
        await w.drain()
        w.close()

    s = await stream_to(swarm, "127.0.0.1", await tcp.start(short))
    with pytest.raises(StreamError, match="ended early"):
        await s.readexactly(10)


class Waiting:
    """A server that reads ``n`` bytes, then waits for more until the exit closes the connection."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.first = b""
        self.rest: bytes | None = None
        self.reading = asyncio.Event()

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.first = await r.readexactly(self.n)
        self.reading.set()
        self.rest = await r.read()
        w.close()


async def test_closing_our_stream_closes_the_exits_connection(swarm: Swarm, tcp: Tcp) -> None:
    """END closes a stream completely (docs/circuits.md; an OP's END says MISC): the exit passes
    on what came before it, then closes its TCP connection, even to a server that waits for more."""
    server = Waiting(1000)
    s = await stream_to(swarm, "127.0.0.1", await tcp.start(server))
    await s.write(b"x" * 1000)
    await s.close()
    await until(lambda: server.rest is not None)
    assert server.first == b"x" * 1000 and server.rest == b""


async def test_a_closed_circuit_closes_the_exits_connections(swarm: Swarm, tcp: Tcp) -> None:
    server = Waiting(6)
    s = await stream_to(swarm, "127.0.0.1", await tcp.start(server))
    await s.write(b"before")
    await server.reading.wait()
    swarm.peers[0].driver.destroy_circuit(s.circ)
    await until(lambda: server.rest is not None)
    assert server.first == b"before" and server.rest == b""


async def test_a_reset_by_the_server_is_an_error_with_its_reason(swarm: Swarm, tcp: Tcp) -> None:
    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(4)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # RST, not FIN

    s = await stream_to(swarm, "127.0.0.1", await tcp.start(reset))
    await s.write(b"ping")
    with pytest.raises(StreamError) as info:
        await s.read()
    assert info.value.end_reason == EndReason.CONNRESET
    with pytest.raises(StreamError):  # the error stays
        await s.read()


async def test_the_exit_driver_refuses_what_its_guard_refuses(swarm: Swarm) -> None:
    refused = "127.0.0.9"  # loopback, so a broken refusal could only reach this machine
    swarm.peers[2].driver.allow_exit_to = lambda name, address, port: address != refused
    circ = await swarm.build_circuit(0, [1, 2])
    with pytest.raises(StreamError) as info:
        await swarm.open_stream(0, circ, refused, 80)
    assert info.value.end_reason == EndReason.EXITPOLICY
    assert "EXITPOLICY" in str(info.value)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),  # a value for the pure check below: never connected to
        ("2001:db8::1", False),
        ("localhost", False),  # a name is never an address: the guard sees what it resolved to
    ],
)
def test_the_default_exit_guard_allows_loopback_only(swarm: Swarm, address: str, allowed: bool) -> None:
    """A pure check of the driver's default guard: nothing is connected to."""
    assert swarm.peers[2].driver.allow_exit_to is _loopback_only
    assert _loopback_only("asked", address, 80) is allowed


@pytest.mark.parametrize("spelling", ["localhost", "2130706433", "0x7f000001", "127.1", "0177.0.0.1"])
async def test_every_spelling_of_a_rejected_address_is_refused_after_resolution(
    swarm: Swarm, tcp: Tcp, spelling: str
) -> None:
    """The policy rejects 127.0.0.0/8 and accepts everything else: the BEGIN's name passes the
    name check, and what it resolves to is refused; nothing is connected to."""
    policy = ExitPolicy.parse("reject 127.0.0.0/8:*, accept *:*")
    assert policy.allows(spelling, 80)  # as a name, before resolution
    seen: list[str] = []

    def guard(name: str, address: str, port: int) -> bool:
        seen.append(address)
        return policy.allows_address(name, address, port)

    swarm.peers[2].driver.allow_exit_to = guard
    connected: list[int] = []

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        connected.append(1)
        w.close()

    port = await tcp.start(sink)
    circ = await swarm.build_circuit(0, [1, 2])
    with pytest.raises(StreamError) as info:
        await swarm.open_stream(0, circ, spelling, port)
    assert info.value.end_reason == EndReason.EXITPOLICY
    assert seen and all(ipaddress.ip_address(a).is_loopback for a in seen) and connected == []


async def test_localhost_is_a_loopback_destination(swarm: Swarm, tcp: Tcp) -> None:
    async def hi(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hi")
        await w.drain()
        w.close()

    s = await stream_to(swarm, "localhost", await tcp.start(hi))
    assert await s.readexactly(2) == b"hi"


async def test_a_stream_on_no_circuit_is_a_circuit_error(swarm: Swarm) -> None:
    with pytest.raises(CircuitError):
        await swarm.peers[0].driver.open_stream(9999, "127.0.0.1", 80)


async def test_a_stream_not_answered_in_time_is_closed(swarm: Swarm, tcp: Tcp) -> None:
    server = Waiting(0)  # accepts, then waits for data or for the exit to close the connection
    port = await tcp.start(server)
    circ = await swarm.build_circuit(0, [1, 2])
    with pytest.raises(StreamError, match="timed out"):
        await swarm.peers[0].driver.open_stream(circ, "127.0.0.1", port, timeout=0)
    await until(lambda: server.rest is not None)  # our END reached the exit: it let go
    assert server.rest == b""
    assert circ in swarm.peers[0].node.circuits  # the circuit stays usable
    server2, tcp2 = Waiting(2), Tcp()
    try:
        s = await swarm.open_stream(0, circ, "127.0.0.1", await tcp2.start(server2))
        await s.write(b"ok")
        await server2.reading.wait()
    finally:
        assert tcp2.server is not None
        tcp2.server.close()


async def test_a_circuit_not_built_in_time_is_destroyed(swarm: Swarm) -> None:
    p = swarm.peers[0]
    with pytest.raises(CircuitError, match="timed out"):
        await p.driver.build_circuit(p.chans[1], [swarm.peers[1].hop, swarm.peers[2].hop], timeout=0)
    assert p.node.circuits == {}
    await until(lambda: not swarm.peers[1].node.circuits and not swarm.peers[2].node.circuits)


# ---- links ---------------------------------------------------------------------------------------


async def test_a_last_message_goes_out_before_the_channel_closes(swarm: Swarm) -> None:
    a, b = swarm.peers[0], swarm.peers[1]
    seen: list[ev.Event] = []
    b.driver.on_event = seen.append
    chan = a.chans[1]
    msg = LinkClosing(LinkCloseCode.ROTATED, "rotating")
    a.node.send_link_message(chan, CellCommand.DB_LINK_CLOSING, msg.encode_payload())
    await a.driver.close_channel_after_output(chan, "rotated")
    assert chan not in a.node.channels
    await until(lambda: any(isinstance(e, ev.ChannelClosed) for e in seen))
    got = [e.message for e in seen if isinstance(e, ev.LinkMessageReceived)]
    assert [(m.code, m.reason) for m in got] == [(LinkCloseCode.ROTATED, "rotating")]  # type: ignore[attr-defined]


async def test_closing_a_channel_that_is_gone_is_harmless(swarm: Swarm) -> None:
    a = swarm.peers[0]
    chan = a.chans[1]
    a.node.close_channel(chan, "gone")
    a.driver.flush()
    await a.driver.close_channel_after_output(chan, "again")
    with pytest.raises(CircuitError, match="no such channel"):
        await a.driver.wait_open(chan)


async def test_a_failing_transport_closes_only_its_channel(swarm: Swarm) -> None:
    a = swarm.peers[0]
    closed: list[ev.ChannelClosed] = []
    a.driver.on_event = lambda e: closed.append(e) if isinstance(e, ev.ChannelClosed) else None
    link = a.links[1]

    async def broken() -> bytes:
        raise RuntimeError("transport bug")

    link.recv = broken  # type: ignore[method-assign]
    with pytest.raises(CircuitError):  # peer 1 sends: our reader wakes up, reads again and fails
        await swarm.build_circuit(1, [0])
    await until(lambda: bool(closed))
    assert [(e.chan, e.reason) for e in closed] == [(a.chans[1], "link failed: RuntimeError")]
    assert a.chans[2] in a.node.channels  # the other link is untouched
    await swarm.build_circuit(0, [2])


async def test_a_link_that_refuses_to_send_closes_its_channel(swarm: Swarm) -> None:
    a = swarm.peers[0]
    closed: list[ev.ChannelClosed] = []
    a.driver.on_event = lambda e: closed.append(e) if isinstance(e, ev.ChannelClosed) else None

    async def refuse(data: bytes) -> None:
        raise LinkClosed("gone")

    a.links[1].send = refuse  # type: ignore[method-assign]
    with pytest.raises(CircuitError):
        await swarm.build_circuit(0, [1])
    assert [(e.chan, e.reason) for e in closed] == [(a.chans[1], "link closed")]


async def test_a_handshake_that_fails_is_reported_to_who_waits_for_it() -> None:
    async with await Swarm.start(2, mesh=False) as swarm:
        a, b = swarm.peers
        la, lb = memory_link_pair()
        # b certifies a fingerprint that is not its link's: a must refuse it
        wrong = handshake_for(b.keys, bytes(32), lambda: la.local_cert_fingerprint, time.time)
        ca = a.driver.add_link(la, peer_handshake(a.keys, la, time.time))
        cb = b.driver.add_link(lb, wrong)
        got = await asyncio.gather(
            a.driver.wait_open(ca, timeout=10), b.driver.wait_open(cb, timeout=10), return_exceptions=True
        )
        # a refused b's certificate; b saw a close the link before it opened
        assert [type(x) for x in got] == [CircuitError, CircuitError]
        assert all(str(x).startswith("link handshake failed") for x in got)
        assert ca not in a.node.channels and cb not in b.node.channels


async def test_close_stops_a_driver_with_live_links_and_timers() -> None:
    from peer.proto.channel import LivenessConfig

    async with await Swarm.start(2, liveness=LivenessConfig(keepalive=60, dead_after=120)) as swarm:
        a = swarm.peers[0]
        assert a.node.get_timer() is not None  # the keepalive timer is armed
        d: NodeDriver = a.driver
        await d.close()
        assert a.node.channels == {} and a.links[1].closed


async def test_a_peers_exit_checks_its_policy_on_what_a_name_resolved_to(tmp_path: Path) -> None:
    """The runtime gives the driver its exit policy's address check, not a guard that allows all:
    with ``accept *:*``, a name that resolves to loopback is still refused."""
    from peer.net.keystore import load_or_create_keys
    from peer.node import Peer, PeerConfig

    cfg = PeerConfig(data_dir=tmp_path, host="127.0.0.1", exit_policy=ExitPolicy.parse("accept *:*"))
    peer = Peer(cfg, load_or_create_keys(tmp_path, stable=False))
    guard = peer.driver.allow_exit_to
    assert not guard("localhost", "127.0.0.1", 80) and not guard("intranet", "10.0.0.1", 80)
    assert guard("example.com", "93.184.216.34", 80)  # a public address as a value: never connected to
