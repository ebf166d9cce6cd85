"""The upload cap's token bucket (peer/roles/ratelimit.py) and the RATE parser, on a made-up clock."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import UsageError
from peer.roles.ratelimit import TokenBucket, parse_rate


def _send_all(
    bucket: TokenBucket, sizes: list[int], gaps: list[float], start: float
) -> list[tuple[float, int]]:
    """A sender that obeys the bucket: each send goes when reserve says; returns (time, bytes)."""
    now = start
    sent = []
    for size, gap in zip(sizes, gaps, strict=True):
        now += gap
        now += bucket.reserve(size, now)
        sent.append((now, size))
    return sent


def test_long_run_rate_is_the_cap() -> None:
    rate, burst = 500 * 1024, 64 * 1024
    b = TokenBucket(rate, burst, now=100.0)
    sent = _send_all(b, [65536] * 200, [0.0] * 200, 100.0)
    elapsed = sent[-1][0] - 100.0
    total = sum(n for _, n in sent)
    # a greedy sender gets the burst at once, then exactly the rate
    assert total == pytest.approx(burst + rate * elapsed, rel=1e-9)


def test_burst_after_idle_then_waits() -> None:
    b = TokenBucket(1000, 4000, now=0.0)
    assert b.reserve(4000, 0.0) == 0.0  # a full bucket: the whole burst goes now
    assert b.reserve(1000, 0.0) == pytest.approx(1.0)  # then one second per 1000 bytes
    # a long idle refills only up to the burst, never beyond
    assert b.available(1000.0) == pytest.approx(4000)
    assert b.reserve(4000, 1000.0) == 0.0
    assert b.reserve(1, 1000.0) > 0.0


def test_default_burst_is_one_second() -> None:
    b = TokenBucket(2048, now=5.0)
    assert b.reserve(2048, 5.0) == 0.0
    assert b.reserve(2048, 5.0) == pytest.approx(1.0)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    b = TokenBucket(1000, 1000, now=10.0)
    b.reserve(1000, 10.0)
    assert b.available(5.0) == pytest.approx(0.0)
    assert b.available(10.5) == pytest.approx(500.0)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_zero_or_bad_rate_refused(rate: float) -> None:
    with pytest.raises(UsageError):
        TokenBucket(rate, now=0.0)


def test_zero_burst_and_negative_reserve_refused() -> None:
    with pytest.raises(UsageError):
        TokenBucket(10, 0, now=0.0)
    with pytest.raises(UsageError):
        TokenBucket(10, now=0.0).reserve(-1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 10_000_000),
    burst_factor=st.floats(0.01, 4.0),
    sends=st.lists(st.tuples(st.integers(0, 200_000), st.floats(0.0, 2.0)), min_size=1, max_size=60),
)
def test_no_window_exceeds_rate_times_time_plus_burst(
    rate: int, burst_factor: float, sends: list[tuple[int, float]]
) -> None:
    burst = rate * burst_factor
    b = TokenBucket(rate, burst, now=0.0)
    sent = _send_all(b, [s for s, _ in sends], [g for _, g in sends], 0.0)
    times = [t for t, _ in sent]
    assert times == sorted(times)  # the bucket never asks a later send to go earlier
    for i in range(len(sent)):
        total = 0
        for j in range(i, len(sent)):
            total += sent[j][1]
            window = sent[j][0] - sent[i][0]
            # bytes sent from send i to send j (both included): at most the burst plus the rate
            # over the window, plus the one send that may overdraw (it waits for its own debt)
            assert total <= burst + rate * window + 1e-6 * (total + 1) + max(0, sent[i][1] - burst)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500K", 500 * 1024),
        ("500k", 500 * 1024),
        ("2M", 2 * 1024 * 1024),
        ("1.5M", int(1.5 * 1024 * 1024)),
        ("1G", 1024**3),
        ("65536", 65536),
        ("2MB", 2 * 1024 * 1024),
        ("2MiB/s", 2 * 1024 * 1024),
        (" 300K ", 300 * 1024),
        ("1", 1),
    ],
)
def test_parse_rate(text: str, value: int) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["0", "0K", "0.0M", "", "K", "-1M", "2X", "1e3", "2 M M", "fast", "0.5"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


# ---- the holder pays the bucket for every byte of DB_DATA it serves -----------------------------


class _Node:
    """What HolderService._deliver uses of the onion node, recording the order of calls."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    def stream_send(self, circ: int, sid: int, data: bytes) -> bool:
        self.log.append(("send", len(data)))
        return True

    def db_end(self, circ: int, sid: int, body: bytes) -> None:
        self.log.append(("end", 0))


class _Bucket:
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    def reserve(self, n: int, now: float) -> float:
        self.log.append(("reserve", n))
        return 0.0


async def test_holder_reserves_each_chunk_before_sending_it() -> None:
    from typing import cast

    from peer.proto.node import OnionNode
    from peer.roles.holder import SEND_CHUNK, HolderService, _Plan
    from peer.wire.ordb import DbQuery, DeliveryKind
    from storage.chunkstore import ChunkStore

    log: list[tuple[str, int]] = []
    h = HolderService(
        cast(OnionNode, _Node(log)),
        cast(ChunkStore, None),
        kick=lambda: None,
        build_ordb_circuit=lambda _: None,  # type: ignore[arg-type,return-value]
        max_upload=1024,
    )
    assert isinstance(h.upload, TokenBucket) and h.upload.rate == 1024
    h.upload = _Bucket(log)  # type: ignore[assignment]
    payload = bytes(2 * SEND_CHUNK + 100)  # a manifest delivery: its bytes are at hand
    plan = _Plan(DeliveryKind.MANIFEST, 0, len(payload), payload)
    await h._deliver(1, 2, DbQuery(bytes(32), 0, 0, 0), plan, bytes(16))
    sends = [(k, n) for k, n in log if k != "end"]
    assert sends == [
        ("reserve", SEND_CHUNK),
        ("send", SEND_CHUNK),
        ("reserve", SEND_CHUNK),
        ("send", SEND_CHUNK),
        ("reserve", 100),
        ("send", 100),
    ]
    assert (
        HolderService(
            cast(OnionNode, _Node([])),
            cast(ChunkStore, None),
            kick=lambda: None,
            build_ordb_circuit=None,  # type: ignore[arg-type]
        ).upload
        is None
    )  # no cap by default


def test_a_refund_gives_back_what_was_reserved_and_not_sent() -> None:
    b = TokenBucket(1000, 1000, now=0.0)
    assert b.reserve(1000, 0.0) == 0.0
    assert b.reserve(3000, 0.0) == pytest.approx(3.0)  # three senders queued behind the first
    b.refund(2000, 0.0)  # two of them left before sending
    assert b.reserve(500, 0.0) == pytest.approx(1.5)  # a newcomer waits only behind the one left
    b.refund(10_000, 0.0)
    assert b.available(0.0) == 1000  # never above the burst
    with pytest.raises(UsageError):
        b.refund(-1, 0.0)


async def test_a_delivery_cancelled_while_it_waits_gives_its_place_back() -> None:
    """A requester that ends its query (a seek's rush) must not leave its reserved bytes ahead of
    the query the player now waits for."""
    from typing import cast

    from peer.proto.node import OnionNode
    from peer.roles.holder import SEND_CHUNK, HolderService, _Plan
    from peer.wire.ordb import DbQuery, DeliveryKind
    from storage.chunkstore import ChunkStore

    h = HolderService(
        cast(OnionNode, _Node([])),
        cast(ChunkStore, None),
        kick=lambda: None,
        build_ordb_circuit=lambda _: None,  # type: ignore[arg-type,return-value]
        max_upload=SEND_CHUNK,  # one chunk a second; the bucket starts full
    )
    assert h.upload is not None
    payload = bytes(3 * SEND_CHUNK)
    plan = _Plan(DeliveryKind.MANIFEST, 0, len(payload), payload)
    task = asyncio.ensure_future(h._deliver(1, 2, DbQuery(bytes(32), 0, 0, 0), plan, bytes(16)))
    for _ in range(5):
        await asyncio.sleep(0)  # the first chunk goes at once, the second waits a second
    loop = asyncio.get_running_loop()
    assert h.upload.available(loop.time()) < 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert h.upload.reserve(SEND_CHUNK, loop.time()) == pytest.approx(1.0, abs=0.05)  # not 2 s


# ---- the command line -----------------------------------------------------------------------------


def test_cli_max_upload() -> None:
    from peer.app.cli import build_parser

    p = build_parser()
    assert p.parse_args(["up"]).max_upload is None
    assert p.parse_args(["up", "--max-upload", "500K"]).max_upload == 500 * 1024
    assert p.parse_args(["testnet", "up", "--max-upload", "2M"]).max_upload == 2 * 1024 * 1024
    for bad in ("0", "0K", "lots"):
        with pytest.raises(SystemExit) as e:
            p.parse_args(["up", "--max-upload", bad])
        assert e.value.code == 2  # a usage error
