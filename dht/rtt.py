"""Adaptive RPC timeouts (DESIGN §8: "short adaptive timeouts").

A smoothed round-trip time and its variation, as TCP's retransmission timer
(RFC 6298 §2).  Two figures come out of it:

* ``stall`` = SRTT + 4 x RTTVAR (at least ``stall_minimum``): a query older than this
  is slow; a lookup stops waiting for it and sends the next query instead;
* ``timeout`` = twice that, clamped to [minimum, maximum]: the query has failed and
  counts against its contact (evicted after a few).

The lookup's speed depends on ``stall`` only, so ``timeout`` can stay generous
enough that a busy event loop does not make live contacts look dead.  One
estimator per node covers all its contacts: on one host (and in one process) the
event loop's own delay dominates the network's.  A reply that arrives after its
timeout still feeds the estimator, so timeouts grow when the loop is busy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RttEstimator:
    initial: float = 0.5
    minimum: float = 0.5
    maximum: float = 2.0
    stall_minimum: float = 0.005
    srtt: float | None = None
    rttvar: float = 0.0
    samples: int = 0

    def sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def stall(self) -> float:
        if self.srtt is None:
            return self.initial / 2
        return min(self.timeout, max(self.stall_minimum, self.srtt + 4 * self.rttvar))

    @property
    def timeout(self) -> float:
        if self.srtt is None:
            return self.initial
        return min(self.maximum, max(self.minimum, 2 * (self.srtt + 4 * self.rttvar)))
