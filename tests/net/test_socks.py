"""The SOCKS5 server (peer.net.socks, RFC 1928) over a real 127.0.0.1 socket, with in-memory streams.

``open_stream`` is a fake that records what it was asked and hands back a
:class:`MemoryStream` the test drives: method negotiation, CONNECT with each address
type, refused requests and their reply codes, relaying both ways, closing from either
side, and random request bytes under hypothesis (an answer or a close, never an escaped
exception, never a task left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import LinkClosed, PathError, PeerError
from peer.net.socks import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    END_CONNECTREFUSED,
    END_EXITPOLICY,
    END_RESOLVEFAILED,
    END_TIMEOUT,
    REP_ADDRESS_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    SocksServer,
    StreamOpenError,
    parse_greeting,
    reply_for_end_reason,
)

#: Safety net so a broken server fails the test instead of hanging it (not a speed assertion).
WAIT = 20.0
NO_AUTH = b"\x05\x01\x00"
CHOSE_NO_AUTH = b"\x05\x00"


def reply(rep: int) -> bytes:
    """The reply the server sends: VER REP RSV, then an all-zero IPv4 bound address."""
    return bytes([5, rep, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


def request(atyp: int, addr: bytes, port: int, cmd: int = 1, ver: int = 5) -> bytes:
    head = bytes([ver, cmd, 0, atyp])
    if atyp == ATYP_DOMAIN:
        head += bytes([len(addr)])
    return head + addr + port.to_bytes(2, "big")


class MemoryStream:
    """A ByteStream in memory: the server's writes land in ``sent``; the test feeds its reads."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closes = 0
        self._buf = bytearray()
        self._eof = False
        self._error: PeerError | None = None
        self._readable = asyncio.Event()
        self._written = asyncio.Event()

    def push(self, data: bytes) -> None:
        self._buf += data
        self._readable.set()

    def end(self) -> None:
        self._eof = True
        self._readable.set()

    def fail(self, error: PeerError) -> None:
        self._error = error
        self._readable.set()

    async def read(self, n: int) -> bytes:
        while not self._buf and not self._eof and self._error is None:
            self._readable.clear()
            await self._readable.wait()
        if self._buf:
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out
        if self._error is not None:
            raise self._error
        return b""

    async def write(self, data: bytes) -> None:
        self.sent += data
        self._written.set()

    async def close(self) -> None:
        self.closes += 1

    async def wait_sent(self, n: int) -> bytes:
        """What the server has written once it is at least ``n`` bytes."""

        async def poll() -> None:
            while len(self.sent) < n:
                self._written.clear()
                await self._written.wait()

        await asyncio.wait_for(poll(), WAIT)
        return bytes(self.sent)


@dataclass
class Opener:
    """The ``open_stream`` callable: records (host, port), then fails with ``error`` or opens a stream."""

    error: Exception | None = None
    calls: list[tuple[str, int]] = field(default_factory=list)
    streams: list[MemoryStream] = field(default_factory=list)
    on_open: Callable[[MemoryStream], None] | None = None

    async def __call__(self, host: str, port: int) -> MemoryStream:
        self.calls.append((host, port))
        if self.error is not None:
            raise self.error
        s = MemoryStream()
        if self.on_open is not None:
            self.on_open(s)
        self.streams.append(s)
        return s


@dataclass
class Socks:
    server: SocksServer
    opener: Opener
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def open(self, req: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Negotiate no-auth, send ``req`` and check the success reply."""
        reader, writer = await self.connect()
        writer.write(NO_AUTH + req)
        assert await read_exactly(reader, 12) == CHOSE_NO_AUTH + reply(REP_SUCCEEDED)
        return reader, writer

    async def answer(self, data: bytes) -> bytes:
        """Everything the server says to a client that sends ``data`` and then stops sending."""
        reader, writer = await self.connect()
        try:
            writer.write(data)
            writer.write_eof()
            return await read_all(reader)
        finally:
            writer.close()


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), WAIT)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def no_tasks_left(baseline: set[asyncio.Task[Any]]) -> None:
    """Wait until every task started since ``baseline`` has ended (the handlers and their pumps)."""

    waiting = asyncio.current_task()

    def extra() -> set[asyncio.Task[Any]]:
        mine = {waiting, asyncio.current_task()}
        return {t for t in asyncio.all_tasks() if t not in baseline and t not in mine}

    async def poll() -> None:
        while extra():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[Socks]:
    """A SocksServer on 127.0.0.1 with a fake opener; on exit, every connection of the test must
    have ended, no exception may have escaped a handler, and the server keeps no task."""
    baseline = set(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: escaped.append(ctx))
    opener = Opener()
    server = SocksServer(opener, **options)
    host, port = await server.start()
    assert host == "127.0.0.1"
    try:
        yield Socks(server, opener, port)
        await no_tasks_left(baseline)
        assert not server._tasks  # finished handlers are forgotten
    finally:
        await asyncio.wait_for(server.close(), WAIT)
        loop.set_exception_handler(None)
    assert escaped == []


@pytest.fixture
async def socks() -> AsyncIterator[Socks]:
    async with serving() as s:
        yield s


# ---- method negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize("methods", [b"\x00", b"\x02\x00\x01", b"\x80\xfe\x00"])
async def test_no_auth_is_chosen_when_offered(socks: Socks, methods: bytes) -> None:
    reader, writer = await socks.connect()
    writer.write(bytes([5, len(methods)]) + methods)
    assert await read_exactly(reader, 2) == CHOSE_NO_AUTH
    writer.close()


@pytest.mark.parametrize("methods", [b"\x02", b"\x01\x02", b"\xff"])
async def test_other_methods_are_refused(socks: Socks, methods: bytes) -> None:
    assert await socks.answer(bytes([5, len(methods)]) + methods) == b"\x05\xff"
    assert socks.opener.calls == []


@pytest.mark.parametrize(
    "greeting", [b"\x04\x01\x00", b"\x00\x01\x00", b"\x05\x00"], ids=["v4", "v0", "none"]
)
async def test_a_bad_greeting_is_closed_without_reply(socks: Socks, greeting: bytes) -> None:
    assert await socks.answer(greeting + request(ATYP_IPV4, bytes(4), 80)) == b""
    assert socks.opener.calls == []


# ---- CONNECT -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("atyp", "addr", "port", "expected"),
    [
        (ATYP_IPV4, bytes([127, 0, 0, 1]), 80, ("127.0.0.1", 80)),
        (ATYP_IPV6, bytes(15) + b"\x01", 443, ("::1", 443)),
        (ATYP_IPV6, bytes.fromhex("20010db8000000000000000000000001"), 8443, ("2001:db8::1", 8443)),
        (ATYP_DOMAIN, b"files.example.invalid", 8080, ("files.example.invalid", 8080)),
        (ATYP_DOMAIN, b"x" * 255, 65535, ("x" * 255, 65535)),
    ],
    ids=["ipv4", "ipv6-loopback", "ipv6", "domain", "longest-domain"],
)
async def test_connect_passes_the_address_as_given(
    socks: Socks, atyp: int, addr: bytes, port: int, expected: tuple[str, int]
) -> None:
    reader, writer = await socks.open(request(atyp, addr, port))
    assert socks.opener.calls == [expected]  # a domain name is not resolved here
    socks.opener.streams[0].end()
    assert await read_all(reader) == b""
    writer.close()


async def test_a_request_split_in_pieces_is_reassembled(socks: Socks) -> None:
    reader, writer = await socks.connect()
    data = NO_AUTH + request(ATYP_DOMAIN, b"slow.example.invalid", 443)
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)
    assert await read_exactly(reader, 12) == CHOSE_NO_AUTH + reply(REP_SUCCEEDED)
    assert socks.opener.calls == [("slow.example.invalid", 443)]
    socks.opener.streams[0].end()
    assert await read_all(reader) == b""
    writer.close()


@pytest.mark.parametrize("cmd", [2, 3, 0, 0x7F], ids=["bind", "udp-associate", "zero", "unknown"])
async def test_commands_other_than_connect_are_not_supported(socks: Socks, cmd: int) -> None:
    got = await socks.answer(NO_AUTH + request(ATYP_IPV4, bytes([127, 0, 0, 1]), 80, cmd=cmd))
    assert got == CHOSE_NO_AUTH + reply(REP_COMMAND_NOT_SUPPORTED)
    assert socks.opener.calls == []


@pytest.mark.parametrize("atyp", [0, 2, 5, 0xFF])
async def test_unknown_address_types_are_not_supported(socks: Socks, atyp: int) -> None:
    got = await socks.answer(NO_AUTH + bytes([5, 1, 0, atyp]) + bytes(6))
    assert got == CHOSE_NO_AUTH + reply(REP_ADDRESS_NOT_SUPPORTED)
    assert socks.opener.calls == []


@pytest.mark.parametrize(
    "req",
    [
        request(ATYP_DOMAIN, b"", 80),
        request(ATYP_DOMAIN, "bücher.example".encode(), 80),
        request(ATYP_DOMAIN, b"a b.example", 80),
        request(ATYP_DOMAIN, b"user@host.example", 80),
        request(ATYP_DOMAIN, b"host.example:22", 80),
        request(ATYP_DOMAIN, b"new\nline.example", 80),
        request(ATYP_IPV4, bytes([127, 0, 0, 1]), 0),
    ],
    ids=["empty-name", "not-ascii", "space", "userinfo", "colon", "control", "port-0"],
)
async def test_malformed_destinations_get_a_general_failure(socks: Socks, req: bytes) -> None:
    assert await socks.answer(NO_AUTH + req) == CHOSE_NO_AUTH + reply(REP_GENERAL_FAILURE)
    assert socks.opener.calls == []


async def test_a_request_with_a_bad_version_is_closed_without_reply(socks: Socks) -> None:
    got = await socks.answer(NO_AUTH + request(ATYP_IPV4, bytes([127, 0, 0, 1]), 80, ver=4))
    assert got == CHOSE_NO_AUTH
    assert socks.opener.calls == []


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 6, 9, 11])
async def test_a_truncated_handshake_is_closed(socks: Socks, cut: int) -> None:
    data = NO_AUTH + request(ATYP_DOMAIN, b"cut.example", 80)
    got = await socks.answer(data[:cut])
    assert got == (CHOSE_NO_AUTH if cut >= len(NO_AUTH) else b"")
    assert socks.opener.calls == []


async def test_a_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    async with serving(handshake_timeout=0.05) as socks:
        reader, writer = await socks.connect()
        writer.write(NO_AUTH + b"\x05\x01")  # then nothing more, without closing
        assert await read_all(reader) == CHOSE_NO_AUTH
        writer.close()
        assert socks.opener.calls == []


# ---- open failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "rep"),
    [
        (StreamOpenError("refused", END_CONNECTREFUSED), REP_CONNECTION_REFUSED),
        (StreamOpenError("policy", END_EXITPOLICY), REP_NOT_ALLOWED),
        (StreamOpenError("no such name", END_RESOLVEFAILED), REP_HOST_UNREACHABLE),
        (StreamOpenError("timed out", END_TIMEOUT), REP_TTL_EXPIRED),
        (StreamOpenError("misc", 1), REP_GENERAL_FAILURE),
        (StreamOpenError("destroyed", 11), REP_GENERAL_FAILURE),
        (StreamOpenError("no END", None), REP_GENERAL_FAILURE),
        (PathError("no circuit"), REP_GENERAL_FAILURE),
    ],
    ids=["connectrefused", "exitpolicy", "resolvefailed", "timeout", "misc", "other", "none", "peer-error"],
)
async def test_open_failures_get_their_reply_code(socks: Socks, error: Exception, rep: int) -> None:
    socks.opener.error = error
    got = await socks.answer(NO_AUTH + request(ATYP_DOMAIN, b"gone.example.invalid", 443) + b"early data")
    assert got == CHOSE_NO_AUTH + reply(rep)
    assert socks.opener.calls == [("gone.example.invalid", 443)]


def test_end_reason_mapping_follows_the_docs() -> None:
    """docs/tor.md: CONNECTREFUSED -> 05, EXITPOLICY -> 02, RESOLVEFAILED -> 04, TIMEOUT -> 06, else 01."""
    assert {r: reply_for_end_reason(r) for r in (3, 4, 2, 7)} == {3: 0x05, 4: 0x02, 2: 0x04, 7: 0x06}
    for other in (None, 0, 1, 5, 6, 8, 9, 10, 11, 12, 13, 14, 255):
        assert reply_for_end_reason(other) == 0x01


# ---- relaying ----------------------------------------------------------------------------------


async def test_data_is_relayed_both_ways_in_order(socks: Socks) -> None:
    up = os.urandom(300_000)
    down = os.urandom(500_000)
    reader, writer = await socks.connect()
    writer.write(NO_AUTH + request(ATYP_DOMAIN, b"echo.example.invalid", 7) + b"optimistic")
    assert await read_exactly(reader, 12) == CHOSE_NO_AUTH + reply(REP_SUCCEEDED)
    stream = socks.opener.streams[0]
    assert await stream.wait_sent(10) == b"optimistic"  # data sent with the request goes first
    writer.write(up)
    await writer.drain()
    assert await stream.wait_sent(10 + len(up)) == b"optimistic" + up
    for i in range(0, len(down), 70_000):
        stream.push(down[i : i + 70_000])
    assert await read_exactly(reader, len(down)) == down
    stream.end()
    assert await read_all(reader) == b""  # the stream ended: the client's connection closes
    assert stream.closes >= 1
    writer.close()


async def test_a_client_that_stops_sending_still_gets_the_answer(socks: Socks) -> None:
    reader, writer = await socks.open(request(ATYP_IPV4, bytes([127, 0, 0, 1]), 80))
    stream = socks.opener.streams[0]
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    writer.write_eof()  # half-close, as an HTTP/1.0 client may
    assert await stream.wait_sent(18) == b"GET / HTTP/1.0\r\n\r\n"
    stream.push(b"HTTP/1.0 200 OK\r\n\r\nbody")
    stream.end()
    assert await read_all(reader) == b"HTTP/1.0 200 OK\r\n\r\nbody"
    assert stream.closes >= 1
    writer.close()


async def test_a_stream_that_fails_closes_the_client(socks: Socks) -> None:
    reader, writer = await socks.open(request(ATYP_DOMAIN, b"flaky.example.invalid", 80))
    stream = socks.opener.streams[0]
    stream.push(b"partial")
    stream.fail(LinkClosed("the circuit was destroyed"))
    assert await read_all(reader) == b"partial"
    assert stream.closes >= 1
    writer.close()


async def test_a_client_that_goes_away_closes_the_stream(socks: Socks) -> None:
    _reader, writer = await socks.open(request(ATYP_DOMAIN, b"bye.example.invalid", 80))
    stream = socks.opener.streams[0]
    writer.close()
    await writer.wait_closed()
    stream.push(b"x" * 200_000)  # writing to the gone client fails; the server gives up
    stream.push(b"y" * 200_000)

    async def closed() -> None:
        while not stream.closes:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(closed(), WAIT)


async def test_closing_the_server_ends_open_connections() -> None:
    async with serving() as socks:
        reader, writer = await socks.open(request(ATYP_DOMAIN, b"idle.example.invalid", 80))
        closing = asyncio.ensure_future(socks.server.close())
        await asyncio.wait({closing}, timeout=WAIT)
        assert closing.done()  # close() ends the relayed connections itself (they would never end)
        assert await read_all(reader) == b""
        assert socks.opener.streams[0].closes >= 1
        writer.close()


# ---- random bytes ------------------------------------------------------------------------------

greetings = st.one_of(
    st.just(NO_AUTH),
    st.binary(max_size=4).map(lambda b: b"\x05" + b),
    st.binary(max_size=6),
)
requests = st.one_of(
    st.binary(max_size=40),
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 0x7F]),
        st.sampled_from([0, ATYP_IPV4, 2, ATYP_DOMAIN, ATYP_IPV6, 0xFF]),
        st.binary(max_size=30),
    ).map(lambda t: bytes([5, t[0], 0, t[1]]) + t[2]),
)


def well_formed(answer: bytes, data: bytes) -> bool:
    """A method choice (or nothing), then at most one reply; only a success may be followed by data."""
    try:
        greeting = parse_greeting(data)
    except PeerError:
        return answer == b""
    if greeting is None:
        return answer == b""
    if 0 not in greeting[0]:
        return answer == b"\x05\xff"
    if answer[:2] != CHOSE_NO_AUTH:
        return False
    rest = answer[2:]
    return rest == b"" or (len(rest) == 10 and rest[0] == 5 and rest[2:] == reply(0)[2:] and rest[1] <= 8)


def test_random_requests_get_an_answer_or_a_close() -> None:
    loop = asyncio.new_event_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: escaped.append(ctx))

    def open_and_end(s: MemoryStream) -> None:
        s.end()

    opener = Opener(on_open=open_and_end)
    server = SocksServer(opener)

    async def start() -> tuple[Socks, set[asyncio.Task[Any]]]:
        _, port = await server.start()
        return Socks(server, opener, port), set(asyncio.all_tasks())

    socks, baseline = loop.run_until_complete(start())

    @given(greetings, requests)
    def check(greeting: bytes, req: bytes) -> None:
        data = greeting + req

        async def exchange() -> bytes | None:
            try:
                answer: bytes | None = await socks.answer(data)
            except ConnectionResetError:  # the server closed with bytes of ours unread: a close too
                answer = None
            await no_tasks_left(baseline)
            return answer

        answer = loop.run_until_complete(exchange())
        assert answer is None or well_formed(answer, data), (data, answer)

    try:
        check()
    finally:
        loop.run_until_complete(server.close())
        loop.close()
    assert escaped == []
