"""The private link cells (peer/wire/linkcells.py, commands 200-208): layouts, hypothesis
round trips and garbage (2,000 examples per decoder with the ``ci`` profile)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import UnknownVersion, WireError
from peer.wire import cells, linkcells
from peer.wire.cells import Cell, UnknownCellMessage, decode_message, encode_message, pull_cell
from peer.wire.commands import CellCommand, is_variable
from peer.wire.linkcells import (
    LINK_MESSAGE_CLASSES,
    FindPeer,
    FoundPeer,
    Hello,
    Introduce,
    Introduced,
    LinkCloseCode,
    LinkClosing,
    LinkKeep,
    Register,
    Registered,
    RegisterStatus,
    register_message,
)

H = bytes.fromhex


def _fixed(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


_reasons = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=255)

MESSAGES: dict[type, st.SearchStrategy[Any]] = {
    FindPeer: st.builds(FindPeer, _fixed(20)),
    FoundPeer: st.builds(FoundPeer, st.lists(st.binary(max_size=300), max_size=10).map(tuple)),
    Introduce: st.builds(Introduce, _fixed(20), st.binary(max_size=2000)),
    Introduced: st.builds(Introduced, _fixed(20), st.binary(max_size=2000)),
    Hello: st.builds(Hello, _fixed(32)),
    Register: st.builds(Register, st.binary(max_size=1000), _fixed(64)),
    Registered: st.builds(Registered, st.integers(0, 255), _reasons),
    LinkClosing: st.builds(LinkClosing, st.integers(0, 255), _reasons),
    LinkKeep: st.builds(LinkKeep, st.integers(0, 255)),
}
_CLASSES = sorted(MESSAGES, key=lambda c: c.__name__)


def test_every_link_cell_has_a_strategy_and_a_variable_command() -> None:
    assert set(MESSAGES) == set(LINK_MESSAGE_CLASSES)
    assert [int(c.CMD) for c in LINK_MESSAGE_CLASSES] == list(range(200, 209))
    assert all(is_variable(c.CMD) for c in LINK_MESSAGE_CLASSES)


def test_new_cells_layout() -> None:
    nonce = bytes(range(32))
    assert CellCommand.DB_HELLO == 204 and CellCommand.DB_REGISTER == 205 and CellCommand.DB_REGISTERED == 206
    assert Hello(nonce).encode_payload() == b"\x01" + nonce
    assert Register(b"rec", bytes(64)).encode_payload() == H("01 0003") + b"rec" + bytes(64)
    assert Registered(RegisterStatus.OK, "ok").encode_payload() == H("01 00 02") + b"ok"
    assert Registered(RegisterStatus.FULL).encode_payload() == H("01 03 00")
    wire = encode_message(Hello(nonce), 0).encode()
    assert wire == H("00000000 cc 0021 01") + nonce
    assert register_message(nonce, "ws://a/b", b"R") == nonce + b"ws://a/bR"
    assert CellCommand.DB_LINK_CLOSING == 207
    assert LinkClosing(LinkCloseCode.FULL, "full").encode_payload() == H("01 01 04") + b"full"
    assert encode_message(LinkClosing(LinkCloseCode.ROTATED), 0).encode() == H("00000000 cf 0003 01 03 00")
    with pytest.raises(WireError):
        LinkClosing(1, "\x7f").encode_payload()
    assert encode_message(LinkKeep(LinkKeep.GUARD), 0).encode() == H("00000000 d0 0002 01 01")
    with pytest.raises(WireError):
        LinkKeep(256).encode_payload()


def test_moved_cells_are_still_exported_by_cells() -> None:
    for name in ("FindPeer", "FoundPeer", "Introduce", "Introduced", "Hello", "Register", "Registered"):
        assert getattr(cells, name) is getattr(linkcells, name)
    assert cells.PRIVATE_CELL_VERSION == linkcells.PRIVATE_CELL_VERSION == 1
    for cls in LINK_MESSAGE_CLASSES:
        assert cells._DECODERS[cls.CMD] == cls.decode_payload


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_unknown_version_is_refused(cls: Any) -> None:
    with pytest.raises(UnknownVersion):
        cls.decode_payload(b"\x02" + bytes(100))
    msg: Any = {
        FindPeer: FindPeer(bytes(20), version=2),
        FoundPeer: FoundPeer((), version=2),
        Introduce: Introduce(bytes(20), b"", version=2),
        Introduced: Introduced(bytes(20), b"", version=2),
        Hello: Hello(bytes(32), version=2),
        Register: Register(b"", bytes(64), version=2),
        Registered: Registered(0, version=2),
        LinkClosing: LinkClosing(1, version=2),
        LinkKeep: LinkKeep(version=2),
    }[cls]
    with pytest.raises(UnknownVersion):
        msg.encode_payload()


def test_encoder_refuses_bad_fields() -> None:
    with pytest.raises(WireError):
        Hello(bytes(31)).encode_payload()
    with pytest.raises(WireError):
        Register(b"", bytes(63)).encode_payload()
    with pytest.raises(WireError):
        Registered(256).encode_payload()
    with pytest.raises(WireError):
        Registered(1, "é").encode_payload()
    with pytest.raises(WireError):
        Registered(1, "\n").encode_payload()
    with pytest.raises(WireError):
        Registered(1, "x" * 256).encode_payload()
    with pytest.raises(WireError):
        Registered.decode_payload(H("01 01 01 0a"))
    with pytest.raises(WireError):
        register_message(bytes(5), "ws://x", b"")


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: Any, data: st.DataObject) -> None:
    msg = data.draw(MESSAGES[cls])
    cell = encode_message(msg, 0)
    wire = cell.encode()
    assert pull_cell(wire) == (cell, len(wire))
    assert decode_message(cell) == msg
    assert cls.decode_payload(msg.encode_payload()) == msg


_garbage = st.binary(max_size=1200) | st.binary(max_size=1200).map(lambda b: b"\x01" + b)


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(payload=_garbage)
def test_decoder_on_garbage(cls: Any, payload: bytes) -> None:
    try:
        msg = cls.decode_payload(payload)
    except WireError:
        return
    assert msg.encode_payload() == payload  # decoded exactly, so re-encoding is identical


@given(command=st.integers(200, 208), payload=_garbage)
def test_decode_message_on_garbage(command: int, payload: bytes) -> None:
    try:
        msg = decode_message(Cell(0, command, payload))
    except WireError:
        return
    assert not isinstance(msg, UnknownCellMessage)
    assert int(msg.CMD) == command
    assert encode_message(msg, 0) == Cell(0, command, payload)
