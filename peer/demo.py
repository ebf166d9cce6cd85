"""``peersm demo``: a local network on this machine that moves data anonymously.

Until the anonymous share/get path lands (DESIGN §6), the demo runs the onion core's
swarm: N full peers in one process over in-memory links, a circuit through them to a
local TCP echo server at an exit peer, and a transfer both ways, verified by SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time

from peer.proto.exitpolicy import ExitPolicy
from peer.swarm import Swarm


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the demo is shutting down
    finally:
        writer.close()


async def _demo(peers: int, megabytes: float, hops: int) -> int:
    if not 1 <= hops < peers:
        print(f"peersm demo: need more peers than hops (got {peers} peers, {hops} hops)", file=sys.stderr)
        return 2
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    swarm = await Swarm.start(peers, exit_policy=ExitPolicy.parse("accept 127.0.0.1:*"))
    try:
        print(
            f"started {peers} peers (OP + OR each) over in-memory links in {time.perf_counter() - t0:.2f} s"
        )
        path = list(range(1, hops + 1))
        t1 = time.perf_counter()
        circ = await swarm.build_circuit(0, path)
        print(
            f"built a {hops}-hop circuit (ntor, tor1 relay crypto) in {1000 * (time.perf_counter() - t1):.0f} ms"
        )
        stream = await swarm.open_stream(0, circ, "127.0.0.1", port)
        data = os.urandom(int(megabytes * 1_000_000))
        t2 = time.perf_counter()

        async def write() -> None:
            for i in range(0, len(data), 256 * 1024):
                await stream.write(data[i : i + 256 * 1024])

        writer = asyncio.create_task(write())
        h = hashlib.sha256()
        got = 0
        last = t2
        while got < len(data):
            chunk = await stream.read()
            if not chunk:
                print("peersm demo: the stream ended early", file=sys.stderr)
                return 1
            h.update(chunk)
            got += len(chunk)
            now = time.perf_counter()
            if now - last > 0.5:
                print(f"  {got / 1e6:6.1f} / {len(data) / 1e6:.1f} MB echoed", file=sys.stderr)
                last = now
        await writer
        dt = time.perf_counter() - t2
        ok = h.digest() == hashlib.sha256(data).digest()
        await stream.close()
        print(
            f"moved {len(data) / 1e6:.1f} MB out and back through {hops} hops in {dt:.2f} s "
            f"({2 * len(data) / dt / 1e6:.1f} MB/s both ways); sha256 {'matches' if ok else 'DIFFERS'}"
        )
        print(
            "who saw what: the first hop saw our link but only ciphertext; the middle hops saw their two "
            "neighbours only; the exit peer saw the destination, not us."
        )
        print("note: this is the onion-core demo; anonymous share/get through ORDBs is not built yet.")
        return 0 if ok else 1
    finally:
        await swarm.close()
        server.close()


def run_demo(*, peers: int = 6, megabytes: float = 4.0, hops: int = 3) -> int:
    return asyncio.run(_demo(peers, megabytes, hops))
