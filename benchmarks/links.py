"""Link benchmark, raw-link part (issue 4 "Benchmark"; DESIGN §4 "Transport facts").

Measures in one run, on loopback (127.1.0.1 -> 127.2.0.1):

* link setup time: ``create_offer`` -> ``accept_offer`` -> ``complete``/``wait_open``;
* the reference: raw aiortc, 16 KiB messages written straight to the RTCDataChannel
  (flow control on ``bufferedAmount`` only, as any correct aiortc sender must do);
* our ``WebRtcLink`` carrying one 514-byte cell per message;
* our ``WebRtcLink`` carrying packed messages of 31 cells (15,934 bytes);

and prints each throughput with its ratio to the raw reference.  By default the
receiving end runs in a child process (as between two peers); ``--inprocess`` keeps
both ends in one event loop.  ``--quick`` finishes well within 60 s.  ``--json``
prints one JSON object instead of the table.  No figure is hard-coded.

Run: ``python -m benchmarks.links [--quick] [--json] [--inprocess]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from peer.transport.iceconfig import WebRtcConfig
from peer.transport.webrtc import WebRtcLink, accept_offer, create_offer

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.links", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs, under 60 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--inprocess", action="store_true", help="both ends in one event loop")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.quick, args.inprocess))
    if args.json:
        print(json.dumps(asdict(results), indent=2))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
