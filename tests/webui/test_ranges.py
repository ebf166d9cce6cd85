"""HTTP Range parsing: typed answers for any header, within bounds, equal to a reference written here."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webui.ranges import ByteSpan, Unsatisfiable, parse_range

SIZES = st.integers(0, 2**64 - 1) | st.integers(0, 5000)

_SINGLE = re.compile(r"[ \t]*bytes=[ \t,]*([0-9]*)-([0-9]*)[ \t,]*", re.IGNORECASE | re.ASCII)


def reference(header: str | None, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 §14.1.2 read directly: (first, last) inclusive, "416", or None for a 200."""
    if header is None:
        return None
    m = _SINGLE.fullmatch(header)
    if m is None:
        return None
    a, b = m.groups()
    if not a and not b:
        return None
    if not a:
        suffix = int(b)
        if suffix == 0 or size == 0:
            return "416"
        return size - min(suffix, size), size - 1
    first = int(a)
    if b and int(b) < first:
        return None
    if first >= size:
        return "416"
    return first, (size - 1 if not b else min(int(b), size - 1))


def as_reference(answer: ByteSpan | Unsatisfiable | None) -> tuple[int, int] | str | None:
    if isinstance(answer, ByteSpan):
        return answer.start, answer.stop - 1
    if isinstance(answer, Unsatisfiable):
        return "416"
    return answer


pos = st.text("0123456789", min_size=0, max_size=22)
ows = st.text(" \t", max_size=2)
headers = st.builds(
    lambda unit, eq, pre, a, dash, b, post: f"{unit}{eq}{pre}{a}{dash}{b}{post}",
    st.sampled_from(["bytes", "BYTES", "Bytes", " bytes", "items", "", "byte"]),
    st.sampled_from(["=", "", " =", "=="]),
    st.sampled_from(["", " ", ",", " , ,", "\t"]),
    pos,
    st.sampled_from(["-", "", "--", "+"]),
    pos,
    st.sampled_from(["", " ", ",", ", ", ",0-1", ", 5-", "x", " ,\t"]),
)


@settings(max_examples=600)
@given(header=headers, size=SIZES)
def test_parse_matches_the_reference(header: str, size: int) -> None:
    assert as_reference(parse_range(header, size)) == reference(header, size)


@settings(max_examples=400)
@given(header=st.text(max_size=60) | headers, size=SIZES)
def test_any_header_gives_a_typed_answer_within_bounds(header: str, size: int) -> None:
    answer = parse_range(header, size)
    assert answer is None or isinstance(answer, ByteSpan | Unsatisfiable)
    if isinstance(answer, ByteSpan):
        assert 0 <= answer.start < answer.stop <= size == answer.size
        assert answer.length == answer.stop - answer.start
        assert answer.content_range == f"bytes {answer.start}-{answer.stop - 1}/{size}"
    elif isinstance(answer, Unsatisfiable):
        assert answer.content_range == f"bytes */{size}"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-499", 1000, ByteSpan(0, 500, 1000)),
        ("bytes=500-", 1000, ByteSpan(500, 1000, 1000)),
        ("bytes=-200", 1000, ByteSpan(800, 1000, 1000)),
        ("bytes=-2000", 1000, ByteSpan(0, 1000, 1000)),  # a suffix longer than the file: all of it
        ("bytes=900-5000", 1000, ByteSpan(900, 1000, 1000)),  # clipped to the size
        ("bytes=1000-", 1000, Unsatisfiable(1000)),
        ("bytes=-0", 1000, Unsatisfiable(1000)),
        ("bytes=0-", 0, Unsatisfiable(0)),
        ("bytes=5-4", 1000, None),  # last before first: invalid, ignored
        ("bytes=0-1,5-9", 1000, None),  # several ranges: the whole file, 200
        ("bytes=0-1, ,", 1000, ByteSpan(0, 2, 1000)),  # empty list elements do not count
        ("bytes=\u0661-\u0662", 1000, None),  # non-ASCII digits are not digits here
        ("bytes=" + "9" * 5000 + "-", 1000, None),  # absurdly long positions: ignored, never an error
        ("lines=0-1", 1000, None),
        (None, 1000, None),
    ],
)
def test_examples(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected
