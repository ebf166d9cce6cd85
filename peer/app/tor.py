"""``peersm tor get URL`` and ``peersm tor socks``: our onion proxy on the Tor network."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from peer.errors import PeerError, UsageError
from peer.net.driver import OnionStream, StreamError
from peer.net.socks import SocksServer, StreamOpenError
from peer.tor.client import TorClient, read_http_response
from peer.tor.directory import AuthoritySpec, DirectoryClient
from peer.tor.guards import GuardSet


class _Progress:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, got: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        rate = got / max(now - self.t0, 1e-6)
        pct = f"{100 * got / total:5.1f}% of {total / 1e6:.1f} MB" if total else f"{got / 1e6:.1f} MB"
        eta = f", ETA {max(0.0, (total - got) / rate):.0f} s" if total and rate > 0 else ""
        line = f"  {pct}  {rate / 1e6:.2f} MB/s{eta}"
        print(
            ("\r" + line) if self.tty else line,
            end="" if self.tty and not final else "\n",
            file=sys.stderr,
            flush=True,
        )


async def _directory(args: argparse.Namespace) -> tuple[DirectoryClient, Path]:
    from peer.app.paths import default_data_dir

    if not args.authority:
        raise UsageError("give at least one --authority HOST:DIRPORT=V3IDENT")
    data = args.data or default_data_dir()
    return DirectoryClient([AuthoritySpec.parse(a) for a in args.authority], data), data


async def _get(args: argparse.Namespace) -> int:
    if not args.url:
        raise UsageError("peersm tor get needs a URL")
    u = urlsplit(args.url)
    if u.scheme != "http" or not u.hostname:
        raise UsageError("only http:// URLs are supported (https would need TLS over the stream)")
    port = u.port or 80
    dirc, data = await _directory(args)
    print("fetching and verifying the consensus…", file=sys.stderr)
    directory = await dirc.get(time.time())
    client = TorClient(directory, guards=GuardSet.in_data_dir(data), allow_same_subnet=args.allow_same_subnet)
    try:
        path = client.choose_path(port, args.hops)
        print(f"building a {len(path)}-hop circuit…", file=sys.stderr)
        circ = await client.build_circuit(path)
        stream = await client.driver.open_stream(circ, u.hostname, port)
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        await stream.write(
            f"GET {target} HTTP/1.0\r\nHost: {u.hostname}\r\nUser-Agent: peersm\r\n\r\n".encode()
        )
        out_path: Path | None = args.output
        tmp = out_path.with_name(f".{out_path.name}.part") if out_path else None
        sink_file = open(tmp, "wb") if tmp else None  # noqa: SIM115
        progress = _Progress()
        try:

            def sink(data: bytes) -> None:
                if sink_file is not None:
                    sink_file.write(data)
                else:
                    sys.stdout.buffer.write(data)

            status, _headers = await read_http_response(stream, progress, sink)
        finally:
            if sink_file:
                sink_file.flush()
                os.fsync(sink_file.fileno())
                sink_file.close()
        if status != 200:
            if tmp:
                tmp.unlink(missing_ok=True)
            print(f"peersm tor get: the server answered HTTP {status}", file=sys.stderr)
            return 1
        if tmp and out_path:
            os.replace(tmp, out_path)
        print(f"done through {len(path)} relays", file=sys.stderr)
        return 0
    finally:
        await client.close()


async def _socks(args: argparse.Namespace) -> int:
    from peer.app.up import parse_hostport

    host, port = parse_hostport(args.listen, loopback_only=True)
    dirc, data = await _directory(args)
    directory = await dirc.get(time.time())
    client = TorClient(directory, guards=GuardSet.in_data_dir(data), allow_same_subnet=args.allow_same_subnet)

    async def open_stream(h: str, p: int) -> OnionStream:
        try:
            return await client.open_stream(h, p, hops=args.hops)
        except StreamError as exc:
            raise StreamOpenError(str(exc), exc.end_reason) from exc
        except PeerError as exc:
            raise StreamOpenError(str(exc)) from exc

    server = SocksServer(open_stream)
    addr = await server.start(host, port)
    print(f"SOCKS5 proxy on {addr[0]}:{addr[1]} (use curl --socks5-hostname)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    await client.close()
    return 0


def cmd_tor(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_get(args) if args.action == "get" else _socks(args))
    except PeerError as exc:
        print(f"\npeersm tor {args.action}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"\npeersm tor {args.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("interrupted", file=sys.stderr)
        return 130
