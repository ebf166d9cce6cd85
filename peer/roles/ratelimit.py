"""A token bucket for the holder's upload cap (``peersm up --max-upload RATE``), sans-I/O.

The bucket is fed ``now`` and never sleeps: :meth:`TokenBucket.reserve` takes ``n`` bytes'
worth of tokens at once (the balance may go negative) and returns how long the caller must
wait before sending them.  Over any long run the bytes sent stay within
``rate * elapsed + burst``, however the sends are sized or interleaved.
"""

from __future__ import annotations

import math
import re

from peer.errors import UsageError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_RATE = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMG]?)(?:I?B)?(?:/S)?")


def parse_rate(text: str) -> int:
    """A rate in bytes per second from ``500K``, ``2M``, ``1.5M``, ``65536`` (K = 1024 bytes,
    M = 1024 K, G = 1024 M; an optional ``B``/``iB`` and ``/s`` may follow).  Zero, negative
    and malformed rates are a :class:`UsageError`."""
    m = _RATE.fullmatch(text.strip().upper())
    if m is None:
        raise UsageError(f"{text!r} is not a rate: bytes per second, like 500K or 2M")
    value = float(m["num"]) * _UNITS[m["unit"]]
    if not math.isfinite(value) or value < 1:
        raise UsageError(f"{text!r}: a rate must be at least 1 byte per second (omit it for no cap)")
    return int(value)


class TokenBucket:
    """``rate`` bytes per second, with up to ``burst`` bytes sendable at once after a pause."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise UsageError(f"a token bucket needs a rate above 0 (got {rate!r})")
        self.rate = float(rate)
        self.burst = float(rate if burst is None else burst)
        if not self.burst > 0:
            raise UsageError(f"a token bucket needs a burst above 0 (got {burst!r})")
        self._tokens = self.burst  # starts full
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:  # a clock that steps back refills nothing
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def available(self, now: float) -> float:
        """Bytes sendable right now without waiting (negative: in debt)."""
        self._refill(now)
        return self._tokens

    def refund(self, n: int, now: float) -> None:
        """Give back ``n`` bytes reserved and never sent (their sender was cancelled while it waited)."""
        if n < 0:
            raise UsageError("cannot refund a negative number of bytes")
        self._refill(now)
        self._tokens = min(self.burst, self._tokens + n)

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` bytes; the seconds to wait before sending them (0.0: send now)."""
        if n < 0:
            raise UsageError("cannot reserve a negative number of bytes")
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
