"""HTTP Range requests (RFC 9110 §14), sans-I/O: one Range header value against a size.

:func:`parse_range` returns what to answer:

- ``None``: the whole representation, 200.  That is the answer to no header, a unit other
  than ``bytes``, a malformed value or a position of more than 4000 digits (RFC 9110 lets a
  server ignore any Range), and several ranges (this server sends no multipart responses; a
  client that asked for several reads the 200);
- :class:`ByteSpan`: one range, 206 with ``Content-Range: bytes first-last/size``;
- :class:`Unsatisfiable`: 416 with ``Content-Range: bytes */size``.

Never raises: any header string gives one of the three.
"""

from __future__ import annotations

from dataclasses import dataclass

_DIGITS = frozenset("0123456789")
_OWS = " \t"
#: A position longer than this is not read (the header is ignored: RFC 9110 lets a server ignore any).
_MAX_DIGITS = 4000


@dataclass(frozen=True, slots=True)
class ByteSpan:
    """Bytes ``[start, stop)`` of a representation of ``size`` bytes (``start < stop <= size``)."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """No byte of the requested range exists: 416."""

    size: int

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


RangeAnswer = ByteSpan | Unsatisfiable | None


def parse_range(header: str | None, size: int) -> RangeAnswer:
    """What to answer a GET with this Range header value for a representation of ``size`` bytes."""
    if header is None:
        return None
    unit, eq, rest = header.strip(_OWS).partition("=")
    if not eq or unit.lower() != "bytes":
        return None
    specs = [s.strip(_OWS) for s in rest.split(",")]
    specs = [s for s in specs if s]  # empty list elements are allowed and ignored (RFC 9110 §5.6.1)
    if len(specs) != 1:
        return None
    first, dash, last = specs[0].partition("-")
    if not dash:
        return None
    if not first:  # suffix range: the last N bytes
        n = _number(last)
        if n is None:
            return None
        if n == 0 or size == 0:
            return Unsatisfiable(size)
        return ByteSpan(max(0, size - n), size, size)
    start = _number(first)
    if start is None:
        return None
    if not last:
        return ByteSpan(start, size, size) if start < size else Unsatisfiable(size)
    end = _number(last)
    if end is None or end < start:
        return None
    if start >= size:
        return Unsatisfiable(size)
    return ByteSpan(start, min(end + 1, size), size)


def _number(text: str) -> int | None:
    """A run of ASCII digits as an int, or None if it is not one (or absurdly long)."""
    if not text or not _DIGITS.issuperset(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else None
