"""A SOCKS5 server (RFC 1928) that hands each CONNECT to an injected stream opener.

Only what a Tor client needs: no authentication (method 0x00), the CONNECT command, and
IPv4, IPv6 or domain-name addresses.  A domain name is **not** resolved here: it is passed to
``open_stream(host, port)`` as given, so that the exit resolves it (curl ``--socks5-hostname``).
The server listens on 127.0.0.1 by default.

Replies (RFC 1928 §6): 00 success; 01 general failure; 02 not allowed by ruleset; 04 host
unreachable; 05 connection refused; 06 TTL expired; 07 command not supported; 08 address type
not supported.  A failed ``open_stream`` raises :class:`StreamOpenError` carrying the tor END
reason (tor-spec §6.3), mapped by :func:`reply_for_end_reason`.

The request parser is sans-I/O (:func:`parse_greeting`, :func:`parse_request`), so it can be
property-tested; the asyncio server pumps bytes both ways once the stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from peer.errors import PeerError, WireError

log = logging.getLogger(__name__)

SOCKS_VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_NOT_SUPPORTED = 0x08

# tor-spec §6.3 END reasons that have their own SOCKS reply.
END_RESOLVEFAILED = 2
END_CONNECTREFUSED = 3
END_EXITPOLICY = 4
END_TIMEOUT = 7
_END_TO_REPLY = {
    END_CONNECTREFUSED: REP_CONNECTION_REFUSED,
    END_EXITPOLICY: REP_NOT_ALLOWED,
    END_RESOLVEFAILED: REP_HOST_UNREACHABLE,
    END_TIMEOUT: REP_TTL_EXPIRED,
}
PUMP_CHUNK = 64 * 1024


def reply_for_end_reason(reason: int | None) -> int:
    """The SOCKS5 reply code for a stream that ended with tor END ``reason`` (None: general failure)."""
    return _END_TO_REPLY.get(reason, REP_GENERAL_FAILURE) if reason is not None else REP_GENERAL_FAILURE


class SocksError(WireError):
    """A malformed or unsupported SOCKS request; ``reply`` is the code to answer (None: just close)."""

    kind = "socks"

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class StreamOpenError(PeerError):
    """``open_stream`` failed; ``end_reason`` is the tor END reason, if the exit sent one."""

    kind = "stream-open"

    def __init__(self, message: str, end_reason: int | None = None) -> None:
        super().__init__(message)
        self.end_reason = end_reason


class ByteStream(Protocol):
    """What ``open_stream`` returns: an ordered, reliable byte stream (a tor stream, a TCP socket)."""

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the end of the stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for flow control."""
        ...

    async def close(self) -> None:
        """Close both directions (idempotent)."""
        ...


OpenStream = Callable[[str, int], Awaitable[ByteStream]]


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    host: str  # dotted IPv4, IPv6 text, or a domain name as given
    port: int
    atyp: int


def parse_greeting(data: bytes) -> tuple[tuple[int, ...], int] | None:
    """``VER NMETHODS METHODS``: ``(methods, bytes used)``, or None if more bytes are needed."""
    if len(data) < 2:
        return None
    if data[0] != SOCKS_VERSION:
        raise SocksError(f"not SOCKS5 (version byte {data[0]})")
    n = data[1]
    if n == 0:
        raise SocksError("SOCKS5 greeting offers no method")
    if len(data) < 2 + n:
        return None
    return tuple(data[2 : 2 + n]), 2 + n


def parse_request(data: bytes) -> tuple[ConnectRequest, int] | None:
    """``VER CMD RSV ATYP DST.ADDR DST.PORT``: ``(request, bytes used)``, or None if incomplete."""
    if len(data) < 5:
        return None
    ver, cmd, _rsv, atyp = data[0], data[1], data[2], data[3]
    if ver != SOCKS_VERSION:
        raise SocksError(f"not SOCKS5 (version byte {ver})")
    if atyp == ATYP_IPV4:
        alen, start = 4, 4
    elif atyp == ATYP_IPV6:
        alen, start = 16, 4
    elif atyp == ATYP_DOMAIN:
        alen, start = data[4], 5
        if alen == 0:
            raise SocksError("empty domain name", REP_GENERAL_FAILURE)
    else:
        raise SocksError(f"address type {atyp} not supported", REP_ADDRESS_NOT_SUPPORTED)
    end = start + alen + 2
    if len(data) < end:
        return None
    raw = data[start : start + alen]
    port = int.from_bytes(data[start + alen : end], "big")
    if cmd != CMD_CONNECT:
        raise SocksError(f"command {cmd} not supported", REP_COMMAND_NOT_SUPPORTED)
    if atyp == ATYP_IPV4:
        host = str(ipaddress.IPv4Address(raw))
    elif atyp == ATYP_IPV6:
        host = str(ipaddress.IPv6Address(raw))
    else:
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SocksError("domain name is not ASCII", REP_GENERAL_FAILURE) from exc
        if not host.isprintable() or any(c in host for c in " :/\\@"):
            raise SocksError("malformed domain name", REP_GENERAL_FAILURE)
    if port == 0:
        raise SocksError("port 0", REP_GENERAL_FAILURE)
    return ConnectRequest(host, port, atyp), end


def encode_reply(rep: int) -> bytes:
    """``VER REP RSV ATYP BND.ADDR BND.PORT`` with an all-zero IPv4 bound address (as tor does)."""
    return bytes([SOCKS_VERSION, rep, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


class SocksServer:
    """Serves SOCKS5 CONNECT on ``host:port`` and pumps each connection through ``open_stream``."""

    def __init__(self, open_stream: OpenStream, *, handshake_timeout: float = 30.0) -> None:
        self.open_stream = open_stream
        self.handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("SOCKS server not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return (str(host), int(port))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        return self.address

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() ends the connection: return, as asyncio 3.11 logs a cancelled handler as an error
            if not self._closing:
                raise
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_until(
        self, reader: asyncio.StreamReader, buf: bytearray, parse: Callable[[bytes], object | None]
    ) -> object:
        while True:
            got = parse(bytes(buf))
            if got is not None:
                return got
            chunk = await asyncio.wait_for(reader.read(512), self.handshake_timeout)
            if not chunk:
                raise ConnectionError("client went away during the SOCKS handshake")
            buf += chunk

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            greeting = await self._read_until(reader, buf, parse_greeting)
            assert isinstance(greeting, tuple)
            methods, used = greeting
            del buf[:used]
            if METHOD_NO_AUTH not in methods:
                writer.write(bytes([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE]))
                await writer.drain()
                return
            writer.write(bytes([SOCKS_VERSION, METHOD_NO_AUTH]))
            await writer.drain()
            got = await self._read_until(reader, buf, parse_request)
            assert isinstance(got, tuple)
            request, used = got
            del buf[:used]
        except SocksError as exc:
            if exc.reply is not None:
                writer.write(encode_reply(exc.reply))
                await writer.drain()
            log.debug("SOCKS request refused: %s", exc)
            return
        try:
            stream = await self.open_stream(request.host, request.port)
        except StreamOpenError as exc:
            writer.write(encode_reply(reply_for_end_reason(exc.end_reason)))
            await writer.drain()
            log.debug("SOCKS stream failed: %s", exc)
            return
        except PeerError as exc:
            writer.write(encode_reply(REP_GENERAL_FAILURE))
            await writer.drain()
            log.debug("SOCKS stream failed: %s", exc.kind)
            return
        try:
            writer.write(encode_reply(REP_SUCCEEDED))
            await writer.drain()
            if buf:  # data the client sent right after its request (optimistic data)
                await stream.write(bytes(buf))
            await pump(reader, writer, stream)
        finally:
            await stream.close()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ByteStream) -> None:
    """Copy bytes both ways until either side ends; then close the other direction."""

    async def upstream() -> None:
        while True:
            data = await reader.read(PUMP_CHUNK)
            if not data:
                return
            await stream.write(data)

    async def downstream() -> None:
        while True:
            data = await stream.read(PUMP_CHUNK)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            up.cancel()
        else:  # the client finished sending: keep delivering the answer until the stream ends
            with contextlib.suppress(ConnectionError, OSError, PeerError):
                await down
    finally:
        for t in (up, down):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


class TcpByteStream:
    """A :class:`ByteStream` over a plain TCP connection (tests; direct connections)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> TcpByteStream:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
