"""A memory swarm of 6 full peers (real driver, real asyncio, in-memory links).

Acceptance for the onion core: 3-hop and 5-hop circuits; 20 MB each way through a 3-hop
circuit to a TCP echo server on 127.0.0.1, intact; never more than 1,000 unacknowledged
DATA cells on a circuit; a forged SENDME digest tears the circuit down.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from peer.net.driver import CircuitError, StreamError
from peer.proto.circuit import OriginCircuit, RelayCircuit
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.flow import CIRCWINDOW_START
from peer.testing.swarm import Swarm
from peer.wire.commands import RelayCommand
from peer.wire.relay import Sendme

MB = 1_000_000


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(6, exit_policy=ExitPolicy.parse("accept 127.0.0.1:*"))
    yield s
    await s.close()


async def test_three_and_five_hop_circuits(swarm: Swarm) -> None:
    c3 = await swarm.build_circuit(0, [1, 2, 3])
    c5 = await swarm.build_circuit(0, [1, 2, 3, 4, 5])
    node = swarm.peers[0].node
    assert len(node.circuits[c3].hops) == 3  # type: ignore[union-attr]
    assert len(node.circuits[c5].hops) == 5  # type: ignore[union-attr]
    # every relay on the 5-hop path holds exactly one piece of it
    for k in (1, 2, 3, 4, 5):
        assert len(swarm.peers[k].node.circuits) == 2 if k <= 3 else 1


async def test_20mb_each_way_through_three_hops(swarm: Swarm, echo_port: int) -> None:
    circ = await swarm.build_circuit(0, [1, 2, 3])
    stream = await swarm.open_stream(0, circ, "127.0.0.1", echo_port)
    data = os.urandom(20 * MB)
    worst = [0, 0]
    op_circ = swarm.peers[0].node.circuits[circ]
    assert isinstance(op_circ, OriginCircuit)
    exit_node = swarm.peers[3].node
    done = asyncio.Event()

    async def watch() -> None:  # sample the unacknowledged DATA cells both ways
        while not done.is_set():
            xc = next((c for c in exit_node.circuits.values() if isinstance(c, RelayCircuit)), None)
            if xc is not None:
                worst[0] = max(worst[0], op_circ.hops[-1].data_sent - xc.edge.data_received)
                worst[1] = max(worst[1], xc.edge.data_sent - op_circ.hops[-1].data_received)
            await asyncio.sleep(0)

    async def write() -> None:
        for i in range(0, len(data), 256 * 1024):
            await stream.write(data[i : i + 256 * 1024])

    watcher = asyncio.create_task(watch())
    writer = asyncio.create_task(write())
    h = hashlib.sha256()
    n = 0
    while n < len(data):
        chunk = await stream.read()
        assert chunk, "stream ended early"
        h.update(chunk)
        n += len(chunk)
    await writer
    done.set()
    await watcher
    assert n == len(data)
    assert h.digest() == hashlib.sha256(data).digest()
    assert 0 < worst[0] <= CIRCWINDOW_START and 0 < worst[1] <= CIRCWINDOW_START
    await stream.close()


async def test_forged_sendme_tears_the_circuit_down(swarm: Swarm, echo_port: int) -> None:
    circ = await swarm.build_circuit(0, [1, 2, 3])
    stream = await swarm.open_stream(0, circ, "127.0.0.1", echo_port)
    exit_node = swarm.peers[3].node
    xc = next(h for h, c in exit_node.circuits.items() if isinstance(c, RelayCircuit))
    await stream.write(b"a" * 498 * 100)  # the OP now expects one authenticated SENDME
    await asyncio.sleep(0.05)
    exit_node.send_relay(xc, RelayCommand.SENDME, 0, Sendme(1, b"\xee" * 20).encode())
    swarm.peers[3].driver.flush()
    with pytest.raises((StreamError, CircuitError)):
        for _ in range(200):
            if not await stream.read():
                raise StreamError("ended")
    assert circ not in swarm.peers[0].node.circuits


async def test_stream_to_a_closed_port_fails_clearly(swarm: Swarm) -> None:
    circ = await swarm.build_circuit(0, [1, 2])
    with pytest.raises(StreamError, match="CONNECTREFUSED"):
        await swarm.open_stream(0, circ, "127.0.0.1", 1)
