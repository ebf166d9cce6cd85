"""Relay cells and relay message bodies (tor-spec §5-7): hand-checked bytes and hypothesis properties."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import WireError
from peer.wire.commands import EndReason, RelayCommand
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecIPv4, LinkSpecLegacyId
from peer.wire.relay import (
    RELAY_DATA_MAX,
    Begin,
    BeginDir,
    BeginFlags,
    Connected,
    Data,
    End,
    Extend2,
    RelayCell,
    Sendme,
    Truncate,
    UnknownRelayMessage,
    decode_relay_message,
    peek_header,
    relay_payload,
    relay_payload_for,
)

from .strategies import RELAY_MESSAGES, u8, u16

H = bytes.fromhex


def _rand(seed: int = 7) -> random.Random:
    return random.Random(seed)


# --------------------------------------------------------------------------- hand-checked bytes


def test_begin_with_flags() -> None:
    # tor-spec §6.2: "127.0.0.1:80" NUL, then FLAGS[4] = IPv6 okay (bit 1).
    msg = Begin("127.0.0.1", 80, BeginFlags.IPV6_OK)
    body = msg.encode()
    assert body == b"127.0.0.1:80\x00" + H("00000001")
    assert decode_relay_message(RelayCommand.BEGIN, body) == Begin("127.0.0.1", 80, 1)


def test_begin_ipv6_literal_in_brackets() -> None:
    assert Begin("::1", 443).encode() == b"[::1]:443\x00"
    assert Begin.decode(b"[::1]:443\x00") == Begin("::1", 443, None)


@pytest.mark.parametrize(
    "body",
    [
        b"127.0.0.1:80",  # no NUL
        b"127.0.0.1\x00",  # no port
        b"127.0.0.1:0\x00",  # port 0
        b"127.0.0.1:65536\x00",
        b"127.0.0.1:080\x00",  # not canonical
        b"127.0.0.1:+80\x00",
        b"127.0.0.1: 80\x00",
        b"127.0.0.1:8_0\x00",
        b"::1:80\x00",  # IPv6 without brackets
        b"[::1:80\x00",
        b"[::1]80\x00",
        b"[host]:80\x00",  # brackets around a non-IPv6 name
        b":80\x00",  # empty address
        b"a b:80\x00",
        b"h\xc3\xa9:80\x00",  # not ASCII
        b"host:80\x00\x00\x00\x01",  # 3 flag bytes
        b"host:80\x00\x00\x00\x00\x01\x00",  # 5 flag bytes
    ],
)
def test_begin_malformed(body: bytes) -> None:
    with pytest.raises(WireError):
        Begin.decode(body)


@pytest.mark.parametrize(
    "msg",
    [Begin("", 80), Begin("a]b", 80), Begin("host", 0), Begin("host", 70000), Begin("host", 1, 1 << 32)],
)
def test_begin_encode_refuses_bad_fields(msg: Begin) -> None:
    with pytest.raises(WireError):
        msg.encode()


def test_sendme_v1() -> None:
    # tor-spec §7.3.1: VERSION[1]=1 DATA_LEN[2]=20 DIGEST[20].
    digest = bytes(range(20))
    assert Sendme.v1(digest).encode() == H("01 0014") + digest
    assert Sendme.decode(H("01 0014") + digest) == Sendme(1, digest)
    assert Sendme().encode() == b""
    with pytest.raises(WireError):
        Sendme.decode(H("01 0013") + digest[:19])
    with pytest.raises(WireError):
        Sendme(1, b"short").encode()


def test_sendme_explicit_version_0_reads_as_empty() -> None:
    assert Sendme.decode(H("00 0000")) == Sendme()


def test_extend2_ipv4_legacy_ed25519() -> None:
    # tor-spec §5.1.2: NSPEC=3; 00 06 addr port; 02 14 rsa-id; 03 20 ed25519; HTYPE 0002 HLEN 0054 HDATA.
    rsa_id = bytes(range(1, 21))
    ed = bytes(range(100, 132))
    hdata = bytes(84)
    msg = Extend2(
        (LinkSpecIPv4(H("7f000001"), 9001), LinkSpecLegacyId(rsa_id), LinkSpecEd25519(ed)),
        2,
        hdata,
    )
    expect = H("03 00 06 7f000001 2329 02 14") + rsa_id + H("03 20") + ed + H("0002 0054") + hdata
    assert msg.encode() == expect
    assert decode_relay_message(RelayCommand.EXTEND2, expect) == msg


def test_end_exitpolicy_variants() -> None:
    assert End.decode(b"") == End(EndReason.MISC)
    assert End.decode(H("04 7f000007")) == End(4, H("7f000007"), None)
    with pytest.raises(WireError):
        End.decode(H("06 00"))  # only EXITPOLICY carries more
    with pytest.raises(WireError):
        End.decode(H("04 7f0000"))
    with pytest.raises(WireError):
        End(6, H("7f000001")).encode()
    with pytest.raises(WireError):
        End(4, None, 5).encode()


def test_connected_variants() -> None:
    assert Connected.decode(H("7f000001")) == Connected(H("7f000001"), None)
    with pytest.raises(WireError):
        Connected.decode(H("00000000 07") + bytes(20))
    with pytest.raises(WireError):
        Connected.decode(H("7f000001 0000"))
    with pytest.raises(WireError):
        Connected(bytes(4), 1).encode()
    with pytest.raises(WireError):
        Connected(bytes(16), None).encode()


def test_empty_messages_ignore_their_body() -> None:
    assert BeginDir.decode(b"junk") == BeginDir()
    assert Truncate.decode(b"junk") == Truncate()


def test_db_commands_are_not_decoded_here() -> None:
    for cmd in (RelayCommand.DB_INFO, RelayCommand.DB_QUERY, RelayCommand.DB_END):
        assert decode_relay_message(cmd, b"x") == UnknownRelayMessage(cmd, b"x")


def test_relay_payload_layout() -> None:
    # tor-spec §6.1: Command, Recognized=0, StreamID, Digest=0, Length, Data, then 4 NULs and random.
    payload = relay_payload(RelayCommand.DATA, 0x1234, b"hello", _rand().randbytes)
    assert len(payload) == 509
    assert payload[:16] == H("02 0000 1234 00000000 0005") + b"hello"
    assert payload[16:20] == bytes(4)
    assert payload[20:] == _rand().randbytes(509 - 20)
    assert peek_header(payload) == (2, 0, 0x1234, bytes(4), 5)
    cell = RelayCell.decode(payload)
    assert cell.message() == Data(b"hello")
    assert cell.encode() == payload


@pytest.mark.parametrize("n", [RELAY_DATA_MAX, RELAY_DATA_MAX - 1, RELAY_DATA_MAX - 4, RELAY_DATA_MAX - 5])
def test_relay_payload_short_padding(n: int) -> None:
    payload = relay_payload(2, 1, b"\xff" * n, lambda k: b"\xee" * k)
    pad = RELAY_DATA_MAX - n
    assert payload[11 + n :] == bytes(min(pad, 4)) + b"\xee" * max(0, pad - 4)


def test_relay_payload_refuses_too_much_data() -> None:
    with pytest.raises(WireError):
        relay_payload(2, 1, bytes(499), _rand().randbytes)
    with pytest.raises(WireError):
        relay_payload(2, 1 << 16, b"", _rand().randbytes)


def test_peek_header_rejects_bad_length() -> None:
    bad = H("02 0000 0001 00000000 01f3") + bytes(498)  # Length 499
    with pytest.raises(WireError):
        peek_header(bad)
    with pytest.raises(WireError):
        RelayCell.decode(bad)
    with pytest.raises(WireError):
        peek_header(bytes(508))


def test_relay_payload_for_message() -> None:
    payload = relay_payload_for(Sendme.v1(bytes(20)), 0, _rand().randbytes)
    assert RelayCell.decode(payload).message() == Sendme(1, bytes(20))
    payload = relay_payload_for(UnknownRelayMessage(200, b"db"), 3, _rand().randbytes)
    assert peek_header(payload)[0] == 200


# --------------------------------------------------------------------------- properties

relay_cells = st.integers(0, RELAY_DATA_MAX).flatmap(
    lambda n: st.builds(
        RelayCell,
        u8,
        u16,
        u16,
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=n, max_size=n),
        st.binary(min_size=RELAY_DATA_MAX - n, max_size=RELAY_DATA_MAX - n),
    )
)


@given(relay_cells)
def test_relay_cell_round_trip(cell: RelayCell) -> None:
    payload = cell.encode()
    assert len(payload) == 509
    assert RelayCell.decode(payload) == cell
    assert peek_header(payload) == (
        cell.command,
        cell.recognized,
        cell.stream_id,
        cell.digest,
        len(cell.data),
    )


@given(st.binary(min_size=509, max_size=509) | st.binary(max_size=600))
def test_relay_cell_decoder_on_arbitrary_bytes(payload: bytes) -> None:
    try:
        cell = RelayCell.decode(payload)
    except WireError:
        return
    assert cell.encode() == payload


@given(u8, u16, st.binary(max_size=RELAY_DATA_MAX), st.randoms(use_true_random=False))
def test_relay_payload_round_trip(command: int, stream_id: int, data: bytes, rng: random.Random) -> None:
    payload = relay_payload(command, stream_id, data, rng.randbytes)
    cell = RelayCell.decode(payload)
    assert (cell.command, cell.recognized, cell.stream_id, cell.digest, cell.data) == (
        command,
        0,
        stream_id,
        bytes(4),
        data,
    )
    assert cell.padding[:4] == bytes(min(4, len(cell.padding)))


_CLASSES = sorted(RELAY_MESSAGES, key=lambda c: c.__name__)
# Decoders that accept more than one encoding of a message (tor's own leniency).
_LENIENT = {BeginDir, Truncate, End, Sendme}


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_message_round_trip(cls: Any, data: st.DataObject) -> None:
    msg = data.draw(RELAY_MESSAGES[cls])
    body = msg.encode()
    assert decode_relay_message(cls.CMD, body) == msg
    payload = relay_payload_for(msg, 1, lambda n: bytes(n))
    assert RelayCell.decode(payload).message() == msg


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_message_decoder_on_arbitrary_bytes(cls: Any, data: st.DataObject) -> None:
    # arbitrary bytes, and mutations of a valid body (truncated or extended)
    valid = data.draw(RELAY_MESSAGES[cls]).encode()
    body = data.draw(
        st.binary(max_size=RELAY_DATA_MAX)
        | st.integers(0, len(valid)).map(lambda k: valid[:k])
        | st.binary(max_size=8).map(lambda b: valid + b)
    )
    try:
        msg = cls.decode(body)
    except WireError:
        return
    again = msg.encode()
    if cls not in _LENIENT:
        assert again == body
    assert cls.decode(again) == msg
