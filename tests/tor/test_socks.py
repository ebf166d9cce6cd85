"""SOCKS5 server (RFC 1928): curl --socks5-hostname through it to a local server, error replies
mapped from tor END reasons, and the request parser under hypothesis."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import WireError
from peer.net.socks import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    REP_ADDRESS_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    ByteStream,
    ConnectRequest,
    SocksError,
    SocksServer,
    StreamOpenError,
    TcpByteStream,
    parse_greeting,
    parse_request,
    reply_for_end_reason,
)

BODY = bytes(range(256)) * 4096  # 1 MiB


async def http_server() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def make_opener(port: int, seen: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    async def open_stream(host: str, p: int) -> ByteStream:
        seen.append((host, p))
        return await TcpByteStream.connect("127.0.0.1", port)  # the name is never resolved here

    return open_stream


def request_bytes(atyp: int, addr: bytes, port: int, cmd: int = 1) -> bytes:
    head = bytes([5, cmd, 0, atyp])
    if atyp == ATYP_DOMAIN:
        head += bytes([len(addr)])
    return head + addr + port.to_bytes(2, "big")


@pytest.mark.needs_tool("curl")
async def test_curl_socks5_hostname_fetches_intact() -> None:
    web = await http_server()
    web_port = web.sockets[0].getsockname()[1]
    seen: list[tuple[str, int]] = []
    socks = SocksServer(make_opener(web_port, seen))
    host, port = await socks.start()
    assert host == "127.0.0.1"
    try:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--socks5-hostname",
            f"{host}:{port}",
            "http://files.example.invalid:8080/blob",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert hashlib.sha256(out).digest() == hashlib.sha256(BODY).digest()
        assert seen == [("files.example.invalid", 8080)]
    finally:
        await socks.close()
        web.close()
        await web.wait_closed()


async def socks_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(request)
    reply = await reader.readexactly(10)
    writer.close()
    return reply


async def test_small_client_ipv4_ipv6_domain() -> None:
    web = await http_server()
    web_port = web.sockets[0].getsockname()[1]
    seen: list[tuple[str, int]] = []
    socks = SocksServer(make_opener(web_port, seen))
    _, port = await socks.start()
    try:
        for atyp, addr in (
            (ATYP_IPV4, socket.inet_aton("127.0.0.1")),
            (ATYP_IPV6, bytes(15) + b"\x01"),
            (ATYP_DOMAIN, b"example.invalid"),
        ):
            reply = await socks_exchange(port, request_bytes(atyp, addr, 80))
            assert reply[1] == REP_SUCCEEDED
        assert seen == [("127.0.0.1", 80), ("::1", 80), ("example.invalid", 80)]
    finally:
        await socks.close()
        web.close()


@pytest.mark.parametrize(
    ("reason", "rep"),
    [
        (3, REP_CONNECTION_REFUSED),
        (4, REP_NOT_ALLOWED),
        (2, REP_HOST_UNREACHABLE),
        (7, REP_TTL_EXPIRED),
        (1, REP_GENERAL_FAILURE),
        (None, REP_GENERAL_FAILURE),
    ],
)
async def test_stream_failures_map_to_socks_replies(reason: int | None, rep: int) -> None:
    async def failing(host: str, port: int) -> ByteStream:
        raise StreamOpenError("no", reason)

    socks = SocksServer(failing)
    _, port = await socks.start()
    try:
        reply = await socks_exchange(port, request_bytes(ATYP_DOMAIN, b"x.invalid", 80))
        assert reply == bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0])
        assert reply_for_end_reason(reason) == rep
    finally:
        await socks.close()


async def test_unsupported_command_and_address_type() -> None:
    async def never(host: str, port: int) -> ByteStream:
        raise AssertionError("must not be called")

    socks = SocksServer(never)
    _, port = await socks.start()
    try:
        assert (await socks_exchange(port, request_bytes(ATYP_IPV4, bytes(4), 80, cmd=2)))[
            1
        ] == REP_COMMAND_NOT_SUPPORTED
        assert (await socks_exchange(port, bytes([5, 1, 0, 9, 0, 0, 0, 0]) + bytes(2)))[
            1
        ] == REP_ADDRESS_NOT_SUPPORTED
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x05\x01\x02")  # only username/password offered
        assert await reader.readexactly(2) == b"\x05\xff"
        writer.close()
    finally:
        await socks.close()


# ----- parser ------------------------------------------------------------------------------------
hostnames = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,60}", fullmatch=True)


@given(
    st.one_of(
        st.builds(lambda a: (ATYP_IPV4, a), st.binary(min_size=4, max_size=4)),
        st.builds(lambda a: (ATYP_IPV6, a), st.binary(min_size=16, max_size=16)),
        st.builds(lambda h: (ATYP_DOMAIN, h.encode()), hostnames),
    ),
    st.integers(1, 65535),
    st.binary(max_size=8),
)
def test_request_roundtrip_and_split(addr: tuple[int, bytes], port: int, trailer: bytes) -> None:
    atyp, raw = addr
    data = request_bytes(atyp, raw, port)
    got = parse_request(data + trailer)
    assert got is not None
    req, used = got
    assert used == len(data) and req.port == port and req.atyp == atyp
    if atyp == ATYP_DOMAIN:
        assert req.host == raw.decode()
    for cut in range(len(data)):  # any prefix asks for more bytes
        assert parse_request(data[:cut]) is None


@given(st.binary(max_size=300))
def test_request_parser_garbage(data: bytes) -> None:
    try:
        got = parse_request(data)
    except SocksError as exc:
        assert isinstance(exc, WireError)
        return
    if got is not None:
        assert isinstance(got[0], ConnectRequest) and 1 <= got[0].port <= 65535


@given(st.binary(max_size=300))
def test_greeting_parser_garbage(data: bytes) -> None:
    try:
        got = parse_greeting(data)
    except SocksError:
        return
    if got is not None:
        methods, used = got
        assert len(methods) == data[1] and used == 2 + data[1]
