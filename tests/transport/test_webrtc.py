"""WebRTC links on loopback: two WebRtcLinks in one process (issue 4, DESIGN §4 and §12).

Every address used is in 127.0.0.0/8 and every socket binds port 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import re
import struct

import pytest

from peer.errors import HandshakeError, LinkClosed, UsageError
from peer.transport.base import Link
from peer.transport.iceconfig import WebRtcConfig, candidate_lines, sdp_fingerprint_sha256
from peer.transport.webrtc import (
    LinkState,
    ReceiveQueueOverflow,
    SdpError,
    WebRtcError,
    WebRtcLink,
    _ice_connection,
    accept_offer,
    create_offer,
)

A_ADDR = "127.1.0.1"
B_ADDR = "127.2.0.1"
GUARD = 20.0  # hang guard only (asyncio.wait_for); tests never assert on speed


async def make_pair(
    config_a: WebRtcConfig | None = None, config_b: WebRtcConfig | None = None
) -> tuple[WebRtcLink, WebRtcLink, str, str]:
    config_a = config_a or WebRtcConfig.loopback(A_ADDR)
    config_b = config_b or WebRtcConfig.loopback(B_ADDR)
    pending, offer = await create_offer(config_a)
    b, answer = await accept_offer(offer, config_b)
    a, _ = await asyncio.gather(pending.complete(answer, GUARD), b.wait_open(GUARD))
    return a, b, offer, answer


def message(seq: int, size: int, rng: random.Random) -> bytes:
    body = rng.randbytes(size - 12)
    return struct.pack(">I", seq) + hashlib.sha256(body).digest()[:8] + body


def check(seq: int, data: bytes) -> None:
    assert struct.unpack(">I", data[:4])[0] == seq
    assert hashlib.sha256(data[12:]).digest()[:8] == data[4:12]


async def pump(src: WebRtcLink, dst: WebRtcLink, total: int, seed: int) -> int:
    """Send ``total`` bytes in messages of mixed sizes; check order and integrity on arrival."""
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(rng.choice([514, 1028, 4096, 15934, 16384, 65536, 100]))

    async def sender() -> None:
        for seq, size in enumerate(sizes):
            await src.send(message(seq, size, rng))

    async def receiver() -> int:
        got = 0
        for seq, size in enumerate(sizes):
            data = await dst.recv()
            assert len(data) == size
            check(seq, data)
            got += len(data)
        return got

    _, got = await asyncio.wait_for(asyncio.gather(sender(), receiver()), 120)
    return got


async def close_all(*links: WebRtcLink) -> None:
    for link in links:
        await link.close()


async def test_links_open_and_carry_many_megabytes_in_order_both_ways() -> None:
    a, b, _, _ = await make_pair()
    try:
        assert isinstance(a, Link) and isinstance(b, Link)
        assert a.framed and b.framed
        assert a.initiator and not b.initiator
        assert a.state is LinkState.OPEN and b.state is LinkState.OPEN
        ab, ba = await asyncio.gather(pump(a, b, 6_000_000, 1), pump(b, a, 2_000_000, 2))
        assert ab >= 6_000_000 and ba >= 2_000_000
        stats_a, stats_b = a.stats(), b.stats()
        assert stats_a.bytes_sent == stats_b.bytes_received == ab
        assert stats_b.bytes_sent == stats_a.bytes_received == ba
        assert stats_a.recv_queued == 0 and stats_b.recv_queued == 0
    finally:
        await close_all(a, b)


async def test_ipv6_loopback_link() -> None:
    a, b, offer, _ = await make_pair(WebRtcConfig.loopback("::1"), WebRtcConfig.loopback("::1"))
    try:
        assert [c.address for c in candidate_lines(offer)] == ["::1"]
        assert a.remote_address is not None and a.remote_address[0] == "::1"
        await a.send(b"six")
        assert await asyncio.wait_for(b.recv(), GUARD) == b"six"
    finally:
        await close_all(a, b)


async def test_fingerprints_match_the_other_side_and_the_sdp() -> None:
    a, b, offer, answer = await make_pair()
    try:
        assert a.peer_cert_fingerprint is not None and len(a.peer_cert_fingerprint) == 32
        assert a.peer_cert_fingerprint == b.local_cert_fingerprint
        assert b.peer_cert_fingerprint == a.local_cert_fingerprint
        assert a.local_cert_fingerprint != b.local_cert_fingerprint
        assert sdp_fingerprint_sha256(offer) == a.local_cert_fingerprint
        assert sdp_fingerprint_sha256(answer) == b.local_cert_fingerprint
    finally:
        await close_all(a, b)


async def test_remote_address_is_the_selected_candidate() -> None:
    a, b, offer, answer = await make_pair()
    try:
        (offer_cand,) = candidate_lines(offer)
        (answer_cand,) = candidate_lines(answer)
        assert a.remote_address is not None and b.remote_address is not None
        assert a.remote_address[0] == B_ADDR == answer_cand.address
        assert b.remote_address[0] == A_ADDR == offer_cand.address
        ports = {line.split()[5] for line in offer.splitlines() + answer.splitlines() if "typ host" in line}
        assert {str(a.remote_address[1]), str(b.remote_address[1])} == ports
    finally:
        await close_all(a, b)


async def test_close_makes_the_other_side_raise_link_closed() -> None:
    a, b, _, _ = await make_pair()
    await a.send(b"before close")
    assert await asyncio.wait_for(b.recv(), GUARD) == b"before close"
    await a.close()
    await a.close()  # idempotent
    assert a.closed
    with pytest.raises(LinkClosed):
        await a.recv()
    with pytest.raises(LinkClosed):
        await a.send(b"x")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(b.recv(), 5.0)
    assert b.closed
    with pytest.raises(LinkClosed):
        await b.send(b"x")
    await b.close()


async def test_pending_recv_is_woken_by_local_close() -> None:
    a, b, _, _ = await make_pair()
    waiter = asyncio.ensure_future(b.recv())
    await asyncio.sleep(0)
    await b.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(waiter, GUARD)
    await a.close()


async def test_queued_messages_are_read_before_the_remote_close() -> None:
    a, b, _, _ = await make_pair()
    for i in range(3):
        await a.send(bytes([i]) * 600)
    async with asyncio.timeout(GUARD):
        while b.stats().recv_queued < 1800:
            await asyncio.sleep(0.01)
    await a.close()
    await asyncio.wait_for(b.wait_closed(), GUARD)
    for i in range(3):
        assert await b.recv() == bytes([i]) * 600
    with pytest.raises(LinkClosed):
        await b.recv()


def addresses_in(sdp: str) -> set[str]:
    return set(re.findall(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", sdp))


async def test_sdp_holds_only_allowed_addresses() -> None:
    config = WebRtcConfig(ice_allow=("127.3.0.1", "127.0.0.0/8"))  # 127.0.0.1 is on lo
    pending, offer = await create_offer(config)
    try:
        assert addresses_in(offer) <= {"127.3.0.1", "127.0.0.1", "0.0.0.0"}
        hosts = {c.address for c in candidate_lines(offer)}
        assert hosts == {"127.3.0.1", "127.0.0.1"}
        assert all(c.type == "host" for c in candidate_lines(offer))
        b, answer = await accept_offer(offer, WebRtcConfig.loopback(B_ADDR))
        assert addresses_in(answer) <= {B_ADDR, "0.0.0.0"}
        assert {c.address for c in candidate_lines(answer)} == {B_ADDR}
        await b.close()
    finally:
        await pending.cancel()


async def test_default_config_has_no_ice_server() -> None:
    assert WebRtcConfig().ice_servers == ()
    pending, offer = await create_offer(WebRtcConfig.loopback())
    try:
        assert "typ srflx" not in offer and "typ relay" not in offer
    finally:
        await pending.cancel()


async def test_receive_buffer_is_set_and_reported() -> None:
    a, b, _, _ = await make_pair()
    try:
        stats = a.stats()
        assert stats.rcvbuf_requested == 4 * 1024 * 1024
        assert stats.rcvbuf_effective is not None and stats.rcvbuf_effective > 0
        assert stats.rcvbuf_capped == (stats.rcvbuf_effective < stats.rcvbuf_requested)
    finally:
        await close_all(a, b)


async def test_stalled_receiver_blocks_send_and_bounds_sender_memory() -> None:
    """The receiver's socket stops reading: send must block, with a bounded send buffer."""
    send_buffer = 256 * 1024
    config_a = dataclasses.replace(WebRtcConfig.loopback(A_ADDR), send_buffer=send_buffer)
    a, b, _, _ = await make_pair(config_a)
    chunk = 16 * 1024
    sent: list[int] = []
    try:
        sockets = [p.transport for p in _ice_connection(b._pc)._protocols]
        for t in sockets:
            t.pause_reading()

        async def flood() -> None:
            seq = 0
            while True:
                await a.send(struct.pack(">I", seq) + bytes(chunk - 4))
                sent.append(seq)
                seq += 1
                assert a.stats().send_buffered <= send_buffer + chunk

        task = asyncio.ensure_future(flood())
        # Wait until the sender is blocked: the buffer is above its mark and no send completes.
        async with asyncio.timeout(GUARD):
            while a.stats().send_buffered <= send_buffer:
                await asyncio.sleep(0.05)
        count = len(sent)
        await asyncio.sleep(0.5)
        assert len(sent) == count, "send kept completing while the receiver was stalled"
        assert not task.done()
        assert a.stats().send_buffered <= send_buffer + chunk
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for t in sockets:
            t.resume_reading()
        # Everything accepted by send arrives, in order, once the receiver reads again.
        for seq in sent:
            data = await asyncio.wait_for(b.recv(), 60)
            assert struct.unpack(">I", data[:4])[0] == seq
    finally:
        await close_all(a, b)


async def test_unread_receive_queue_over_the_limit_closes_the_link() -> None:
    limit = 256 * 1024
    config_b = dataclasses.replace(WebRtcConfig.loopback(B_ADDR), recv_queue_limit=limit)
    a, b, _, _ = await make_pair(None, config_b)
    sent = 0
    with pytest.raises(LinkClosed):
        async with asyncio.timeout(GUARD):
            while True:
                await a.send(bytes(16 * 1024))
                sent += 16 * 1024
                assert a.stats().send_buffered <= a._config.send_buffer + 16 * 1024
                assert sent < 64 * limit, "the receiver never enforced its queue limit"
    assert b.closed
    assert b.stats().recv_queued == 0  # unread data was released
    with pytest.raises(ReceiveQueueOverflow):
        await b.recv()
    await close_all(a, b)


async def test_text_message_closes_the_link() -> None:
    a, b, _, _ = await make_pair()
    a._channel.send("not binary")
    with pytest.raises(LinkClosed, match="text message"):
        await asyncio.wait_for(b.recv(), GUARD)
    await close_all(a, b)


async def test_oversized_send_is_refused() -> None:
    a, b, _, _ = await make_pair()
    try:
        with pytest.raises(UsageError):
            await a.send(bytes(65537))
        await a.send(bytes(65536))
        assert len(await asyncio.wait_for(b.recv(), GUARD)) == 65536
    finally:
        await close_all(a, b)


async def test_empty_message_is_a_message() -> None:
    a, b, _, _ = await make_pair()
    try:
        await a.send(b"")
        await a.send(b"z")
        assert await asyncio.wait_for(b.recv(), GUARD) == b""
        assert await asyncio.wait_for(b.recv(), GUARD) == b"z"
    finally:
        await close_all(a, b)


async def test_tampered_fingerprint_is_refused_by_dtls() -> None:
    """A relayed offer whose fingerprint was swapped: DTLS must refuse the link."""
    pending, offer = await create_offer(WebRtcConfig.loopback(A_ADDR))
    fake = ":".join(f"{x:02X}" for x in hashlib.sha256(b"mallory").digest())
    lines = [line for line in offer.splitlines() if not line.startswith("a=fingerprint:sha-3")]
    lines = [line for line in lines if not line.startswith("a=fingerprint:sha-5")]
    tampered = "\r\n".join(
        f"a=fingerprint:sha-256 {fake}" if line.startswith("a=fingerprint:sha-256") else line
        for line in lines
    )
    b, answer = await accept_offer(tampered + "\r\n", WebRtcConfig.loopback(B_ADDR))
    # b's DTLS layer refuses a's certificate; a then waits in vain (short timeout on its side).
    results = await asyncio.gather(pending.complete(answer, 3.0), b.wait_open(GUARD), return_exceptions=True)
    assert all(isinstance(r, WebRtcError) for r in results), results
    assert "failed" in str(results[1])
    assert b.closed and b.peer_cert_fingerprint is None
    await b.close()
    await pending.cancel()


async def test_fingerprint_seen_by_dtls_must_equal_the_sdp_one() -> None:
    """Our own check: the certificate DTLS saw is compared with the SDP fingerprint we were given."""
    pending, offer = await create_offer(WebRtcConfig.loopback(A_ADDR))
    b, answer = await accept_offer(offer, WebRtcConfig.loopback(B_ADDR))
    b._set_remote_fingerprint(bytes(32))  # as if the SDP had named another certificate
    results = await asyncio.gather(pending.complete(answer, 3.0), b.wait_open(GUARD), return_exceptions=True)
    assert isinstance(results[1], HandshakeError), results
    assert b.closed and b.peer_cert_fingerprint is None
    await b.close()
    await pending.cancel()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: "garbage",
        lambda s: "\r\n".join(x for x in s.splitlines() if not x.startswith("a=fingerprint:sha-256")),
        lambda s: s.replace("m=application", "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nm=application"),
        lambda s: s.replace("webrtc-datachannel", "something-else"),
    ],
    ids=["garbage", "no-sha256", "audio", "not-datachannel"],
)
async def test_bad_offer_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    pending, offer = await create_offer(WebRtcConfig.loopback(A_ADDR))
    try:
        with pytest.raises(SdpError):
            await accept_offer(mutate(offer), WebRtcConfig.loopback(B_ADDR))
    finally:
        await pending.cancel()


async def test_bad_answer_is_refused_and_the_offer_released() -> None:
    pending, _ = await create_offer(WebRtcConfig.loopback(A_ADDR))
    with pytest.raises(SdpError):
        await pending.complete("v=0\r\n", GUARD)
    with pytest.raises(UsageError):
        await pending.complete("v=0\r\n", GUARD)


async def test_open_times_out_when_the_answerer_is_gone() -> None:
    pending, offer = await create_offer(WebRtcConfig.loopback(A_ADDR))
    b, answer = await accept_offer(offer, WebRtcConfig.loopback(B_ADDR))
    await b.close()
    with pytest.raises(WebRtcError):
        await pending.complete(answer, 2.0)


async def test_remote_mdns_candidates_are_dropped() -> None:
    pending, offer = await create_offer(WebRtcConfig.loopback(A_ADDR))
    extra = "a=candidate:1 1 udp 2130706431 0b1e9a6c-peer.local 9 typ host"
    tweaked = offer.replace("a=end-of-candidates", extra + "\r\na=end-of-candidates")
    b, answer = await accept_offer(tweaked, WebRtcConfig.loopback(B_ADDR))
    try:
        remote = _ice_connection(b._pc).remote_candidates
        assert [c.host for c in remote] == [A_ADDR]
        a = await pending.complete(answer, GUARD)
        await b.wait_open(GUARD)
        await a.send(b"ok")
        assert await asyncio.wait_for(b.recv(), GUARD) == b"ok"
    finally:
        await b.close()
        await pending.cancel()
