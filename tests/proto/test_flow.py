"""SENDME windows on their own (peer/proto/flow.py): circuit windows with authenticated SENDME v1,
stream windows that acknowledge only what the application consumed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.proto.flow import (
    CIRCWINDOW_INCREMENT,
    CIRCWINDOW_START,
    STREAMWINDOW_INCREMENT,
    STREAMWINDOW_START,
    CircuitWindow,
    StreamWindow,
)
from peer.proto.violation import CircuitViolation
from peer.wire.relay import Sendme


def digest(n: int) -> bytes:
    """A stand-in for the running digest after the ``n``-th DATA cell."""
    return n.to_bytes(20, "big")


def test_every_hundredth_packaged_cell_keeps_its_digest() -> None:
    w = CircuitWindow()
    kept = [n for n in range(1, 301) if w.packaged()]
    assert kept == [100, 200, 300]
    assert w.package_window == CIRCWINDOW_START - 300 and w.data_sent == 300


def test_a_sendme_is_due_after_each_hundred_delivered_cells() -> None:
    w = CircuitWindow()
    due = [n for n in range(1, 251) if w.delivered()]
    assert due == [100, 200]
    assert w.deliver_window == CIRCWINDOW_START - 50 and w.data_received == 250


def test_delivering_past_the_window_breaks_the_circuit() -> None:
    w = CircuitWindow(deliver_window=0)
    with pytest.raises(CircuitViolation, match="circuit deliver window overrun"):
        w.delivered()


def test_only_the_kept_digest_in_order_opens_the_window() -> None:
    w = CircuitWindow()
    for n in range(1, 201):
        if w.packaged():
            w.expect_sendme(digest(n))
    assert w.package_window == CIRCWINDOW_START - 200
    w.sendme_received(Sendme(1, digest(100)))
    w.sendme_received(Sendme(1, digest(200)))
    assert w.package_window == CIRCWINDOW_START and not w.sendme_expected


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (Sendme(0, b""), "unauthenticated"),  # version 0
        (Sendme(1, digest(200)), "forged"),  # the digest of a later cell
        (Sendme(1, bytes(20)), "forged"),
    ],
)
def test_a_bad_circuit_sendme_breaks_the_circuit(msg: Sendme, why: str) -> None:
    w = CircuitWindow()
    for n in range(1, 101):
        if w.packaged():
            w.expect_sendme(digest(n))
    with pytest.raises(CircuitViolation, match=why):
        w.sendme_received(msg)


def test_a_sendme_nothing_was_sent_for_breaks_the_circuit() -> None:
    with pytest.raises(CircuitViolation, match="unexpected"):
        CircuitWindow().sendme_received(Sendme(1, digest(100)))


def test_a_sendme_past_the_start_breaks_the_circuit() -> None:
    w = CircuitWindow()
    w.expect_sendme(digest(1))  # a digest kept, but nothing outstanding
    with pytest.raises(CircuitViolation, match="circuit package window overrun"):
        w.sendme_received(Sendme(1, digest(1)))


@given(st.lists(st.booleans(), min_size=1, max_size=4000))
def test_an_honest_pair_never_breaks_a_rule_and_never_exceeds_the_window(steps: list[bool]) -> None:
    """Sender and receiver in any interleaving (True: the sender packages a cell if its window
    allows; False: one cell in flight arrives): no violation, at most 1000 cells unacknowledged."""
    sender, receiver = CircuitWindow(), CircuitWindow()
    in_flight: list[int] = []
    sendmes: list[bytes] = []
    for send in steps:
        if send and sender.package_window > 0:
            if sender.packaged():
                sender.expect_sendme(digest(sender.data_sent))
            in_flight.append(sender.data_sent)
        elif in_flight:
            n = in_flight.pop(0)
            if receiver.delivered():
                sendmes.append(digest(n))
        while sendmes:
            sender.sendme_received(Sendme(1, sendmes.pop(0)))
        assert 0 <= sender.data_sent - receiver.data_received <= CIRCWINDOW_START
        assert sender.package_window >= 0


def test_stream_sendmes_wait_for_the_application() -> None:
    w = StreamWindow()
    for _ in range(STREAMWINDOW_INCREMENT * 2):
        w.delivered()
    assert w.sendmes_due() == 0  # delivered, not consumed
    w.consumed(STREAMWINDOW_INCREMENT - 1)
    assert w.sendmes_due() == 0
    w.consumed(STREAMWINDOW_INCREMENT + 1)
    assert w.sendmes_due() == 2
    assert w.deliver_window == STREAMWINDOW_START and w.unacked_consumed == 0
    assert w.sendmes_due() == 0


def test_a_stream_sendme_is_not_sent_before_a_whole_increment_is_delivered() -> None:
    w = StreamWindow()
    for _ in range(STREAMWINDOW_INCREMENT - 1):
        w.delivered()
    w.consumed(STREAMWINDOW_INCREMENT)
    assert w.sendmes_due() == 0
    w.delivered()
    assert w.sendmes_due() == 1


def test_stream_window_overruns_break_the_circuit() -> None:
    w = StreamWindow(deliver_window=0)
    with pytest.raises(CircuitViolation, match="stream deliver window overrun"):
        w.delivered()
    w = StreamWindow()
    w.packaged()
    with pytest.raises(CircuitViolation, match="stream package window overrun"):
        w.sendme_received()  # one cell out cannot earn a SENDME of 50


def test_a_stream_sendme_opens_the_stream_window() -> None:
    w = StreamWindow()
    for _ in range(STREAMWINDOW_INCREMENT):
        w.packaged()
    assert w.package_window == STREAMWINDOW_START - STREAMWINDOW_INCREMENT
    w.sendme_received()
    assert w.package_window == STREAMWINDOW_START
    assert CIRCWINDOW_INCREMENT == 100 and STREAMWINDOW_INCREMENT == 50  # tor-spec §7.3-7.4
