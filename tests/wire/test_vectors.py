"""Test vectors copied as data from Arti's tor-cell crate.

Source: Arti (https://gitlab.torproject.org/tpo/core/arti), files
``crates/tor-cell/tests/testvec_chanmsg.rs`` and ``crates/tor-cell/tests/testvec_relaymsg.rs``.
Arti's note there: "Except where noted, these were taken by instrumenting Tor 0.4.5.0-alpha-dev
to dump all of its cells to the logs, and running in a chutney network"; the ones Arti marks
hand-generated are marked so below.  Hex strings are copied unchanged (whitespace aside); each
is decoded, compared with the expected message, and re-encoded.  Fixed-cell bodies are padded
with NULs to 509 bytes, as on the wire.

Where our decoders deliberately differ from Arti, the test says so:
- NETINFO with malformed addresses: Arti ignores them, we refuse the cell (as C tor's trunnel
  parser does for a known ATYPE with the wrong length).
- END ``04 7f000007`` (EXITPOLICY without TTL): Arti fills TTL 0xffffffff; we keep "no TTL".
"""

from __future__ import annotations

import pytest

from peer.errors import WireError
from peer.wire.cells import (
    PAYLOAD_LEN,
    AuthChallenge,
    Authenticate,
    Authorize,
    Cell,
    CellMessage,
    CertEntry,
    Certs,
    Create2,
    Created2,
    CreatedFast,
    CreateFast,
    Destroy,
    NetAddress,
    Netinfo,
    Padding,
    PaddingNegotiate,
    Relay,
    RelayEarly,
    UnknownCellMessage,
    Versions,
    VPadding,
    decode_message,
    encode_message,
)
from peer.wire.commands import CellCommand, RelayCommand, is_variable
from peer.wire.linkspec import LinkSpecIPv4, LinkSpecLegacyId
from peer.wire.relay import (
    Begin,
    BeginDir,
    Connected,
    Data,
    Drop,
    End,
    Extend2,
    Extended2,
    RelayMessage,
    Sendme,
    Truncate,
    Truncated,
    UnknownRelayMessage,
    decode_relay_message,
)


def unhex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# --------------------------------------------------------------------------- testvec_chanmsg.rs

AUTH_CHALLENGE = unhex("00DA5C085DEE4F3656710DA3B73652E48ACD5BAE608335FCA3FB6C4DEE104A51")

AUTHENTICATION = unhex(
    "4155544830303033ED6B2ACBAC868D87D1500505BF59196FD38DEF15E1078C46BF97C7EBCC26C2A26AAF7E6B8FF0C27AB8F0047426017D03A413D8C1D00077ED441112C3E88EEE535BA78B2FD74C3910C5FECBD700677DCA931F4B90EA5CD24D4E64F7E9EC9E0F38E4E1E55E42BC72F59E9224E328EB1BBE3D079013B2A04CDBCEB43B7135D365E81B01B6845D789F66F0F62AAF52D906D2252E5F105215A627123C05AF782D7B0D64C41C30AFB6660B3DB1028868104E2560CB527568241992B80855101D3BF6EFA987F7A56C132A0CF38B0097AA215CC58FF089AFCC15C0ABB3947E68137CD8554E336C435E4633F88909919E5448F80CDDBD5987D85407A95A2BBC898C7004318265719D99C7B549C276CDEE38CE9202395CB7E1EBD9B3D47C1F4BC254AA12798BA1480400A3CC8067518A9BBDD453E601579429CF2E72D6C175DA0A412D99ECA1079015651E95E8F40AD8BEC3CB496E83C0C66D10F4C606"
)

CERT1 = unhex(
    "3082023A308201A3A003020102020872AB0FE86C771604300D06092A864886F70D01010B0500301F311D301B06035504030C147777772E74636A76356B766A646472322E636F6D301E170D3230303632373030303030305A170D3231303231363233353935395A301C311A301806035504030C117777772E617775676863646E732E6E657430820122300D06092A864886F70D01010105000382010F003082010A0282010100FE255E99E10BE986DDA5DFB4AD7C39E8EFE4E5D79E105AB976942B6829386EB1D7B7AFB5ED4FCBEC8C1A34C34FD2ED182F8B42A0363453B55EE371F21347235277E2357F28AA10DD82D4248F7D1894AB5D2979654F71C350F73AD9F918D71F34F1505F77EC16391C8340F392F3684BA4BB6A7B022C3954C1158F152F9E3B4E328FAB2E4E881903CA0E32204B0FDA8AB62B6E215A7BDEC3F2AE41DC58EEC1252F643A1812A5D71802F48D6133DF79955E01F0287BB4AB8CF95BEBCD2EC66EF5B38C7B5EC08DED3D6E2A1D57289D773D5CB932803B6D97784D1DA36AE71C073ADBB7393714001CD7A082512772A7076DC01166417AF7C50AEF7F15FD0806EB07FF0203010001300D06092A864886F70D01010B050003818100CDA4E06BB6BB238B91188A077EEB0A4722518090FD116AF6CDEEB0E85CF6D8E242CF861F973A252EB5116709373B5AC817E6F848E2CBD76AEF684350D3416AEE5F33D56B96982509CDAF11CCA7260E5ADF6DDD0D017AE9A575C999ADAE50B3FB7027E810D47C8C5C14618C0AA10D307E304FBE50E868ADECB2C9536E2DB51BE0"
)
CERT2 = unhex(
    "308201B930820122A0030201020208607C28BE6C390943300D06092A864886F70D01010B0500301F311D301B06035504030C147777772E74636A76356B766A646472322E636F6D301E170D3230303831303030303030305A170D3231303831303030303030305A301F311D301B06035504030C147777772E74636A76356B766A646472322E636F6D30819F300D06092A864886F70D010101050003818D0030818902818100D38B1E6CEB946E0DB0751F4CBACE3DCB9688B6C25304227B4710C35AFB73627E50500F5913E158B621802612D1C75827003703338375237552EB3CD3C12F6AB3604E60C1A2D26BB1FBAD206FF023969A90909D6A65A5458A5312C26EBD3A3DAD30302D4515CDCD264146AC18E6FC60A04BD3EC327F04294D96BA5AA25B464C3F0203010001300D06092A864886F70D01010B0500038181003BCE561EA7F95CC00B78AAB5D69573FF301C282A751D4A651921D042F1BECDBA24D918A6D8A5E138DC07BBA0B335478AE37ABD2C93A93932442AE9084329E846170FE0FC4A50AAFC804F311CC3CA4F41D845A7BA5901CBBC3E021E9794AAC70CE1F37B0A951592DB1B64F2B4AFB81AE52DBD9B6FEDE96A5FB8125EB6251EE50A"
)
CERT4 = unhex(
    "01040006CC2A01F82294B866A31F01FC5D0DA8572850A9B929545C3266558D7D2316E3B74172B00100200400DCB604DB2034B00FD16986D4ADB9D16B21CB4E4457A33DEC0F538903683E96E9FF1A5203FA27F86EF7528D89A0845D2520166E340754FFEA2AAE0F612B7CE5DA094A0236CDAC45034B0B6842C18E7F6B51B93A3CF7E60663B8AD061C30A62602"
)
CERT5 = unhex(
    "01050006C98A03B4FD606B64E4CBD466B8D76CB131069BAE6F3AA1878857C9F624E31D77A799B8007173E5F8068431D0D3F5EE16B4C9FFD59DF373E152A87281BAE744AA5FCF72171BF4B27C4E8FC1C6A9FC5CA11058BC49647063D7903CFD9F512F89099B27BC0C"
)
CERT7 = unhex(
    "DCB604DB2034B00FD16986D4ADB9D16B21CB4E4457A33DEC0F538903683E96E90006DA3A805CF6006F9179066534DE6B45AD47A5C469063EE462762723396DC9F25452A0A52DA3F5087DD239F2A311F6B0D4DFEFF4ABD089DC3D0237A0ABAB19EB2045B91CDCAF04BE0A72D548A27BF2E77BD876ECFE5E1BE622350DA6BF31F6E306ED896488DD5B39409B23FC3EB7B2C9F7328EB18DA36D54D80575899EA6507CCBFCDF1F"
)
CERTS_BODY = (
    unhex("05 01 023E")
    + CERT1
    + unhex("02 01BD")
    + CERT2
    + unhex("04 008C")
    + CERT4
    + unhex("05 0068")
    + CERT5
    + unhex("07 00A5")
    + CERT7
)

CREATE2_HS = unhex(
    "09164430E84D3BC56EC7E1D22734742345E2DECE0DE535B66B8E8A0EBBDAE3263C53E02EC2215685CD3A977DC7946FF47F84CD7025F75D252D1B35DEA28F32FA912513889A207E5049992DBC9BC541194C13624A"
)
CREATED2_HS = unhex(
    "0108907A701030ADB6CA9C6AF097DC4855614655659B6A7BF21C1097DCE7C66EE0E4EF287DE7CED40BEECA8B90140C05DB6138AEB551CE0C037068C315E307A0"
)
CREATED_FAST = unhex("03B74250B01D09FDA72B70D63AE7994926F13055BED23485F6B3C8C3CEAFE1DF48A9FF8BAC4993FC")
LOCALHOST4 = unhex("7F000001")
LOCALHOST6 = unhex("00000000000000000000000000000001")
UNSPECIFIED_TEXT = b"A mage's name is better hidden than a herring in the sea"
NOT_VALIDATED = b"not validated at this stage"

# (command, body hex, expected message); fixed bodies are padded to 509 bytes by the test.
CHAN_VECTORS: list[tuple[int, bytes, CellMessage]] = [
    (
        CellCommand.AUTH_CHALLENGE,
        AUTH_CHALLENGE + unhex("0002 0001 0003"),
        AuthChallenge(AUTH_CHALLENGE, (1, 3)),
    ),
    (CellCommand.AUTHENTICATE, unhex("0003 0160") + AUTHENTICATION, Authenticate(3, AUTHENTICATION)),
    (
        CellCommand.CERTS,
        CERTS_BODY,
        Certs(
            (
                CertEntry(1, CERT1),
                CertEntry(2, CERT2),
                CertEntry(4, CERT4),
                CertEntry(5, CERT5),
                CertEntry(7, CERT7),
            )
        ),
    ),
    (CellCommand.CREATE2, unhex("0002 0054") + CREATE2_HS, Create2(2, CREATE2_HS)),
    (
        CellCommand.CREATE_FAST,
        unhex("0DC2A5EB921EF4B71F41184A99F4FAD99620A648"),
        CreateFast(unhex("0DC2A5EB921EF4B71F41184A99F4FAD99620A648")),
    ),
    (CellCommand.CREATED2, unhex("0040") + CREATED2_HS, Created2(CREATED2_HS)),
    (CellCommand.CREATED_FAST, CREATED_FAST, CreatedFast(CREATED_FAST[:20], CREATED_FAST[20:])),
    (CellCommand.DESTROY, unhex("04"), Destroy(4)),
    (CellCommand.DESTROY, unhex("0000"), Destroy(0)),
    (
        CellCommand.NETINFO,
        unhex("00000000 04 04 7F000001 00"),
        Netinfo(0, NetAddress(4, LOCALHOST4), ()),
    ),
    (
        CellCommand.NETINFO,
        unhex("5F6F80E1 04 04 7F000001 01 04 04 7F000001"),
        Netinfo(0x5F6F80E1, NetAddress(4, LOCALHOST4), (NetAddress(4, LOCALHOST4),)),
    ),
    (
        CellCommand.NETINFO,
        unhex(
            "5F6F859C 06 10 00000000000000000000000000000001 02 04 04 7F000001 06 10 00000000000000000000000000000001"
        ),
        Netinfo(
            0x5F6F859C,
            NetAddress(6, LOCALHOST6),
            (NetAddress(4, LOCALHOST4), NetAddress(6, LOCALHOST6)),
        ),
    ),
    (CellCommand.NETINFO, unhex("00000000 04 04 00000000 00"), Netinfo(0, NetAddress(4, bytes(4)), ())),
    (CellCommand.PADDING, b"", Padding()),
    (CellCommand.VERSIONS, unhex("000300040005"), Versions((3, 4, 5))),
    (101, UNSPECIFIED_TEXT, UnknownCellMessage(101, UNSPECIFIED_TEXT.ljust(PAYLOAD_LEN, b"\0"))),
    (
        244,
        b"better guarded than a dragon's den",
        UnknownCellMessage(244, b"better guarded than a dragon's den"),
    ),
    (CellCommand.RELAY, NOT_VALIDATED, Relay(NOT_VALIDATED.ljust(PAYLOAD_LEN, b"\0"))),
    (CellCommand.RELAY_EARLY, NOT_VALIDATED, RelayEarly(NOT_VALIDATED.ljust(PAYLOAD_LEN, b"\0"))),
    (CellCommand.AUTHORIZE, NOT_VALIDATED, Authorize(NOT_VALIDATED)),
    (CellCommand.VPADDING, b"", VPadding(b"")),
    (CellCommand.VPADDING, bytes(10), VPadding(bytes(10))),
    (CellCommand.PADDING_NEGOTIATE, unhex("00 02 0100 0200"), PaddingNegotiate(0, 2, 256, 512)),
    (CellCommand.PADDING_NEGOTIATE, unhex("00 01 0000 0000"), PaddingNegotiate(0, 1, 0, 0)),
]


@pytest.mark.parametrize(("command", "body", "expect"), CHAN_VECTORS)
def test_arti_channel_vectors(command: int, body: bytes, expect: CellMessage) -> None:
    payload = body if is_variable(command) else body.ljust(PAYLOAD_LEN, b"\0")
    cell = Cell(0, command, payload)
    assert decode_message(cell) == expect
    assert encode_message(expect, 0) == cell  # re-encodes to the same bytes


def test_arti_certs_lengths() -> None:
    # the copied hex is intact: each length prefix matches the certificate's own DER/cert length
    assert [len(c) for c in (CERT1, CERT2, CERT4, CERT5, CERT7)] == [0x23E, 0x1BD, 0x8C, 0x68, 0xA5]
    assert len(AUTHENTICATION) == 0x160


def test_arti_netinfo_with_bogus_addresses_is_refused() -> None:
    # Hand-generated in Arti ("Bogus addresses get ignored"); we refuse a known ATYPE of the wrong length.
    body = unhex(
        "5F6F859C 06 09 000000000000000000 03 04 06 7F0000010000 BB 02 FFFF 06 10 00000000000000000000000000000001"
    )
    with pytest.raises(WireError):
        decode_message(Cell(0, CellCommand.NETINFO, body.ljust(PAYLOAD_LEN, b"\0")))


# --------------------------------------------------------------------------- testvec_relaymsg.rs

EXTEND2_HS = unhex(
    "03479E93EBF3FF2C58C1C9DBF2DE9DE9C2801B3E36A3E0BDB1F1A10579820243DD2E228B902940EB49EF842646E3926768C28410074BEE50A535116D657C6BFB7E5114119DC69F05DF907EF62002EA782B0A357F"
)
EXTEND2_RSA = unhex("03479E93EBF3FF2C58C1C9DBF2DE9DE9C2801B3E")
EXTENDED2_HS = unhex(
    "0026619058EB2661834D54C2624828728F28915587CDAD1AD3373B85F33A480EEA9D3B2CEF8D39C1DBD2FA519E75296B96960690C79A28D6A0D9454F8E9634BD"
)
SENDME_TAG = unhex("F01234989823478bcdefabcdef01234567890123")

RELAY_VECTORS: list[tuple[int, str, RelayMessage]] = [
    (RelayCommand.BEGIN, "3132372E302E302E313A3730303300", Begin("127.0.0.1", 7003)),
    # hand-generated in Arti: flags set; IPv6 in brackets
    (RelayCommand.BEGIN, "7777772e786b63642e636f6d3a34343300 00000003", Begin("www.xkcd.com", 443, 3)),
    (RelayCommand.BEGIN, "5b323030313a6462383a3a315d3a323200", Begin("2001:db8::1", 22)),
    (RelayCommand.BEGIN_DIR, "", BeginDir()),
    (RelayCommand.CONNECTED, "", Connected()),
    (RelayCommand.CONNECTED, "7F000001 00000E10", Connected(LOCALHOST4, 0xE10)),
    (
        RelayCommand.CONNECTED,
        "00000000 06 20010db8 00000000 00000000 00001122 00000E10",
        Connected(unhex("20010db8 00000000 00000000 00001122"), 0xE10),
    ),
    (RelayCommand.DROP, "", Drop()),
    (RelayCommand.END, "01", End(1)),
    (RelayCommand.END, "06", End(6)),
    (RelayCommand.END, "04 7f000007 00000100", End(4, unhex("7f000007"), 256)),
    (
        RelayCommand.END,
        "04 20010db8 00000000 00000000 0000f00b 00000200",
        End(4, unhex("20010db8 00000000 00000000 0000f00b"), 512),
    ),
    (
        RelayCommand.EXTEND2,
        "02 00 06 7F0000011388 02 14 03479E93EBF3FF2C58C1C9DBF2DE9DE9C2801B3E 0002 0054" + EXTEND2_HS.hex(),
        Extend2((LinkSpecIPv4(LOCALHOST4, 5000), LinkSpecLegacyId(EXTEND2_RSA)), 2, EXTEND2_HS),
    ),
    (RelayCommand.EXTENDED2, "0040" + EXTENDED2_HS.hex(), Extended2(EXTENDED2_HS)),
    (RelayCommand.TRUNCATED, "08", Truncated(8)),
    (RelayCommand.SENDME, "", Sendme()),
    (RelayCommand.SENDME, "01 0014 F01234989823478bcdefabcdef01234567890123", Sendme(1, SENDME_TAG)),
    (RelayCommand.TRUNCATE, "", Truncate()),
    (249, "617262697472617279206279746573", UnknownRelayMessage(249, b"arbitrary bytes")),
    (RelayCommand.DATA, "474554202f20485454502f312e310d0a0d0a", Data(b"GET / HTTP/1.1\r\n\r\n")),
]


@pytest.mark.parametrize(("command", "body_hex", "expect"), RELAY_VECTORS)
def test_arti_relay_vectors(command: int, body_hex: str, expect: RelayMessage) -> None:
    body = unhex(body_hex)
    assert decode_relay_message(command, body) == expect
    assert expect.encode() == body


@pytest.mark.parametrize(
    ("command", "body_hex", "expect", "canonical_hex"),
    [
        # hand-generated in Arti: an empty END reads as MISC
        (RelayCommand.END, "", End(1), "01"),
        # hand-generated in Arti (which fills TTL 0xffffffff); we keep "no TTL" and re-encode as is
        (RelayCommand.END, "04 7f000007", End(4, unhex("7f000007"), None), "04 7f000007"),
    ],
)
def test_arti_relay_noncanonical(
    command: int, body_hex: str, expect: RelayMessage, canonical_hex: str
) -> None:
    assert decode_relay_message(command, unhex(body_hex)) == expect
    assert expect.encode() == unhex(canonical_hex)


@pytest.mark.parametrize(
    ("command", "body_hex"),
    [
        (RelayCommand.BEGIN, "5b3a3a5d21"),  # "[::]!": no port after IPv6
        (RelayCommand.BEGIN, "746f7270726f6a656374e284a22e6f72673a34343300"),  # not ASCII
        (RelayCommand.CONNECTED, "00000000 07 20010db8 00000000 00000000 00001122 00000E10"),  # bad type
    ],
)
def test_arti_relay_errors(command: int, body_hex: str) -> None:
    with pytest.raises(WireError):
        decode_relay_message(command, unhex(body_hex))
