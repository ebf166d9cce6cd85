"""Many peer identities in one process: the far ends of a memory test's links (issue 4 "Memory").

``python -m tests.links.hosts --bridge URL --count 10 --base 127.101.0.1 --data DIR``
starts ``count`` full :class:`peer.node.Peer` runtimes in one event loop, each on its
own address (``base``, then the next /16: 127.101.0.1, 127.102.0.1, ... so that the /16
rule of DESIGN §5 holds), each registered with the bridge, each with ``--max-links``
links at most (default 1).  Hosted peers never open links themselves (their link
maintenance is switched off): they only answer offers, so every link they hold is one the
peer under test opened.  The process prints one JSON line, ``{"node_ids": [...]}``, once
every runtime is up, then serves load commands on stdin (see :func:`serve_commands`)
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import sys
from pathlib import Path

from dht.records import PeerRecord
from peer.errors import PeerError
from peer.net.circuits import hop_of
from peer.node import Peer, PeerConfig
from peer.proto.exitpolicy import ExitPolicy

CHUNK = 64 * 1024


class PassivePeer(Peer):
    """A peer runtime that never initiates links (test double; answers offers as usual)."""

    async def _maintain(self) -> None:
        await asyncio.Event().wait()


def host_addresses(base: str, count: int) -> list[str]:
    """``count`` loopback addresses, one per /16, starting at ``base`` (127.A.B.C -> 127.A+i.B.C)."""
    ip = ipaddress.IPv4Address(base)
    if not ip.is_loopback:
        raise ValueError(f"not a loopback address: {base}")
    a, b, c, d = ip.packed
    if b + count - 1 > 255:
        raise ValueError(f"{count} /16s do not fit after {base}")
    return [f"{a}.{b + i}.{c}.{d}" for i in range(count)]


async def host_peers(
    bridge: str, hosts: list[str], data: Path, max_links: int, exit_policy: ExitPolicy
) -> list[Peer]:
    configs = [
        PeerConfig(
            data_dir=data / f"h{i}", host=host, bridges=[bridge], max_links=max_links, exit_policy=exit_policy
        )
        for i, host in enumerate(hosts)
    ]
    return list(await asyncio.gather(*(PassivePeer.start(c) for c in configs)))


async def _record(peer: Peer, node_id: bytes) -> PeerRecord:
    for client in peer.bridges.values():
        for rec in await client.find_peers(node_id):
            if rec.node_id == node_id:
                return rec
    raise LookupError("the bridge does not know that peer")


async def push_through(peer: Peer, via: bytes, exit_id: bytes, port: int, seconds: float) -> int:
    """Build ``peer`` -> ``via`` -> ``exit_id`` over existing links; stream data to 127.0.0.1:port."""
    chan = peer.links.chan_of(via)
    if chan is None:
        raise LookupError("no link to the relay")
    path = [await _record(peer, via), await _record(peer, exit_id)]
    circ = await peer.driver.build_circuit(chan, [hop_of(r) for r in path])
    stream = await peer.driver.open_stream(circ, "127.0.0.1", port)
    chunk = bytes(CHUNK)
    sent = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await stream.write(chunk)
        sent += len(chunk)
    await stream.close()
    return sent


async def serve_commands(peers: list[Peer]) -> None:
    """One JSON command per stdin line; one JSON reply per line on stdout.

    ``{"cmd": "load", "via": HEX, "exits": [HEX, ...], "port": N, "seconds": S}``: the first
    ``len(exits)`` hosted peers each push a stream through ``via`` to one exit for S seconds;
    the reply is ``{"sent": [bytes per stream]}``.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            cmd = json.loads(line)
            if cmd.get("cmd") != "load":
                raise ValueError("unknown command")
            via = bytes.fromhex(cmd["via"])
            exits = [bytes.fromhex(x) for x in cmd["exits"]]
            sent = await asyncio.gather(
                *(
                    push_through(p, via, x, int(cmd["port"]), float(cmd["seconds"]))
                    for p, x in zip(peers, exits, strict=False)
                )
            )
            reply: dict[str, object] = {"sent": list(sent)}
        except (PeerError, LookupError, ValueError, KeyError, TypeError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


async def amain(args: argparse.Namespace) -> int:
    hosts = host_addresses(args.base, args.count)
    policy = ExitPolicy.parse(args.exit_policy) if args.exit_policy else ExitPolicy.reject_all()
    peers = await host_peers(args.bridge, hosts, args.data, args.max_links, policy)
    print(json.dumps({"node_ids": [p.keys.node_id.hex() for p in peers]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    commands = loop.create_task(serve_commands(peers))
    await stop.wait()
    commands.cancel()
    for p in peers:
        with contextlib.suppress(Exception):
            await p.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.links.hosts", description=__doc__.split("\n")[0])
    parser.add_argument("--bridge", required=True, help="the bridge's WebSocket URL")
    parser.add_argument("--count", type=int, default=10, help="peer identities in this process")
    parser.add_argument(
        "--base", default="127.101.0.1", help="first address; each next one is in the next /16"
    )
    parser.add_argument("--data", type=Path, required=True, help="directory for the peers' data dirs")
    parser.add_argument("--max-links", type=int, default=1, help="links each hosted peer accepts")
    parser.add_argument("--exit-policy", default=None, help="exit policy of every hosted peer (default none)")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
