"""Link benchmark (issue 4 "Benchmark"; DESIGN §4 "Transport facts", §5 circuits).

Measures in one run, on loopback:

* link setup time: ``create_offer`` -> ``accept_offer`` -> ``complete``/``wait_open``
  (127.1.0.1 -> 127.2.0.1);
* the reference: raw aiortc, 16 KiB messages written straight to the RTCDataChannel
  (flow control on ``bufferedAmount`` only, as any correct aiortc sender must do);
* our ``WebRtcLink`` carrying one 514-byte cell per message;
* our ``WebRtcLink`` carrying packed messages of 31 cells (15,934 bytes);
* a 3-hop circuit (OP, two relays, an exit to a TCP sink on 127.0.0.1; peers on
  127.11-14.0.1), one stream moving 20 MB (5 MB with ``--quick``) one way, with links over
  WebRTC, over TLS and in memory ("direct"); each peer is a full OnionNode + NodeDriver
  with the peer link handshake, as in ``peer/testing/swarm.py``;

and prints each throughput with its ratio to the raw reference.  By default the
receiving end of the raw tests runs in a child process, and each circuit peer runs in its
own process (the direct circuit keeps its four peers in one process: memory links cannot
cross processes); ``--inprocess`` keeps everything in one event loop.  ``--quick``
finishes well within 60 s.  ``--json`` prints one JSON object instead of the table (the
circuit figures under ``three_hop``).  No figure is hard-coded.

Run: ``python -m benchmarks.links [--quick] [--json] [--inprocess]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from peer.net.driver import NodeDriver, OnionStream
from peer.net.handshake import PeerKeys, peer_handshake
from peer.proto.channel import HandshakeConfig
from peer.proto.circuit import HopSpec
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.node import NodeConfig, OnionNode
from peer.transport.base import Link
from peer.transport.iceconfig import WebRtcConfig
from peer.transport.memory import memory_link_pair
from peer.transport.tls import TlsLink, TlsServer, connect_tls, serve_tls
from peer.transport.webrtc import PendingOffer, WebRtcLink, accept_offer, create_offer
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecPeerNodeId

CELL = 514
PACKED = 31 * CELL  # 15,934 bytes
RAW = 16 * 1024
SENDER_ADDR = "127.1.0.1"
SINK_ADDR = "127.2.0.1"
OPEN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Results:
    mode: str
    rounds: int
    setup_links: int
    setup_ms_median: float
    setup_ms_p90: float
    bytes_per_run: int
    raw_16k_mbps: float
    cell_514_mbps: float
    packed_31_mbps: float
    cell_514_ratio: float
    packed_31_ratio: float
    #: every round's (raw, 514-byte, packed) MB/s, to show the spread
    per_round_mbps: tuple[tuple[float, float, float], ...]


# -- the receiving end ----------------------------------------------------------------------------


async def sink_receive(link: WebRtcLink, kind: str, total: int) -> int:
    """Receive ``total`` bytes; ``raw`` counts straight from aiortc's message event."""
    if kind == "raw":
        done = asyncio.Event()
        got = 0

        def on_message(data: bytes) -> None:
            nonlocal got
            got += len(data)
            if got >= total:
                done.set()

        link._channel.remove_all_listeners("message")
        link._channel.on("message", on_message)
        await done.wait()
        return got
    got = 0
    while got < total:
        got += len(await link.recv())
    return got


async def sink_main_async(conn: multiprocessing.connection.Connection) -> None:
    config = WebRtcConfig.loopback(SINK_ADDR)
    while True:
        request = await asyncio.to_thread(conn.recv)
        if request[0] == "quit":
            return
        _, offer, kind, total = request
        link, answer = await accept_offer(offer, config)
        conn.send(answer)
        await link.wait_open(OPEN_TIMEOUT)
        got = await sink_receive(link, kind, total)
        conn.send(("done", got))
        await link.wait_closed()


def sink_main(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(sink_main_async(conn))


# -- the sending end ------------------------------------------------------------------------------


async def send_raw(link: WebRtcLink, payload: bytes, count: int) -> None:
    channel = link._channel
    low = WebRtcConfig().send_buffer
    channel.bufferedAmountLowThreshold = low
    ready = asyncio.Event()
    channel.on("bufferedamountlow", ready.set)
    for _ in range(count):
        if channel.bufferedAmount > low:
            ready.clear()
            await ready.wait()
        channel.send(payload)


async def send_link(link: WebRtcLink, payload: bytes, count: int) -> None:
    for _ in range(count):
        await link.send(payload)


Transfer = Callable[[str, int, int], Awaitable[float]]


def make_process_transfer(conn: multiprocessing.connection.Connection) -> Transfer:
    config = WebRtcConfig.loopback(SENDER_ADDR)

    async def transfer(kind: str, size: int, total: int) -> float:
        count = -(-total // size)
        pending, offer = await create_offer(config)
        conn.send(("offer", offer, kind, count * size))
        answer = await asyncio.to_thread(conn.recv)
        link = await pending.complete(answer, OPEN_TIMEOUT)
        payload = bytes(size)
        start = time.perf_counter()
        await (send_raw if kind == "raw" else send_link)(link, payload, count)
        reply = await asyncio.to_thread(conn.recv)
        elapsed = time.perf_counter() - start
        assert reply == ("done", count * size), reply
        await link.close()
        return count * size / elapsed / 1e6

    return transfer


async def open_pair() -> tuple[WebRtcLink, WebRtcLink]:
    pending, offer = await create_offer(WebRtcConfig.loopback(SENDER_ADDR))
    b, answer = await accept_offer(offer, WebRtcConfig.loopback(SINK_ADDR))
    a, _ = await asyncio.gather(pending.complete(answer, OPEN_TIMEOUT), b.wait_open(OPEN_TIMEOUT))
    return a, b


async def inprocess_transfer(kind: str, size: int, total: int) -> float:
    count = -(-total // size)
    a, b = await open_pair()
    payload = bytes(size)
    start = time.perf_counter()
    sender = (send_raw if kind == "raw" else send_link)(a, payload, count)
    await asyncio.gather(sender, sink_receive(b, kind, count * size))
    elapsed = time.perf_counter() - start
    await a.close()
    await b.close()
    return count * size / elapsed / 1e6


async def measure_setup(n: int) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        a, b = await open_pair()
        times.append((time.perf_counter() - start) * 1000)
        await a.close()
        await b.close()
    return times


async def run(quick: bool, inprocess: bool) -> Results:
    total = 4_000_000 if quick else 16_000_000
    setup = await measure_setup(10 if quick else 50)
    child: Any = None
    if inprocess:
        transfer: Transfer = inprocess_transfer
    else:
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        child = ctx.Process(target=sink_main, args=(child_conn,), daemon=True)
        child.start()
        transfer = make_process_transfer(parent_conn)
    # Rounds interleave the three kinds (in rotating order), so that a change in machine
    # load hits all of them; ratios are taken within a round, the median over rounds reported.
    rounds: list[tuple[float, float, float]] = []
    try:
        kinds = [("raw", RAW, total), ("link", CELL, total // 3), ("link", PACKED, total)]
        for i in range(3 if quick else 6):
            figures: dict[int, float] = {}
            for k in range(3):  # each round starts with a different kind
                j = (i + k) % 3
                figures[j] = await transfer(*kinds[j])
            rounds.append((figures[0], figures[1], figures[2]))
    finally:
        if child is not None:
            parent_conn.send(("quit",))
            child.join(10)
            if child.is_alive():
                child.terminate()
    setup.sort()
    return Results(
        mode="inprocess" if inprocess else "two processes",
        rounds=len(rounds),
        setup_links=len(setup),
        setup_ms_median=statistics.median(setup),
        setup_ms_p90=setup[int(0.9 * (len(setup) - 1))],
        bytes_per_run=total,
        raw_16k_mbps=statistics.median(r[0] for r in rounds),
        cell_514_mbps=statistics.median(r[1] for r in rounds),
        packed_31_mbps=statistics.median(r[2] for r in rounds),
        cell_514_ratio=statistics.median(r[1] / r[0] for r in rounds),
        packed_31_ratio=statistics.median(r[2] / r[0] for r in rounds),
        per_round_mbps=tuple((round(a, 2), round(b, 2), round(c, 2)) for a, b, c in rounds),
    )


# -- 3-hop circuits: OP -> relay -> relay -> exit -> TCP sink ----------------------------------------
#
# Each peer is a full OnionNode + NodeDriver (as in peer/testing/swarm.py).  Peers live in worker
# processes, one per peer by default (so that the two cores work as in a deployment), all in
# one worker with --inprocess; "direct" (in-memory links) always keeps its four peers in one
# worker, since memory links cannot cross processes.  The parent only signals (offers,
# answers, TLS ports) and runs the TCP sink; timing runs from the OP's first write to the
# sink's last byte.

HOP_PEERS = 4
EXIT_POLICY = "accept 127.0.0.1:*"
WRITE_CHUNK = 64 * 1024
TRANSPORTS = ("webrtc", "tls", "direct")


def hop_address(index: int) -> str:
    return f"127.{11 + index}.0.1"  # one /16 per peer


@dataclass(eq=False)
class _Hosted:
    keys: PeerKeys
    node: OnionNode
    driver: NodeDriver
    chans: dict[int, int] = field(default_factory=dict)  # neighbour index -> channel
    background: set[asyncio.Future[None]] = field(default_factory=set)
    pending: PendingOffer | None = None
    server: TlsServer | None = None
    stream: OnionStream | None = None


class _Worker:
    """The peers of one worker process, driven by the parent's requests."""

    def __init__(self) -> None:
        self.peers: dict[int, _Hosted] = {}

    async def create(self, index: int, exit_: bool) -> tuple[bytes, bytes, bytes]:
        keys = PeerKeys.generate(os.urandom)
        policy = ExitPolicy.parse(EXIT_POLICY) if exit_ else ExitPolicy.reject_all()
        node = OnionNode(
            node_id=keys.node_id,
            ntor_keys={keys.ntor.public: keys.ntor},
            randbytes=os.urandom,
            config=NodeConfig(exit_policy=policy, auto_consume=False),
        )
        self.peers[index] = _Hosted(keys, node, NodeDriver(node))
        return keys.node_id, keys.ntor.public, keys.identity.public

    def _adopt(self, index: int, other: int, link: Link, handshake: HandshakeConfig) -> None:
        peer = self.peers[index]
        peer.chans[other] = peer.driver.add_link(link, handshake)

    async def offer(self, index: int) -> str:
        peer = self.peers[index]
        peer.pending, sdp = await create_offer(WebRtcConfig.loopback(hop_address(index)))
        return sdp

    async def accept(self, index: int, other: int, offer: str) -> str:
        link, answer = await accept_offer(offer, WebRtcConfig.loopback(hop_address(index)))

        async def adopt() -> None:
            await link.wait_open(OPEN_TIMEOUT)
            self._adopt(index, other, link, peer_handshake(self.peers[index].keys, link, time.time))

        task = asyncio.ensure_future(adopt())  # `linked` reports a failure as a timeout
        self.peers[index].background.add(task)
        return answer

    async def complete(self, index: int, other: int, answer: str) -> None:
        peer = self.peers[index]
        assert peer.pending is not None
        link = await peer.pending.complete(answer, OPEN_TIMEOUT)
        self._adopt(index, other, link, peer_handshake(peer.keys, link, time.time))

    async def serve_tls(self, index: int, other: int) -> int:
        peer = self.peers[index]

        async def on_link(link: TlsLink) -> None:
            self._adopt(index, other, link, peer_handshake(peer.keys, link, time.time))

        peer.server = await serve_tls(hop_address(index), 0, on_link)
        return peer.server.address[1]

    async def connect_tls(self, index: int, other: int, port: int) -> None:
        peer = self.peers[index]
        link = await connect_tls(hop_address(other), port)
        self._adopt(index, other, link, peer_handshake(peer.keys, link, time.time))

    async def memory(self, index: int, other: int) -> None:
        a, b = memory_link_pair()
        self._adopt(index, other, a, peer_handshake(self.peers[index].keys, a, time.time))
        self._adopt(other, index, b, peer_handshake(self.peers[other].keys, b, time.time))

    async def linked(self, index: int, other: int) -> None:
        """Wait until the link to ``other`` has finished its link handshake."""
        peer = self.peers[index]
        for _ in range(int(OPEN_TIMEOUT / 0.05)):
            if other in peer.chans:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("the link did not come up")
        await peer.driver.wait_open(peer.chans[other], OPEN_TIMEOUT)

    async def open_stream(self, index: int, hops: list[tuple[bytes, bytes, bytes]], port: int) -> None:
        peer = self.peers[index]
        path = [HopSpec(n, k, (LinkSpecPeerNodeId(n), LinkSpecEd25519(i))) for n, k, i in hops]
        circ = await peer.driver.build_circuit(peer.chans[index + 1], path, OPEN_TIMEOUT)
        peer.stream = await peer.driver.open_stream(circ, "127.0.0.1", port, OPEN_TIMEOUT)

    async def send(self, index: int, total: int) -> None:
        stream = self.peers[index].stream
        assert stream is not None
        chunk = bytes(WRITE_CHUNK)
        while total > 0:
            await stream.write(chunk[:total])
            total -= min(total, WRITE_CHUNK)

    async def close(self) -> None:
        for peer in self.peers.values():
            if peer.server is not None:
                await peer.server.close()
            await peer.driver.close()


async def _worker_async(conn: multiprocessing.connection.Connection) -> None:
    worker = _Worker()
    while True:
        method, args = await asyncio.to_thread(conn.recv)
        if method == "quit":
            await worker.close()
            conn.send(("ok", None))
            return
        try:
            result = await getattr(worker, method)(*args)
        except Exception as exc:  # reported to the parent, which fails the run
            conn.send(("error", f"{method}: {type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", result))


def worker_main(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(_worker_async(conn))


class _Remote:
    """The parent's handle on a worker: blocking calls over a pipe."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
        self.proc.start()

    def call(self, method: str, *args: Any) -> Any:
        self.conn.send((method, args))
        if not self.conn.poll(120):
            raise TimeoutError(f"worker did not answer {method}")
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(result)
        return result

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


class _Sink:
    """TCP sink on 127.0.0.1 (a thread): counts bytes and says when ``target`` arrived."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.done = threading.Event()
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                while data := conn.recv(1 << 18):
                    self.received += len(data)
                    if self.received >= self.target:
                        self.done.set()

    def close(self) -> None:
        self.sock.close()


def circuit_transfer(ctx: Any, transport: str, total: int, separate: bool) -> float:
    """Build a 3-hop circuit over ``transport`` links, send ``total`` bytes; returns MB/s."""
    n_workers = HOP_PEERS if separate and transport != "direct" else 1
    workers = [_Remote(ctx) for _ in range(n_workers)]
    at = [workers[i % n_workers] for i in range(HOP_PEERS)]
    sink = _Sink(total)
    try:
        hops = [at[i].call("create", i, i == HOP_PEERS - 1) for i in range(HOP_PEERS)]
        for i in range(HOP_PEERS - 1):
            j = i + 1
            if transport == "webrtc":
                offer = at[i].call("offer", i)
                answer = at[j].call("accept", j, i, offer)
                at[i].call("complete", i, j, answer)
            elif transport == "tls":
                port = at[j].call("serve_tls", j, i)
                at[i].call("connect_tls", i, j, port)
            else:
                at[i].call("memory", i, j)
            at[i].call("linked", i, j)
            at[j].call("linked", j, i)
        at[0].call("open_stream", 0, hops[1:], sink.port)
        start = time.perf_counter()
        at[0].call("send", 0, total)
        if not sink.done.wait(120):
            raise TimeoutError(f"the sink got {sink.received} of {total} bytes")
        return total / (time.perf_counter() - start) / 1e6
    finally:
        sink.close()
        for w in workers:
            w.stop()


@dataclass(frozen=True, slots=True)
class CircuitResults:
    peers_in: str
    bytes_per_transfer: int
    webrtc_mbps: float
    tls_mbps: float
    direct_mbps: float
    #: each figure over the raw aiortc 16 KiB reference of the same run
    webrtc_ratio: float
    tls_ratio: float
    direct_ratio: float


def run_circuits(quick: bool, inprocess: bool, raw_mbps: float) -> CircuitResults:
    total = 5_000_000 if quick else 20_000_000
    ctx = multiprocessing.get_context("spawn")
    figures = {t: circuit_transfer(ctx, t, total, not inprocess) for t in TRANSPORTS}
    return CircuitResults(
        peers_in="one process" if inprocess else "one process per peer (direct: one process)",
        bytes_per_transfer=total,
        webrtc_mbps=figures["webrtc"],
        tls_mbps=figures["tls"],
        direct_mbps=figures["direct"],
        webrtc_ratio=figures["webrtc"] / raw_mbps,
        tls_ratio=figures["tls"] / raw_mbps,
        direct_ratio=figures["direct"] / raw_mbps,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.links", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs, under 60 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--inprocess", action="store_true", help="both ends (all peers) in one event loop")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.quick, args.inprocess))
    circuits = run_circuits(args.quick, args.inprocess, results.raw_16k_mbps)
    if args.json:
        print(json.dumps({**asdict(results), "three_hop": asdict(circuits)}, indent=2))
        return 0
    print(
        f"WebRTC links on loopback ({results.mode}), aiortc data channel, median of {results.rounds} rounds"
    )
    print(
        f"  link setup ({results.setup_links} links)   median {results.setup_ms_median:7.1f} ms"
        f"   p90 {results.setup_ms_p90:7.1f} ms"
    )
    print(f"  raw aiortc, 16 KiB messages     {results.raw_16k_mbps:6.2f} MB/s   (reference)")
    print(
        f"  Link, 1 cell (514 B)/message    {results.cell_514_mbps:6.2f} MB/s   "
        f"ratio {results.cell_514_ratio:5.2f}"
    )
    print(
        f"  Link, 31 cells (15,934 B)/msg   {results.packed_31_mbps:6.2f} MB/s   "
        f"ratio {results.packed_31_ratio:5.2f}   (goal >= 0.90)"
    )
    for i, (raw, cell, packed) in enumerate(results.per_round_mbps):
        print(f"    round {i + 1}: raw {raw:6.2f}   514 B {cell:6.2f}   packed {packed:6.2f} MB/s")
    print(
        f"3-hop circuit, one stream OP -> exit -> TCP sink, {circuits.bytes_per_transfer / 1e6:.0f} MB one way "
        f"({circuits.peers_in})"
    )
    for name, mbps, ratio in (
        ("WebRTC links", circuits.webrtc_mbps, circuits.webrtc_ratio),
        ("TLS links", circuits.tls_mbps, circuits.tls_ratio),
        ("direct (memory links)", circuits.direct_mbps, circuits.direct_ratio),
    ):
        print(f"  {name:<30}  {mbps:6.2f} MB/s   ratio to raw aiortc {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
