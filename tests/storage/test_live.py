"""Live-stream pieces (storage/live.py, DESIGN §7)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.crypto.identity import SigningKey, verify
from peer.errors import WireError
from storage.errors import LiveVerifyError
from storage.live import LIVE_PIECE_CONTEXT, LivePiece, LiveWindow
from storage.manifest import live_hash_name

KEY = SigningKey(b"\x11" * 32)
NOW = 1_800_000_000.0


def piece(
    i: int, payload: bytes = b"frame", ts: int | None = None, key: SigningKey = KEY, stream: str = "cam"
) -> LivePiece:
    return LivePiece.sign(key, stream, i, int(NOW * 1000) if ts is None else ts, payload)


def test_signature_covers_the_design_fields() -> None:
    p = piece(5, b"abc")
    h = live_hash_name(KEY.public, "cam")
    msg = h + (5).to_bytes(8, "big") + p.timestamp_ms.to_bytes(8, "big") + hashlib.sha256(b"abc").digest()
    verify(KEY.public, LIVE_PIECE_CONTEXT, msg, p.signature)
    assert LivePiece.decode(p.encode()) == p


def test_window_keeps_only_recent_pieces() -> None:
    w = LiveWindow(KEY.public, "cam", capacity=4)
    for i in range(10):
        w.add(piece(i).encode(), NOW)
    assert w.indices() == [6, 7, 8, 9]
    assert w.get(5) is None and w.get(9) is not None
    with pytest.raises(LiveVerifyError):
        w.add(piece(3), NOW)  # older than the window
    w.add(piece(7), NOW)  # a duplicate inside the window is fine
    assert len(w) == 4


def test_forged_foreign_and_future_pieces_are_refused() -> None:
    w = LiveWindow(KEY.public, "cam", capacity=8)
    good = piece(1, b"x")
    tampered = LivePiece(good.hash_name, 1, good.timestamp_ms, b"y", good.signature)
    for bad in (
        tampered,
        LivePiece(good.hash_name, 2, good.timestamp_ms, b"x", good.signature),  # index changed
        piece(1, key=SigningKey(b"\x22" * 32)),  # another publisher's stream
        piece(1, stream="other"),  # another stream
        piece(1, ts=int(NOW * 1000) + 3_600_000),  # an hour in the future
    ):
        with pytest.raises(LiveVerifyError):
            w.add(bad, NOW)
    assert len(w) == 0


@given(st.binary(max_size=300))
def test_live_garbage_gives_typed_error(data: bytes) -> None:
    try:
        p = LivePiece.decode(data)
    except WireError:
        return
    assert p.encode() == data
