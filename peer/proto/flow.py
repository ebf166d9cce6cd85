"""SENDME flow control (tor-spec §7.3-7.4, authenticated SENDME v1 of proposal 289), sans-I/O.

Circuit windows start at 1000 and move by 100, stream windows start at 500 and move by 50;
both count DATA-like cells.  The side that packages DATA remembers its running digest after
every 100th cell; the receiving side echoes the digest of its receiving direction after that
same cell.  An unexpected or forged circuit SENDME, a window pushed past its start, or more
cells delivered than the window allows breaks a circuit rule (:class:`CircuitViolation`).

These objects only count: the caller sends the SENDME cells they ask for.
"""

from __future__ import annotations

import hmac
from collections import deque
from dataclasses import dataclass, field

from peer.proto.violation import CircuitViolation
from peer.wire.relay import Sendme

CIRCWINDOW_START = 1000
CIRCWINDOW_INCREMENT = 100
STREAMWINDOW_START = 500
STREAMWINDOW_INCREMENT = 50


@dataclass(slots=True, kw_only=True)
class CircuitWindow:
    """One edge's circuit-level windows and the SENDME v1 digests it waits for."""

    package_window: int = CIRCWINDOW_START
    deliver_window: int = CIRCWINDOW_START
    data_sent: int = 0
    data_received: int = 0
    sendme_expected: deque[bytes] = field(default_factory=deque)

    def packaged(self) -> bool:
        """One DATA cell sent; True when its digest must be kept (:meth:`expect_sendme`)."""
        self.package_window -= 1
        self.data_sent += 1
        return self.data_sent % CIRCWINDOW_INCREMENT == 0

    def expect_sendme(self, digest: bytes) -> None:
        """The sending digest just after a 100th DATA cell: the SENDME for it must echo it."""
        self.sendme_expected.append(digest)

    def delivered(self) -> bool:
        """One DATA cell received; True when a SENDME v1 (our receiving digest) is due now."""
        self.deliver_window -= 1
        self.data_received += 1
        if self.deliver_window < 0:
            raise CircuitViolation("circuit deliver window overrun")
        if self.deliver_window <= CIRCWINDOW_START - CIRCWINDOW_INCREMENT:
            self.deliver_window += CIRCWINDOW_INCREMENT
            return True
        return False

    def sendme_received(self, msg: Sendme) -> None:
        """A circuit SENDME: only version 1 with the digest we kept opens the window."""
        if msg.version != 1 or not self.sendme_expected:
            raise CircuitViolation("unexpected or unauthenticated circuit SENDME")
        want = self.sendme_expected.popleft()
        if not hmac.compare_digest(want, msg.digest):
            raise CircuitViolation("forged SENDME digest")
        self.package_window += CIRCWINDOW_INCREMENT
        if self.package_window > CIRCWINDOW_START:
            raise CircuitViolation("circuit package window overrun")


@dataclass(slots=True, kw_only=True)
class StreamWindow:
    """One stream's windows; SENDMEs acknowledge only what the application consumed."""

    package_window: int = STREAMWINDOW_START
    deliver_window: int = STREAMWINDOW_START
    unacked_consumed: int = 0  # DATA cells consumed by the app and not yet acknowledged

    def packaged(self) -> None:
        self.package_window -= 1

    def delivered(self) -> None:
        self.deliver_window -= 1
        if self.deliver_window < 0:
            raise CircuitViolation("stream deliver window overrun")

    def sendme_received(self) -> None:
        self.package_window += STREAMWINDOW_INCREMENT
        if self.package_window > STREAMWINDOW_START:
            raise CircuitViolation("stream package window overrun")

    def consumed(self, cells: int) -> None:
        self.unacked_consumed += cells

    def sendmes_due(self) -> int:
        """How many stream SENDMEs to send now (the window is moved for each)."""
        n = 0
        while (
            self.deliver_window <= STREAMWINDOW_START - STREAMWINDOW_INCREMENT
            and self.unacked_consumed >= STREAMWINDOW_INCREMENT
        ):
            self.deliver_window += STREAMWINDOW_INCREMENT
            self.unacked_consumed -= STREAMWINDOW_INCREMENT
            n += 1
        return n
