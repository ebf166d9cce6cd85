"""Links over an aiohttp WebSocket (DESIGN §4 "Links": bridges' signalling, and peers that cannot do WebRTC).

Each link message is one binary WebSocket message (RFC 6455 §5.6), so the link is
framed.  Back-pressure is aiohttp's: ``send_bytes`` awaits the transport's drain
once its write buffer passes the writer limit, and the reader pauses the TCP socket
once its queue passes its limit, so a peer that stops reading stalls our ``send``
instead of growing memory on either side.  A text message is a protocol error that
closes the link.

Client: :func:`connect_websocket`.  Server: :func:`websocket_handler` builds an
aiohttp request handler that wraps each accepted WebSocket in a link and hands it
to a callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from peer.errors import LinkClosed, TransportError, UsageError

log = logging.getLogger(__name__)

#: Largest message accepted (aiohttp's default is 4 MiB; cells are packed into ~16 KiB).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 30.0
#: How long ``close`` waits for the remote's closing handshake (aiohttp's default is 10 s).
DEFAULT_CLOSE_TIMEOUT = 2.0


class WebSocketError(TransportError):
    """The WebSocket could not be opened."""

    kind = "websocket"


def _peer_cert_fingerprint(ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> bytes | None:
    """SHA-256 of the remote's TLS certificate (wss:// only), as this side's TLS layer saw it."""
    ssl_object = ws.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).digest() if der else None


def _address(peername: Any) -> tuple[str, int] | None:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return (str(peername[0]), int(peername[1]))
    return None


class WebSocketLink:
    """A :class:`peer.transport.base.Link` over one aiohttp WebSocket (client or server side)."""

    framed = True
    server_cert_only = False

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        *,
        initiator: bool,
        session: aiohttp.ClientSession | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.initiator = initiator
        self._ws = ws
        self._session = session
        self._max = max_message_size
        self._recv_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._closed_event = asyncio.Event()
        self._reason: str | None = None
        self._remote_address = _address(ws.get_extra_info("peername"))
        self._peer_fingerprint = _peer_cert_fingerprint(ws)

    @property
    def closed(self) -> bool:
        return self._closed_event.is_set() or self._ws.closed

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        return self._peer_fingerprint

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        # The ssl module does not expose our own certificate per connection.
        return None

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._remote_address

    @property
    def close_reason(self) -> str | None:
        return self._reason

    async def send(self, data: bytes) -> None:
        """Send one binary message; waits on the transport's drain when its buffer is full."""
        if len(data) > self._max:
            raise UsageError(f"message of {len(data)} bytes exceeds {self._max}")
        if self.closed:
            raise LinkClosed(self._reason or "the link is closed")
        try:
            async with self._send_lock:
                await self._ws.send_bytes(bytes(data))
        except (ConnectionError, RuntimeError) as exc:
            await self._finish("the connection was lost while sending")
            raise LinkClosed(self._reason or "the link is closed") from exc

    async def recv(self) -> bytes:
        """The next binary message; raises LinkClosed when the WebSocket closes."""
        async with self._recv_lock:
            if self._closed_event.is_set():
                raise LinkClosed(self._reason or "the link is closed")
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                return data
            if msg.type is aiohttp.WSMsgType.TEXT:
                reason = "the remote sent a text message on a binary link"
            elif msg.type is aiohttp.WSMsgType.ERROR:
                reason = f"websocket error: {type(msg.data).__name__}"
            else:
                reason = "the remote closed the link"
            await self._finish(reason)
            raise LinkClosed(reason)

    async def close(self) -> None:
        """Close the WebSocket (idempotent)."""
        await self._finish("the link was closed locally")

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    async def _finish(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._closed_event.set()
        try:
            await self._ws.close()
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def connect_websocket(
    url: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    session: aiohttp.ClientSession | None = None,
    ssl: Any = True,
) -> WebSocketLink:
    """Open a WebSocket link to ``url`` (ws:// or wss://); WebSocketError when it cannot be opened.

    A session passed in stays the caller's; otherwise the link owns (and closes) its own.
    """
    if not url.startswith(("ws://", "wss://")):
        raise UsageError("a WebSocket URL starts with ws:// or wss://")
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        ws = await asyncio.wait_for(
            client.ws_connect(
                url,
                max_msg_size=max_message_size,
                autoping=True,
                ssl=ssl,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=DEFAULT_CLOSE_TIMEOUT),
            ),
            timeout,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if own:
            await client.close()
        raise WebSocketError(f"cannot open the WebSocket: {type(exc).__name__}") from exc
    return WebSocketLink(
        ws, initiator=True, session=client if own else None, max_message_size=max_message_size
    )


OnLink = Callable[[WebSocketLink], Awaitable[None]]


def websocket_handler(
    on_link: OnLink, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler: accept a WebSocket, wrap it in a link and await ``on_link(link)``.

    ``on_link`` may keep the link (hand it to a manager) and return; the handler then
    waits until the link is closed, because aiohttp closes the socket when the handler
    returns.  Install it with ``app.router.add_get(path, websocket_handler(cb))``.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=max_message_size, autoping=True, timeout=DEFAULT_CLOSE_TIMEOUT
        )
        await ws.prepare(request)
        link = WebSocketLink(ws, initiator=False, max_message_size=max_message_size)
        try:
            await on_link(link)
            await link.wait_closed()
        finally:
            await link.close()
        return ws

    return handler
