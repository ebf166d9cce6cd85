"""A peer's connection to a bridge (DESIGN §1, §4; the protocol is in :mod:`peer.roles.bridge`, docs/bridge.md).

:class:`BridgeClient` opens the WebSocket, answers DB_HELLO with DB_REGISTER (our signed
peer record, and the proof that we hold its identity key for this nonce and this bridge
URL), then offers ``find_peers`` (records re-validated here: a bridge cannot forge them),
``introduce`` (relay a sealed blob) and the introductions relayed to us, as a callback
or on the ``introductions`` queue.  The bridge answers requests in order, so the client
matches answers to requests by order.

:func:`open_introduction` opens a relayed blob and checks that the sealed sender is the
NodeID the bridge named, so a bridge that swaps or alters blobs is caught (the blob's
signature is inside the encryption, DESIGN §3-4).

No automatic reconnect: ``wait_closed()`` returns when the bridge drops us and
``close_reason`` says why; the link manager decides when to connect again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from dht.records import InvalidRecord, PeerRecord, decode_valid
from peer.crypto.seal import Opened, SealError, open_sealed
from peer.errors import LinkClosed, TransportError, UsageError, WireError
from peer.net.handshake import PeerKeys
from peer.transport.websocket import DEFAULT_CLOSE_TIMEOUT, WebSocketLink, connect_websocket
from peer.wire.cells import decode_message, encode_message, pull_cell
from peer.wire.linkcells import (
    MAX_BLOB_LEN,
    REGISTER_CONTEXT,
    FindPeer,
    FoundPeer,
    Hello,
    Introduce,
    Introduced,
    LinkCellMessage,
    Register,
    Registered,
    register_message,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
INTRODUCTION_QUEUE = 256  # introductions waiting on the queue; more are dropped

OnIntroduced = Callable[[bytes, bytes], None]
_T = TypeVar("_T")


class BridgeError(TransportError):
    """The bridge refused us, dropped us, or broke the protocol; ``status`` is its code if it sent one."""

    kind = "bridge"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def open_introduction(keys: PeerKeys, source: bytes, blob: bytes, *, now: float) -> Opened:
    """Open a relayed blob sealed to us and check that ``source`` (as the relay named it) sealed it.

    Raises :class:`~peer.crypto.seal.SealError` (tampered, forged, stale, or from another
    sender) or :class:`~peer.errors.WireError` (not a sealed blob).
    """
    opened = open_sealed(keys.seal, blob, now=now)
    if opened.sender_node_id != source:
        raise SealError("the sealed blob was not sealed by the peer the relay names")
    return opened


def _parse(raw: bytes) -> LinkCellMessage:
    got = pull_cell(raw)
    if got is None or got[1] != len(raw) or got[0].circ_id != 0:
        raise WireError("a bridge message is exactly one whole cell on circuit 0")
    msg = decode_message(got[0])
    if not isinstance(msg, Hello | Registered | FoundPeer | Introduced):
        raise WireError(f"a bridge does not send command {got[0].command}")
    return msg


class BridgeClient:
    """One registered connection to one bridge."""

    def __init__(
        self,
        *,
        on_introduced: OnIntroduced | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_introduced(source, blob)`` is called for each relayed blob; without it they
        go to :attr:`introductions` (bounded; extra ones are dropped)."""
        self.on_introduced = on_introduced
        self.introductions: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(INTRODUCTION_QUEUE)
        self._wall_clock = wall_clock
        self._link: WebSocketLink | None = None
        self._url = ""
        self._keys: PeerKeys | None = None
        self._record: Callable[[], PeerRecord] | None = None
        self._nonce = b""
        self._reader: asyncio.Task[None] | None = None
        self._registered: collections.deque[asyncio.Future[Registered]] = collections.deque()
        self._found: collections.deque[asyncio.Future[FoundPeer]] = collections.deque()
        self._closed = asyncio.Event()
        self._reason: str | None = None
        self._status: int | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> str | None:
        """Why the connection ended (the bridge's notice when it sent one)."""
        return self._reason

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # ------------------------------------------------------------------ connect and register

    async def connect(
        self,
        url: str,
        keys: PeerKeys,
        record: Callable[[], PeerRecord],
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Connect, answer DB_HELLO with DB_REGISTER, wait for DB_REGISTERED; BridgeError if refused.

        ``record()`` returns our current signed peer record (called again by :meth:`reregister`).
        """
        if self._url:
            raise UsageError("a BridgeClient connects once")
        self._url, self._keys, self._record = url, keys, record
        try:
            link = await connect_websocket(url, timeout=timeout)
        except TransportError as exc:
            self._reason = f"cannot reach the bridge: {exc}"
            self._closed.set()
            raise BridgeError(self._reason) from exc
        self._link = link
        try:
            async with asyncio.timeout(timeout):
                hello = _parse(await link.recv())
                if not isinstance(hello, Hello):
                    raise BridgeError("the bridge did not start with DB_HELLO")
                self._nonce = hello.nonce
                await self._send(self._register_message(), link)
                reply = _parse(await link.recv())
                if not isinstance(reply, Registered):
                    raise BridgeError("the bridge did not answer DB_REGISTER")
                if not reply.ok:
                    raise BridgeError(f"registration refused: {reply.reason}", status=reply.status)
        except TimeoutError as exc:
            await self._abort("the bridge did not register us in time")
            raise BridgeError("the bridge did not register us in time") from exc
        except (LinkClosed, WireError) as exc:
            await self._abort(str(exc))
            raise BridgeError(f"bridge connection failed: {exc}") from exc
        except BaseException as exc:
            await self._abort(str(exc))
            raise
        self._reader = asyncio.create_task(self._read_loop(link))

    def _register_request(self) -> asyncio.Future[Registered]:
        fut: asyncio.Future[Registered] = asyncio.get_running_loop().create_future()
        self._registered.append(fut)
        return fut

    def _register_message(self) -> Register:
        assert self._keys is not None and self._record is not None
        record = self._record()
        if record.identity_key != self._keys.identity.public:
            raise UsageError("the record to register is not signed by our identity")
        data = record.encode()
        signature = self._keys.identity.sign(REGISTER_CONTEXT, register_message(self._nonce, self._url, data))
        return Register(data, signature)

    async def reregister(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Register our current record again (after it changed: neighbours, route, expiry)."""
        link = self._require_link()
        msg = self._register_message()
        fut = self._register_request()
        await self._send(msg, link)
        async with asyncio.timeout(timeout):
            reply = await fut
        if not reply.ok:
            raise BridgeError(f"registration refused: {reply.reason}", status=reply.status)

    # ------------------------------------------------------------------ requests

    async def find_peers(self, target: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> list[PeerRecord]:
        """Valid peer records the bridge holds closest to ``target`` (bad ones and our own dropped)."""
        link = self._require_link()
        msg = FindPeer(target)
        fut: asyncio.Future[FoundPeer] = asyncio.get_running_loop().create_future()
        self._found.append(fut)
        await self._send(msg, link)
        async with asyncio.timeout(timeout):
            found = await fut
        assert self._keys is not None
        now = self._wall_clock()
        out: list[PeerRecord] = []
        seen = {self._keys.node_id}
        for data in found.records:
            try:
                record = decode_valid(data, now)
            except (WireError, InvalidRecord):
                log.debug("dropped an invalid record from a bridge")
                continue
            if isinstance(record, PeerRecord) and record.node_id not in seen:
                seen.add(record.node_id)
                out.append(record)
        return out

    async def introduce(self, target: bytes, blob: bytes) -> None:
        """Ask the bridge to relay ``blob`` (sealed to ``target``) to the peer ``target``."""
        if not 0 < len(blob) <= MAX_BLOB_LEN:
            raise UsageError(f"a relayed blob is 1..{MAX_BLOB_LEN} bytes")
        await self._send(Introduce(target, blob), self._require_link())

    async def close(self) -> None:
        await self._abort("closed locally")
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    # ------------------------------------------------------------------ plumbing

    def _require_link(self) -> WebSocketLink:
        if self._link is None or self.closed:
            raise BridgeError(self._reason or "not connected to a bridge", status=self._status)
        return self._link

    async def _send(self, msg: LinkCellMessage, link: WebSocketLink | None = None) -> None:
        link = link or self._require_link()
        try:
            await link.send(encode_message(msg, 0).encode())
        except LinkClosed as exc:
            raise BridgeError(self._reason or f"the bridge connection is closed: {exc}") from exc

    async def _read_loop(self, link: WebSocketLink) -> None:
        reason = "the bridge closed the connection"
        try:
            while True:
                msg = _parse(await link.recv())
                if isinstance(msg, Introduced):
                    self._deliver(msg)
                elif isinstance(msg, FoundPeer) and self._found:
                    _resolve(self._found.popleft(), msg)
                elif isinstance(msg, Registered) and (self._registered or not msg.ok):
                    if not msg.ok:  # a refusal or the bridge's notice before it closes
                        self._status = msg.status
                        reason = f"the bridge dropped us: {msg.reason}"
                    if self._registered:
                        _resolve(self._registered.popleft(), msg)
                else:
                    reason = "the bridge sent an unexpected message"
                    break
        except LinkClosed:
            pass
        except WireError as exc:
            reason = f"the bridge broke the protocol: {exc}"
        await self._abort(reason)

    def _deliver(self, msg: Introduced) -> None:
        if self.on_introduced is not None:
            self.on_introduced(msg.source, msg.blob)
            return
        try:
            self.introductions.put_nowait((msg.source, msg.blob))
        except asyncio.QueueFull:
            log.debug("dropped an introduction: the queue is full")

    async def _abort(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._closed.set()
        error = BridgeError(self._reason, status=self._status)
        pending: list[asyncio.Future[Registered] | asyncio.Future[FoundPeer]] = [
            *self._registered,
            *self._found,
        ]
        for fut in pending:
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved here: nobody may be waiting any more
        self._registered.clear()
        self._found.clear()
        if self._link is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link.close(), DEFAULT_CLOSE_TIMEOUT * 2)


def _resolve(fut: asyncio.Future[_T], msg: _T) -> None:
    if not fut.done():  # a request that timed out leaves its cancelled future in line
        fut.set_result(msg)
