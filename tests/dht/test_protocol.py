"""dht.protocol: rpcudp framing, hardened (sizes, strict envelope, reply source, adaptive timeouts)."""

from __future__ import annotations

import asyncio
import random

import umsgpack  # type: ignore[import-untyped]

from dht.messages import Ping, Request
from dht.protocol import REPLY, REQUEST, DhtProtocol
from dht.rtt import RttEstimator

from .helpers import raw_client


async def endpoint(host: str, handler) -> DhtProtocol:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    rng = random.Random(1)
    _, proto = await loop.create_datagram_endpoint(
        lambda: DhtProtocol(handler, rng.randbytes, RttEstimator(initial=0.2, minimum=0.1)),
        local_addr=(host, 0),
    )
    return proto


def address(proto: DhtProtocol) -> tuple[str, int]:
    assert proto.transport is not None
    return proto.transport.get_extra_info("sockname")[:2]


async def test_request_reply_and_bad_datagrams() -> None:
    seen: list[bytes] = []

    def echo(payload: bytes, addr: tuple[str, int], size: int) -> bytes:
        seen.append(payload)
        return b"ok:" + payload[:4]

    server = await endpoint("127.210.0.1", echo)
    client = await endpoint("127.210.0.2", lambda p, a, s: None)
    ping = Request(bytes(20), Ping()).encode()
    assert await client.call(address(server), "ping", ping) == b"ok:" + ping[:4]
    raw = await raw_client("127.210.0.3")
    assert raw.transport is not None
    good = bytes([REQUEST]) + bytes(20) + umsgpack.packb(["ping", [ping]])
    bad = [
        good[:10],  # too short
        bytes([REQUEST]) + bytes(20) + b"\xc1",  # not msgpack
        bytes([REQUEST]) + bytes(20) + umsgpack.packb(["find_node", [ping]]),  # name does not match type
        bytes([REQUEST]) + bytes(20) + umsgpack.packb(["ping", ping]),  # wrong envelope shape
        bytes([REQUEST]) + bytes(20) + umsgpack.packb({"ping": [ping]}),
        bytes([7]) + good[1:],  # unknown kind
        good + bytes(1200),  # over 1,200 bytes
        bytes([REPLY]) + bytes(20) + umsgpack.packb(b"unsolicited"),
    ]
    before = server.stats.dropped
    for d in bad:
        assert await raw.exchange(d, address(server), wait=0.05) is None
    assert server.stats.dropped - before == len(bad)
    assert await raw.exchange(good, address(server)) is not None
    assert len(seen) == 2
    raw.transport.close()
    client.transport.close()
    server.transport.close()


async def test_reply_only_from_the_address_asked_and_timeouts() -> None:
    silent = await raw_client("127.211.0.1")
    client = await endpoint("127.211.0.2", lambda p, a, s: None)
    spoofer = await raw_client("127.211.0.3")
    assert silent.transport is not None and spoofer.transport is not None
    target = silent.transport.get_extra_info("sockname")[:2]
    fut = client.call(target, "ping", Request(bytes(20), Ping()).encode())
    await asyncio.sleep(0.02)
    ((request, _),) = silent.received
    msg_id = request[1:21]
    # The right message id from the wrong address is ignored.
    spoofer.transport.sendto(bytes([REPLY]) + msg_id + umsgpack.packb(b"forged"), address(client))
    assert await fut is None  # timed out
    assert client.stats.timeouts == 1 and client.stats.dropped == 1
    # A late reply from the right address feeds the RTT estimate but resolves nothing.
    silent.transport.sendto(bytes([REPLY]) + msg_id + umsgpack.packb(b"late"), address(client))
    await asyncio.sleep(0.05)
    assert client.stats.late_replies == 1 and client.rtt.samples == 1
    for t in (silent.transport, spoofer.transport, client.transport):
        t.close()


async def test_oversized_request_refused_locally() -> None:
    client = await endpoint("127.212.0.1", lambda p, a, s: None)
    try:
        client.call(("127.212.0.2", 9), "ping", bytes(1300))
    except Exception as exc:  # UsageError
        assert "exceeds" in str(exc)
    else:
        raise AssertionError("an oversized request was sent")
    client.transport.close()
