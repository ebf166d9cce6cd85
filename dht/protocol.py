"""UDP transport for DHT RPCs: rpcudp's RPCProtocol, hardened (DESIGN §8).

Taken from ``rpcudp`` 5.0.1: the class (an ``asyncio.DatagramProtocol``), its
framing and its table of outstanding requests::

    datagram = u8 0x00 (request) | 0x01 (reply), message id[20], msgpack body
    request body = msgpack [name: str, [payload: bin]]     reply body = msgpack payload: bin

Replaced: datagrams over 1,200 bytes are neither sent nor read; the msgpack
envelope must be exactly that shape (umsgpack builds only plain values and never
unpickles; anything else is dropped); the RPC name must match the payload's type
byte and requests go to one handler instead of any ``rpc_*`` attribute; a reply is
accepted only from the address the request went to; message IDs come from the
injected ``randbytes``; timeouts are adaptive (:mod:`dht.rtt`) instead of a fixed
5 s; requests are answered synchronously instead of one task per datagram.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import umsgpack  # type: ignore[import-untyped]
from rpcudp.protocol import RPCProtocol

from peer.crypto.identity import RandBytes
from peer.errors import PeerError, UsageError

from .messages import MAX_DATAGRAM, RPC_NAMES, request_type
from .rtt import RttEstimator

log = logging.getLogger(__name__)

REQUEST, REPLY = 0x00, 0x01
MSG_ID_LEN = 20
HEADER_LEN = 1 + MSG_ID_LEN
REPLY_OVERHEAD = HEADER_LEN + 3  # msgpack bin16 header
LATE_MEMORY = 1024  # timed-out message ids remembered to learn from late replies

Addr = tuple[str, int]
# (payload, source address, size of the request datagram) -> reply payload or None
Handler = Callable[[bytes, Addr, int], bytes | None]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[bytes | None]
    timer: asyncio.TimerHandle
    addr: Addr
    sent_at: float


@dataclass(slots=True)
class ProtocolStats:
    sent: int = 0
    received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped: int = 0
    timeouts: int = 0
    late_replies: int = 0


class DhtProtocol(RPCProtocol):
    """Sends requests and matches replies; hands incoming requests to ``handler``."""

    def __init__(self, handler: Handler, randbytes: RandBytes, rtt: RttEstimator) -> None:
        super().__init__(wait_timeout=rtt.maximum)
        self._handler = handler
        self._randbytes = randbytes
        self.rtt = rtt
        self._outstanding: dict[bytes, _Pending] = {}
        self._late: OrderedDict[bytes, float] = OrderedDict()
        self.stats = ProtocolStats()
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for pending in self._outstanding.values():
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(None)
        self._outstanding.clear()

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.stats.received += 1
        self.stats.bytes_received += len(data)
        if len(data) > MAX_DATAGRAM or len(data) <= HEADER_LEN or data[0] not in (REQUEST, REPLY):
            self.stats.dropped += 1
            return
        msg_id = data[1:HEADER_LEN]
        try:
            body = umsgpack.unpackb(data[HEADER_LEN:])
        except Exception:  # umsgpack raises several unrelated types on garbage
            self.stats.dropped += 1
            return
        if data[0] == REPLY:
            self._on_reply(msg_id, body, (addr[0], addr[1]))
        else:
            self._on_request(msg_id, body, (addr[0], addr[1]), len(data))

    def _on_request(self, msg_id: bytes, body: object, addr: Addr, size: int) -> None:
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
            self.stats.dropped += 1
            return
        name, args = body
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], bytes)):
            self.stats.dropped += 1
            return
        payload = args[0]
        type_ = request_type(payload)
        if type_ is None or RPC_NAMES[type_] != name:
            self.stats.dropped += 1
            return
        try:
            reply = self._handler(payload, addr, size)
        except PeerError as exc:
            log.debug("dropped a DHT request: %s", exc)
            self.stats.dropped += 1
            return
        if reply is None or self.transport is None:
            return
        out = bytes([REPLY]) + msg_id + umsgpack.packb(reply)
        if len(out) > MAX_DATAGRAM:
            raise UsageError(f"reply of {len(out)} bytes exceeds {MAX_DATAGRAM}")
        self._send(out, addr)

    def _on_reply(self, msg_id: bytes, body: object, addr: Addr) -> None:
        loop = asyncio.get_running_loop()
        pending = self._outstanding.get(msg_id)
        if pending is None:
            sent_at = self._late.pop(msg_id, None)
            if sent_at is not None:
                self.stats.late_replies += 1
                self.rtt.sample(loop.time() - sent_at)
            else:
                self.stats.dropped += 1
            return
        if pending.addr != addr or not isinstance(body, bytes):
            self.stats.dropped += 1  # replies count only from the address asked
            return
        del self._outstanding[msg_id]
        pending.timer.cancel()
        self.rtt.sample(loop.time() - pending.sent_at)
        if not pending.future.done():
            pending.future.set_result(body)

    def _send(self, datagram: bytes, addr: Addr) -> None:
        assert self.transport is not None
        self.stats.sent += 1
        self.stats.bytes_sent += len(datagram)
        self.transport.sendto(datagram, addr)

    def call(
        self, addr: Addr, name: str, payload: bytes, timeout: float | None = None
    ) -> asyncio.Future[bytes | None]:
        """Send a request; the future gives the reply payload, or None on timeout or close."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if self.closed or self.transport is None:
            future.set_result(None)
            return future
        msg_id = self._randbytes(MSG_ID_LEN)
        datagram = bytes([REQUEST]) + msg_id + umsgpack.packb([name, [payload]])
        if len(datagram) > MAX_DATAGRAM:
            raise UsageError(f"request of {len(datagram)} bytes exceeds {MAX_DATAGRAM}")
        wait = self.rtt.timeout if timeout is None else timeout
        timer = loop.call_later(wait, self._expire, msg_id)
        self._outstanding[msg_id] = _Pending(future, timer, addr, loop.time())
        self._send(datagram, addr)
        return future

    def _expire(self, msg_id: bytes) -> None:
        pending = self._outstanding.pop(msg_id, None)
        if pending is None:
            return
        self.stats.timeouts += 1
        self._late[msg_id] = pending.sent_at
        while len(self._late) > LATE_MEMORY:
            self._late.popitem(last=False)
        if not pending.future.done():
            pending.future.set_result(None)
