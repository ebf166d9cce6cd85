"""ORDB message codecs: round trips, canonical bytes, garbage gives WireError only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import WireError
from peer.wire.ordb import (
    DbConnected,
    DbEnd,
    DbInfo,
    DbQuery,
    FrameReader,
    InfoEntry,
    PieceFrame,
    PieceRange,
    slices,
)

hashes = st.binary(min_size=32, max_size=32)
txids = st.binary(min_size=16, max_size=16)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def infos(draw: st.DrawFn) -> DbInfo:
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        count = draw(st.integers(2, 10_000))
        cuts = sorted(set(draw(st.lists(st.integers(0, count), min_size=2, max_size=6))))
        ranges = tuple(PieceRange(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b)
        entries.append(InfoEntry(draw(hashes), count, ranges))
    return DbInfo(tuple(entries), draw(st.booleans()))


messages = st.one_of(
    infos(),
    st.builds(DbQuery, hashes, u32, u32, st.integers(0, 5), txids),
    st.builds(DbConnected, txids, st.sampled_from([0, 1]), u32, u32, st.integers(0, 2**64 - 1)),
    st.builds(DbEnd, st.integers(0, 255), txids),
)


@given(messages)
def test_round_trip(msg: DbInfo | DbQuery | DbConnected | DbEnd) -> None:
    body = msg.encode()
    assert len(body) <= 498
    again = type(msg).decode(body)
    assert again == msg
    assert again.encode() == body


@pytest.mark.parametrize("cls", [DbInfo, DbQuery, DbConnected, DbEnd])
@given(data=st.binary(max_size=200))
def test_garbage_gives_wire_error(cls: Any, data: bytes) -> None:
    try:
        cls.decode(data)
    except WireError:
        pass


def test_unknown_version_is_refused() -> None:
    body = bytearray(DbQuery(bytes(32), 0, 0, 0).encode())
    body[0] = 2
    with pytest.raises(WireError, match="version"):
        DbQuery.decode(bytes(body))


@given(st.lists(st.tuples(u32, st.binary(max_size=80), st.binary(max_size=3000)), max_size=6), st.data())
def test_frames_reassemble_from_any_slicing(
    frames: list[tuple[int, bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(PieceFrame(i, p, b).encode() for i, p, b in frames)
    reader = FrameReader(max_piece=4096)
    got: list[PieceFrame] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 700))
        got += reader.feed(stream[pos : pos + step])
        pos += step
    assert [(f.index, f.proof, f.piece) for f in got] == frames
    assert reader.pending == 0
    assert b"".join(slices(stream)) == stream


def test_oversized_piece_is_refused() -> None:
    with pytest.raises(WireError, match="larger"):
        FrameReader(max_piece=10).feed(PieceFrame(0, b"", b"x" * 11).encode())
