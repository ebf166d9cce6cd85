"""Cell framing and cell messages (tor-spec §3-5): hand-checked bytes and hypothesis properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import UnknownVersion, WireError
from peer.wire import cells
from peer.wire.cells import (
    Cell,
    Create2,
    Destroy,
    FindPeer,
    FoundPeer,
    Introduce,
    Introduced,
    NetAddress,
    Netinfo,
    UnknownCellMessage,
    Versions,
    decode_message,
    encode_message,
    encode_versions_cell,
    pull_cell,
    pull_cells,
)
from peer.wire.commands import CellCommand, DestroyReason, is_variable

from .strategies import CELL_MESSAGES, canonical_cells, fixed_payloads

H = bytes.fromhex

# --------------------------------------------------------------------------- hand-checked bytes


def test_versions_cell_offering_4_and_5() -> None:
    # tor-spec §4.1: CircID[2]=0, Command 7, Length 4, then u16 4 and u16 5.
    assert encode_versions_cell([4, 5]) == H("0000 07 0004 0004 0005")
    cell, used = pull_cell(H("0000 07 0004 0004 0005"), circid_len=2) or pytest.fail("incomplete")
    assert used == 9
    assert cell == Cell(0, CellCommand.VERSIONS, H("00040005"))
    assert decode_message(cell) == Versions((4, 5))


def test_create2_ntor_cell() -> None:
    # tor-spec §5.1: CircID[4] Command[1]=10 then HTYPE[2]=0002 HLEN[2]=0054 HDATA[84], NUL-padded to 509.
    hdata = bytes(range(84))
    wire = encode_message(Create2(2, hdata), 0x80000001).encode()
    assert len(wire) == 514
    assert wire[:9] == H("80000001 0a 0002 0054")
    assert wire[9:93] == hdata
    assert wire[93:] == bytes(514 - 93)


def test_destroy_cell() -> None:
    # tor-spec §5.4: one reason byte; an OP always sends NONE.
    wire = encode_message(Destroy(DestroyReason.NONE), 7).encode()
    assert wire == H("00000007 04") + bytes(509)
    assert decode_message(pull_cell(wire)[0]) == Destroy(0)  # type: ignore[index]


def test_netinfo_client() -> None:
    # tor-spec §4.5: TIME[4]=0, OTHERADDR = 04 04 7f000001, NMYADDR = 0.
    msg = Netinfo(0, NetAddress.from_ip("127.0.0.1"), ())
    assert msg.encode_payload() == H("00000000 04 04 7f000001 00")
    assert msg.other_address.ip is not None and str(msg.other_address.ip) == "127.0.0.1"
    assert NetAddress.from_ip("::1") == NetAddress(6, bytes(15) + b"\x01")
    assert NetAddress(9, b"xy").ip is None


def test_variable_cell_with_4_byte_circid() -> None:
    wire = Cell(0x01020304, CellCommand.VPADDING, b"abc").encode()
    assert wire == H("01020304 80 0003") + b"abc"


def test_private_link_cells_layout() -> None:
    target = bytes(range(20))
    assert FindPeer(target).encode_payload() == b"\x01" + target
    assert FoundPeer((b"ab", b"")).encode_payload() == H("01 02 0002 6162 0000")
    assert Introduce(target, b"xyz").encode_payload() == b"\x01" + target + H("0003") + b"xyz"
    assert Introduced(target, b"").encode_payload() == b"\x01" + target + H("0000")
    assert FindPeer(target, version=1) == FindPeer(target)


@pytest.mark.parametrize("cls", [FindPeer, FoundPeer, Introduce, Introduced])
def test_private_cells_refuse_unknown_version(cls: Any) -> None:
    payload = b"\x02" + bytes(40)
    with pytest.raises(UnknownVersion):
        cls.decode_payload(payload)


def test_private_cell_encode_refuses_unknown_version() -> None:
    with pytest.raises(UnknownVersion):
        FindPeer(bytes(20), version=2).encode_payload()


def test_odd_versions_payload_is_an_error() -> None:
    with pytest.raises(WireError):
        Versions.decode_payload(b"\x00\x04\x00")


def test_netinfo_address_length_must_match_type() -> None:
    with pytest.raises(WireError):
        Netinfo.decode_payload(H("00000000 04 06 7f0000010000 00").ljust(509, b"\0"))


def test_fixed_payload_too_long() -> None:
    with pytest.raises(WireError):
        Cell(1, CellCommand.RELAY, bytes(510)).encode()
    with pytest.raises(WireError):
        encode_message(Create2(2, bytes(506)), 1)


def test_cell_fields_out_of_range() -> None:
    with pytest.raises(WireError):
        Cell(1 << 16, 7, b"").encode(circid_len=2)
    with pytest.raises(WireError):
        Cell(1, 256, b"").encode()
    with pytest.raises(WireError):
        Cell(1, 128, bytes(65536)).encode()
    with pytest.raises(WireError):
        pull_cell(b"", circid_len=3)


def test_pull_cell_needs_whole_cell() -> None:
    wire = Cell(5, CellCommand.PADDING, bytes(509)).encode()
    assert pull_cell(wire[:-1]) is None
    assert pull_cell(H("00000000 80 00")) is None
    assert pull_cell(b"") is None


def test_unknown_command_is_kept() -> None:
    cell = Cell(0, 99, bytes(509))
    assert decode_message(cell) == UnknownCellMessage(99, bytes(509))
    assert encode_message(UnknownCellMessage(99, b"x"), 0) == Cell(0, 99, b"x".ljust(509, b"\0"))


def test_registry_refuses_duplicates() -> None:
    from peer.errors import UsageError
    from peer.wire.commands import build_registry

    with pytest.raises(UsageError):
        build_registry([(1, "a"), (1, "b")], "test")


def test_every_command_number_has_its_variable_flag() -> None:
    assert [c for c in CellCommand if is_variable(c)] == [
        CellCommand.VERSIONS,
        CellCommand.VPADDING,
        CellCommand.CERTS,
        CellCommand.AUTH_CHALLENGE,
        CellCommand.AUTHENTICATE,
        CellCommand.AUTHORIZE,
        CellCommand.DB_FIND_PEER,
        CellCommand.DB_FOUND_PEER,
        CellCommand.DB_INTRODUCE,
        CellCommand.DB_INTRODUCED,
        CellCommand.DB_HELLO,
        CellCommand.DB_REGISTER,
        CellCommand.DB_REGISTERED,
        CellCommand.DB_LINK_CLOSING,
        CellCommand.DB_LINK_KEEP,
    ]


# --------------------------------------------------------------------------- framing properties


@pytest.mark.parametrize("circid_len", [2, 4])
@given(data=st.data())
def test_pull_cell_inverts_encode(circid_len: int, data: st.DataObject) -> None:
    cell = data.draw(canonical_cells(circid_len))
    wire = cell.encode(circid_len)
    assert pull_cell(wire, circid_len) == (cell, len(wire))
    assert pull_cell(wire[:-1], circid_len) is None
    assert pull_cell(memoryview(wire + b"tail"), circid_len) == (cell, len(wire))


@given(st.binary(max_size=1200), st.sampled_from([2, 4]))
def test_pull_cell_on_arbitrary_bytes(buf: bytes, circid_len: int) -> None:
    got = pull_cell(buf, circid_len)
    if got is None:
        return
    cell, used = got
    assert 0 < used <= len(buf)
    assert cell.encode(circid_len) == buf[:used]


@given(st.lists(canonical_cells(), max_size=6), st.integers(1, 600))
def test_stream_fed_in_pieces_gives_the_same_cells(cell_list: list[Cell], step: int) -> None:
    stream = b"".join(c.encode() for c in cell_list)
    got: list[Cell] = []
    buf = bytearray()
    for i in range(0, len(stream), step):
        buf += stream[i : i + step]
        while (one := pull_cell(buf)) is not None:
            got.append(one[0])
            del buf[: one[1]]
    assert got == cell_list
    assert not buf
    assert pull_cells(stream) == (cell_list, len(stream))


@given(st.lists(canonical_cells(), min_size=1, max_size=3))
def test_stream_fed_byte_by_byte(cell_list: list[Cell]) -> None:
    stream = b"".join(c.encode() for c in cell_list)
    got: list[Cell] = []
    buf = bytearray()
    for byte in stream:
        buf.append(byte)
        one = pull_cell(buf)
        if one is not None:
            got.append(one[0])
            del buf[: one[1]]
    assert got == cell_list


# --------------------------------------------------------------------------- message properties

_CLASSES = sorted(CELL_MESSAGES, key=lambda c: c.__name__)
# arbitrary bytes, and arbitrary bytes behind the private cells' version byte 1
_var_payloads = st.binary(max_size=700) | st.binary(max_size=700).map(lambda b: b"\x01" + b)


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_message_round_trip(cls: Any, data: st.DataObject) -> None:
    msg = data.draw(CELL_MESSAGES[cls])
    cell = encode_message(msg, 0x80000001)
    wire = cell.encode()
    pulled = pull_cell(wire)
    assert pulled == (cell, len(wire))
    assert decode_message(pulled[0]) == msg
    body = msg.encode_payload()
    assert cls.decode_payload(body) == msg  # also without the padding
    assert encode_message(decode_message(cell), 0x80000001) == cell  # canonical bytes re-encode


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_message_decoder_on_arbitrary_bytes(cls: Any, data: st.DataObject) -> None:
    fixed = not is_variable(cls.CMD)
    payload = data.draw(fixed_payloads if fixed else _var_payloads)
    try:
        msg = cls.decode_payload(payload)
    except WireError:
        return
    body = msg.encode_payload()
    if fixed:
        assert payload.startswith(body)  # the body is read from the front; the rest is padding
    else:
        assert body == payload  # variable cells are decoded exactly
    assert cls.decode_payload(body) == msg


@given(st.integers(0, 255), fixed_payloads | st.binary(max_size=700))
def test_decode_message_never_raises_anything_else(command: int, payload: bytes) -> None:
    try:
        msg = decode_message(Cell(1, command, payload))
    except WireError:
        return
    assert isinstance(msg, UnknownCellMessage) == (command not in cells._DECODERS)
