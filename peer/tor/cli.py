"""``peersm tor get URL`` and ``peersm tor socks``: our onion proxy on the Tor network (issue 3).

``get`` fetches an ``http://`` URL through a fresh circuit (HTTP/1.0 GET over a BEGIN stream; the
exit resolves the name) and writes the body to ``-o FILE`` or standard output, with progress on
standard error.  ``socks`` runs a SOCKS5 proxy (:mod:`peer.socks`) whose CONNECTs become streams.
Exit status: 0 success, 1 failure (with a one-line reason), 2 bad usage.

Hook into ``peer/cli.py`` with :func:`add_tor_arguments` and :func:`run_tor`; also runnable as
``python -m peer.tor.cli get|socks ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from peer.driver import OnionStream
from peer.errors import PeerError, UsageError
from peer.socks import ByteStream, SocksServer
from peer.tor.client import TorClient
from peer.tor.directory import AuthoritySpec

READ_CHUNK = 256 * 1024
MAX_HEADER = 64 * 1024


class HttpError(PeerError):
    kind = "http"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "peersm"


def add_tor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["get", "socks"], help="get: fetch URL; socks: run a SOCKS5 proxy")
    p.add_argument("url", nargs="?", help="http:// URL to fetch (get)")
    p.add_argument(
        "--authority",
        action="append",
        default=[],
        metavar="HOST:DIRPORT=V3IDENT",
        help="a trusted directory authority (repeatable; a majority must sign the consensus)",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="write the body here (default: stdout)")
    p.add_argument("--hops", type=int, default=3, help="circuit length, 2 to 5 (default 3)")
    p.add_argument(
        "--listen", default="127.0.0.1:9050", help="SOCKS5 listen address (socks; default 127.0.0.1:9050)"
    )
    p.add_argument("--data", type=Path, default=None, help="data directory (guards, consensus cache)")
    p.add_argument(
        "--allow-same-subnet",
        action="store_true",
        help="allow two hops in one /16 (private test networks where every relay is on 127.0.0.1)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for each network step")


def _progress(msg: str) -> None:
    print(f"peersm tor: {msg}", file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> TorClient:
    if not args.authority:
        raise UsageError("give at least one --authority HOST:DIRPORT=V3IDENT")
    auths = [AuthoritySpec.parse(a) for a in args.authority]
    return TorClient(
        auths,
        args.data or default_data_dir(),
        hops=args.hops,
        allow_same_subnet=args.allow_same_subnet,
        timeout=args.timeout,
        progress=_progress,
    )


def parse_http_url(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"only http:// URLs can be fetched, not {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UsageError(f"bad port in {url!r}") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


async def _read_head(stream: OnionStream) -> tuple[int, dict[str, str], bytes]:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            raise HttpError("the server closed the connection before answering")
        buf += chunk
        if len(buf) > MAX_HEADER and b"\r\n\r\n" not in buf:
            raise HttpError("HTTP response header too large")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        raise HttpError("not an HTTP response")
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return int(status[1]), headers, rest


async def http_get(client: TorClient, url: str, out: BinaryIO) -> int:
    """Fetch ``url`` through ``client``; write the body to ``out``; return its length."""
    host, port, path = parse_http_url(url)
    stream = await client.open_stream(host, port)
    try:
        req = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: peersm\r\nAccept: */*\r\n\r\n"
        await stream.write(req.encode("latin-1"))
        status, headers, body = await _read_head(stream)
        if not 200 <= status < 300:
            raise HttpError(f"the server answered HTTP {status}")
        expected = int(headers["content-length"]) if headers.get("content-length", "").isdigit() else None
        total = 0
        last = time.monotonic()
        start = last
        while True:
            if not body:
                body = await stream.read(READ_CHUNK)
                if not body:
                    break
            out.write(body)
            total += len(body)
            now = time.monotonic()
            if now - last >= 1.0:
                last = now
                rate = total / max(now - start, 1e-6) / 1e6
                of = f" of {expected}" if expected is not None else ""
                _progress(f"{total}{of} bytes ({rate:.1f} MB/s)")
            body = b""
        if expected is not None and total != expected:
            raise HttpError(f"the body is truncated: {total} of {expected} bytes")
        elapsed = time.monotonic() - start
        _progress(f"received {total} bytes in {elapsed:.1f} s ({total / max(elapsed, 1e-6) / 1e6:.1f} MB/s)")
        return total
    finally:
        with contextlib.suppress(PeerError):
            await stream.close()


async def _get(args: argparse.Namespace) -> int:
    if not args.url:
        raise UsageError("tor get needs a URL")
    parse_http_url(args.url)
    async with _client(args) as client:
        _, port, _ = parse_http_url(args.url)
        built = await client.circuit_for(port)
        _progress("path: " + ", ".join(f"{r.nickname} ({r.rsa_id.hex()[:16]})" for r in built.path))
        if args.output is None:
            await http_get(client, args.url, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            tmp = args.output.with_name(args.output.name + ".part")
            try:
                with open(tmp, "wb") as f:
                    await http_get(client, args.url, f)
                os.replace(tmp, args.output)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return 0


def parse_listen(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen wants HOST:PORT, got {spec!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _socks(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    async with _client(args) as client:

        async def open_stream(h: str, p: int) -> ByteStream:
            return await client.open_stream(h, p)

        server = SocksServer(open_stream)
        bound = await server.start(host, port)
        _progress(f"SOCKS5 proxy listening on {bound[0]}:{bound[1]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close()
    return 0


def run_tor(args: argparse.Namespace) -> int:
    """Entry point for ``peersm tor ...``; returns the exit status."""
    try:
        return asyncio.run(_get(args) if args.action == "get" else _socks(args))
    except UsageError as exc:
        print(f"peersm tor: {exc}", file=sys.stderr)
        return 2
    except PeerError as exc:
        print(f"peersm tor {args.action}: failed: {exc} [{exc.kind}]", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"peersm tor {args.action}: failed: timed out after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"peersm tor {args.action}: failed: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="peersm tor", description="use our onion proxy on the Tor network")
    add_tor_arguments(p)
    return run_tor(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
