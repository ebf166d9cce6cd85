"""Reader/Writer over bytes already in memory (the one buffer API for every binary format).

Paired ``pull_*``/``push_*`` methods, big-endian fixed-width integers.  A read past
the end raises :class:`~peer.errors.WireError`, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

from peer.errors import WireError


class Reader:
    """Sequential reader over a bytes-like object."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def pull_bytes(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise WireError(f"truncated: wanted {n} bytes, {self.remaining} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def pull_rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out

    def _pull_int(self, n: int) -> int:
        return int.from_bytes(self.pull_bytes(n), "big")

    def pull_u8(self) -> int:
        return self._pull_int(1)

    def pull_u16(self) -> int:
        return self._pull_int(2)

    def pull_u32(self) -> int:
        return self._pull_int(4)

    def pull_u64(self) -> int:
        return self._pull_int(8)

    def pull_var8(self) -> bytes:
        """Bytes preceded by a 1-byte length."""
        return self.pull_bytes(self.pull_u8())

    def pull_var16(self) -> bytes:
        """Bytes preceded by a 2-byte length."""
        return self.pull_bytes(self.pull_u16())

    def expect_end(self, what: str = "message") -> None:
        if self._pos != len(self._data):
            raise WireError(f"{what}: {self.remaining} extraneous bytes")


class Writer:
    """Append-only writer; ``bytes(w)`` or ``w.getvalue()`` gives the result."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def __bytes__(self) -> bytes:
        return bytes(self._buf)

    def push_bytes(self, b: bytes) -> Writer:
        self._buf += b
        return self

    def _push_int(self, v: int, n: int) -> Writer:
        if v < 0 or v >= 1 << (8 * n):
            raise WireError(f"integer {v} does not fit in {n} bytes")
        self._buf += v.to_bytes(n, "big")
        return self

    def push_u8(self, v: int) -> Writer:
        return self._push_int(v, 1)

    def push_u16(self, v: int) -> Writer:
        return self._push_int(v, 2)

    def push_u32(self, v: int) -> Writer:
        return self._push_int(v, 4)

    def push_u64(self, v: int) -> Writer:
        return self._push_int(v, 8)

    def push_var8(self, b: bytes) -> Writer:
        if len(b) > 0xFF:
            raise WireError(f"{len(b)} bytes do not fit a 1-byte length")
        return self.push_u8(len(b)).push_bytes(b)

    def push_var16(self, b: bytes) -> Writer:
        if len(b) > 0xFFFF:
            raise WireError(f"{len(b)} bytes do not fit a 2-byte length")
        return self.push_u16(len(b)).push_bytes(b)


def exact(value: bytes, n: int, what: str) -> bytes:
    """``value`` if it is exactly ``n`` bytes long; WireError naming ``what`` otherwise."""
    if len(value) != n:
        raise WireError(f"{what} is {n} bytes, got {len(value)}")
    return value
