"""The bridge (DESIGN §1, §4; issue 4): bootstrap and sealed WebRTC signalling over WebSocket.

A bridge is a well-known WebSocket endpoint (``ws://HOST:PORT/peersm/v1``).  Each binary
message is one variable link cell with circuit id 0 (:mod:`peer.wire.linkcells`):

1. On connect the bridge sends DB_HELLO with a fresh nonce.
2. The peer answers DB_REGISTER: its signed peer record and an Ed25519 signature by the
   record's identity key over ``nonce || bridge URL || record``; the bridge answers
   DB_REGISTERED (status 0, or an error code and a reason, then it closes).
3. A registered peer may send DB_FIND_PEER (answered by DB_FOUND_PEER: the records of up
   to 8 registered peers closest by XOR to the target, never the asker's own) and
   DB_INTRODUCE (the blob goes to the target as DB_INTRODUCED(source = asker); if the
   target is not here the asker gets DB_INTRODUCED(source = target, empty blob)).

The bridge never opens a blob (they are sealed to the target's seal key) and logs no
NodeID, address or blob at INFO or above.  Anything else (an unknown or malformed cell,
a request before registration, an oversized blob, a flood) ends the connection with a
DB_REGISTERED notice that carries the reason.  The test-only ``recorder`` (DESIGN §11)
sees every message, in and out; it is off unless passed in.  Byte layouts and limits:
docs/bridge.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from dht.keys import distance
from dht.records import InvalidRecord, PeerRecord, decode_valid
from peer.crypto.identity import RandBytes, verify
from peer.errors import CryptoError, LinkClosed, UsageError, WireError
from peer.transport.websocket import WebSocketLink, websocket_handler
from peer.wire.cells import MAX_VAR_PAYLOAD, decode_message, encode_message, pull_cell
from peer.wire.commands import CellCommand
from peer.wire.linkcells import (
    MAX_BLOB_LEN,
    NONCE_LEN,
    REGISTER_CONTEXT,
    FindPeer,
    FoundPeer,
    Hello,
    Introduce,
    Introduced,
    LinkCellMessage,
    Register,
    Registered,
    RegisterStatus,
    register_message,
)

log = logging.getLogger(__name__)

PATH = "/peersm/v1"
MAX_FOUND = 8  # records in one DB_FOUND_PEER
#: Largest WebSocket message: one variable cell (header 7 bytes + payload).
MAX_MESSAGE = 7 + MAX_VAR_PAYLOAD
#: How long a closing connection may take to flush its last notice.
CLOSE_GRACE = 2.0

#: ``recorder(kind, raw)``: kind is ``"in:<COMMAND>"`` or ``"out:<COMMAND>"`` (test only, DESIGN §11).
Recorder = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    """Per-bridge and per-connection limits (rates are per second, bursts in requests)."""

    max_peers: int = 10_000
    max_blob: int = MAX_BLOB_LEN
    introduce_rate: float = 20.0
    introduce_burst: float = 50.0
    find_rate: float = 10.0
    find_burst: float = 20.0
    register_rate: float = 1.0
    register_burst: float = 5.0
    register_timeout: float = 10.0  # seconds an unregistered connection may stay open
    send_queue: int = 128  # messages waiting for one connection before it counts as not reading


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst``; the caller passes the time."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise UsageError("a token bucket needs rate > 0 and burst >= 1")
        self._rate, self._burst, self._tokens, self._last = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ConnState(enum.Enum):
    AWAIT_REGISTER = "await-register"
    REGISTERED = "registered"
    CLOSING = "closing"


class _Conn:
    """One peer's WebSocket connection (the bridge's mutable bookkeeping)."""

    __slots__ = (
        "expiry",
        "find",
        "intro",
        "link",
        "node_id",
        "nonce",
        "outbox",
        "record",
        "register",
        "register_timer",
        "state",
        "writer",
    )

    def __init__(self, link: WebSocketLink, nonce: bytes, limits: BridgeLimits, now: float) -> None:
        self.link = link
        self.nonce = nonce
        self.state = ConnState.AWAIT_REGISTER
        self.node_id: bytes | None = None
        self.record = b""  # the signed PeerRecord bytes as registered
        self.expiry = 0
        self.intro = TokenBucket(limits.introduce_rate, limits.introduce_burst, now)
        self.find = TokenBucket(limits.find_rate, limits.find_burst, now)
        self.register = TokenBucket(limits.register_rate, limits.register_burst, now)
        # +2: room for the closing notice and the end marker
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue(limits.send_queue + 2)
        self.writer: asyncio.Task[None] | None = None
        self.register_timer: asyncio.TimerHandle | None = None


def _label(direction: str, raw: bytes) -> str:
    if len(raw) < 5:
        return f"{direction}:?"
    try:
        return f"{direction}:{CellCommand(raw[4]).name}"
    except ValueError:
        return f"{direction}:{raw[4]}"


def _parse(raw: bytes) -> LinkCellMessage:
    """The one link cell a bridge message carries; WireError otherwise."""
    got = pull_cell(raw)
    if got is None or got[1] != len(raw):
        raise WireError("a bridge message is exactly one whole cell")
    cell = got[0]
    if cell.circ_id != 0:
        raise WireError("bridge cells use circuit id 0")
    msg = decode_message(cell)
    if not isinstance(msg, Register | FindPeer | Introduce):
        raise WireError(f"a peer does not send command {cell.command} to a bridge")
    return msg


def _ws_url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}{PATH}" if ":" in host else f"ws://{host}:{port}{PATH}"


class Bridge:
    """A bridge server: registry of peers, DB_FIND_PEER answers, blind relay of sealed blobs."""

    def __init__(
        self,
        *,
        limits: BridgeLimits | None = None,
        recorder: Recorder | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        """``public_url``: the URL peers use, when it differs from the listening address (a proxy)."""
        self.limits = limits or BridgeLimits()
        self._recorder = recorder
        self._public_url = public_url
        self._clock = clock
        self._wall_clock = wall_clock
        self._randbytes = randbytes
        self._url: str | None = None
        self._runner: web.AppRunner | None = None
        self._registry: dict[bytes, _Conn] = {}
        self._conns: set[_Conn] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``ws://host:port/peersm/v1``; the URL registrations sign."""
        if self._url is None:
            raise UsageError("the bridge is not started")
        return self._url

    @property
    def registered_count(self) -> int:
        return len(self._registry)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise UsageError("the bridge is already started")
        app = web.Application()
        app.router.add_get(PATH, websocket_handler(self._serve, max_message_size=MAX_MESSAGE))
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_GRACE)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        bound = runner.addresses[0]
        self._runner = runner
        self._url = self._public_url or _ws_url(host, int(bound[1]))
        log.info("bridge started")

    async def stop(self) -> None:
        """Tell every peer the bridge is stopping, close them all and stop listening."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for conn in list(self._conns):
            self._close(conn, RegisterStatus.SHUTDOWN, "the bridge is stopping")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CLOSE_GRACE * 2)
        await runner.cleanup()
        log.info("bridge stopped")

    # ------------------------------------------------------------------ one connection

    async def _serve(self, link: WebSocketLink) -> None:
        now = self._clock()
        conn = _Conn(link, self._randbytes(NONCE_LEN), self.limits, now)
        self._conns.add(conn)
        self._idle.clear()
        conn.writer = asyncio.create_task(self._write_loop(conn))
        conn.register_timer = asyncio.get_running_loop().call_later(
            self.limits.register_timeout, self._register_timeout, conn
        )
        if self._runner is None:  # stopping
            self._close(conn, RegisterStatus.SHUTDOWN, "the bridge is stopping")
        else:
            self._send(conn, Hello(conn.nonce))
        try:
            while conn.state is not ConnState.CLOSING:
                try:
                    raw = await link.recv()
                except LinkClosed:
                    break
                if self._recorder is not None:
                    self._recorder(_label("in", raw), raw)
                if conn.state is ConnState.CLOSING:
                    break
                try:
                    self._dispatch(conn, _parse(raw))
                except WireError as exc:  # a bad message closes this connection only
                    self._close(conn, RegisterStatus.PROTOCOL, f"protocol error: {exc}")
        finally:
            self._forget(conn)
            if conn.state is not ConnState.CLOSING:
                self._close(conn, RegisterStatus.PROTOCOL, "connection lost")
            if conn.writer is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.writer
            await link.close()
            self._conns.discard(conn)
            if not self._conns:
                self._idle.set()

    async def _write_loop(self, conn: _Conn) -> None:
        try:
            while (raw := await conn.outbox.get()) is not None:
                await conn.link.send(raw)
                if self._recorder is not None:
                    self._recorder(_label("out", raw), raw)
        except LinkClosed:
            pass
        finally:
            await conn.link.close()

    def _send(self, conn: _Conn, msg: LinkCellMessage, *, relayed: bool = False) -> bool:
        """Queue ``msg`` for ``conn``; False when the connection is closing or its queue is full.

        A full queue means the peer does not read: an answer to its own request then closes
        it, while a ``relayed`` message (someone else's introduction) is only dropped.
        """
        if conn.state is ConnState.CLOSING:
            return False
        if conn.outbox.qsize() >= self.limits.send_queue:
            if not relayed:
                self._close(conn, RegisterStatus.PROTOCOL, "the peer does not read its messages")
            return False
        conn.outbox.put_nowait(encode_message(msg, 0).encode())
        return True

    def _close(self, conn: _Conn, status: RegisterStatus, reason: str) -> None:
        """Send the closing notice (when there is room), then close within CLOSE_GRACE."""
        if conn.state is ConnState.CLOSING:
            return
        log.debug("bridge closes a connection: %s", reason)
        self._forget(conn)
        conn.state = ConnState.CLOSING
        if conn.register_timer is not None:
            conn.register_timer.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            conn.outbox.put_nowait(encode_message(Registered(status, reason[:255]), 0).encode())
            conn.outbox.put_nowait(None)
        writer = conn.writer
        if writer is not None and not writer.done():
            asyncio.get_running_loop().call_later(CLOSE_GRACE, writer.cancel)

    def _forget(self, conn: _Conn) -> None:
        if conn.node_id is not None and self._registry.get(conn.node_id) is conn:
            del self._registry[conn.node_id]

    def _register_timeout(self, conn: _Conn) -> None:
        if conn.state is ConnState.AWAIT_REGISTER:
            self._close(conn, RegisterStatus.PROTOCOL, "no registration in time")

    # ------------------------------------------------------------------ requests

    def _dispatch(self, conn: _Conn, msg: LinkCellMessage) -> None:
        if isinstance(msg, Register):
            self._on_register(conn, msg)
        elif conn.state is not ConnState.REGISTERED:
            raise WireError("register first")
        elif isinstance(msg, FindPeer):
            self._on_find_peer(conn, msg)
        elif isinstance(msg, Introduce):
            self._on_introduce(conn, msg)

    def _on_register(self, conn: _Conn, msg: Register) -> None:
        if not conn.register.take(self._clock()):
            self._close(conn, RegisterStatus.RATE_LIMITED, "too many registrations")
            return
        try:
            record = decode_valid(msg.record, self._wall_clock())
        except (WireError, InvalidRecord) as exc:
            self._close(conn, RegisterStatus.BAD_RECORD, f"record refused: {exc}")
            return
        if not isinstance(record, PeerRecord):
            self._close(conn, RegisterStatus.BAD_RECORD, "record refused: not a peer record")
            return
        try:
            signed = register_message(conn.nonce, self.url, msg.record)
            verify(record.identity_key, REGISTER_CONTEXT, signed, msg.signature)
        except CryptoError:
            self._close(
                conn,
                RegisterStatus.BAD_SIGNATURE,
                "registration signature does not verify (wrong key, nonce or bridge URL)",
            )
            return
        node_id = record.node_id
        if conn.node_id is not None and conn.node_id != node_id:
            self._close(conn, RegisterStatus.PROTOCOL, "a connection registers one NodeID only")
            return
        old = self._registry.get(node_id)
        if old is None and len(self._registry) >= self.limits.max_peers:
            self._close(conn, RegisterStatus.FULL, "the bridge is full")
            return
        if old is not None and old is not conn:
            self._close(old, RegisterStatus.REPLACED, "replaced by a newer registration of this NodeID")
        self._registry[node_id] = conn
        conn.node_id, conn.record, conn.expiry = node_id, msg.record, record.expiry
        conn.state = ConnState.REGISTERED
        if conn.register_timer is not None:
            conn.register_timer.cancel()
            conn.register_timer = None
        self._send(conn, Registered(RegisterStatus.OK, "registered"))

    def _on_find_peer(self, conn: _Conn, msg: FindPeer) -> None:
        if not conn.find.take(self._clock()):
            self._close(conn, RegisterStatus.RATE_LIMITED, "too many DB_FIND_PEER requests")
            return
        self._send(conn, FoundPeer(tuple(self.closest(msg.target, exclude=conn.node_id))))

    def closest(self, target: bytes, *, exclude: bytes | None = None, count: int = MAX_FOUND) -> list[bytes]:
        """The registered records closest by XOR to ``target`` (unexpired, ``exclude`` left out)."""
        now = self._wall_clock()
        candidates = (
            (node_id, conn)
            for node_id, conn in self._registry.items()
            if node_id != exclude and conn.expiry > now
        )
        best = heapq.nsmallest(count, candidates, key=lambda item: distance(item[0], target))
        return [conn.record for _, conn in best]

    def _on_introduce(self, conn: _Conn, msg: Introduce) -> None:
        if not conn.intro.take(self._clock()):
            self._close(conn, RegisterStatus.RATE_LIMITED, "too many DB_INTRODUCE requests")
            return
        if not 0 < len(msg.blob) <= self.limits.max_blob:
            self._close(
                conn,
                RegisterStatus.PROTOCOL,
                f"DB_INTRODUCE blob of {len(msg.blob)} bytes (allowed 1..{self.limits.max_blob})",
            )
            return
        assert conn.node_id is not None  # registered
        target = self._registry.get(msg.target)
        relayed = Introduced(conn.node_id, msg.blob)
        if target is None or target is conn or not self._send(target, relayed, relayed=True):
            self._send(conn, Introduced(msg.target, b""))


# ---------------------------------------------------------------------- command line


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 0xFFFF:
        raise UsageError(f"--listen wants HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


async def run_bridge(listen: str, record: str | None = None) -> int:
    """``peersm bridge --listen HOST:PORT``: print the URL first, run until SIGINT/SIGTERM, exit 0.

    ``record`` (test only, DESIGN §11) names a file for the recorder: every message the bridge saw."""
    host, port = parse_listen(listen)
    recorder = None
    if record:
        from pathlib import Path

        from peer.net.recorder import Recorder

        rec = Recorder(Path(record))

        def recorder(kind: str, raw: bytes) -> None:
            rec({"kind": "bridge", "dir": kind, "data": raw})

    bridge = Bridge(recorder=recorder)
    await bridge.start(host, port)
    print(bridge.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await bridge.stop()
    print("bridge stopped", file=sys.stderr, flush=True)
    return 0
