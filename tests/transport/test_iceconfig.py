"""The ICE address policy, SDP checks and the receive-buffer helper (peer/transport/iceconfig.py)."""

from __future__ import annotations

import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import TransportError, UsageError
from peer.transport.iceconfig import (
    MAX_REMOTE_CANDIDATES,
    SO_RCVBUFFORCE,
    IcePolicy,
    IcePolicyError,
    IceServer,
    WebRtcConfig,
    candidate_lines,
    filter_remote_sdp,
    sdp_fingerprint_sha256,
    set_receive_buffer,
)

# Non-loopback interfaces are IPv6 unique-local / link-local / documentation addresses: pure data for
# the policy function (nothing is bound or sent), and no IPv4 address outside 127/8 in the tests.
IFACES = ["127.0.0.1", "::1", "fd00:1::20", "fd00:8::3", "fe80::3", "2001:db8::7"]


def fake_interfaces() -> list[str]:
    return list(IFACES)


def sdp_with(*candidates: str, c_line: str = "c=IN IP4 127.0.0.1") -> str:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    ]
    lines.append(c_line)
    lines += [f"a=candidate:{c}" for c in candidates]
    return "\r\n".join(lines) + "\r\n"


def test_default_policy_is_real_interfaces_without_loopback_or_link_local() -> None:
    policy = IcePolicy.from_config(WebRtcConfig(), fake_interfaces)
    assert policy.bind == ("fd00:1::20", "fd00:8::3", "2001:db8::7")
    assert not policy.allows("127.0.0.1")
    assert not policy.allows("::1")
    assert not policy.allows("fe80::3")
    assert policy.allows("fd00:8::3")
    assert not policy.allows("fd00:8::4")
    assert not policy.servers


def test_explicit_addresses_are_bound_even_when_no_interface_has_them() -> None:
    policy = IcePolicy.from_config(WebRtcConfig.loopback("127.5.0.1", "127.0.0.1"), fake_interfaces)
    assert policy.bind == ("127.5.0.1", "127.0.0.1")
    assert policy.allows("127.5.0.1") and not policy.allows("127.5.0.2")
    assert not policy.allows("fd00:1::20")


def test_networks_select_interface_addresses() -> None:
    policy = IcePolicy.from_config(WebRtcConfig(ice_allow=("fd00:1::/32", "2001:db8::/32")), fake_interfaces)
    assert policy.bind == ("fd00:1::20", "2001:db8::7")
    assert policy.allows("fd00:1::200:1")
    assert not policy.allows("fd00:8::3")
    assert not policy.allows("not-an-ip.local")


def test_config_validation() -> None:
    with pytest.raises(UsageError):
        WebRtcConfig(ice_allow=("300.1.1.1",))
    with pytest.raises(UsageError):
        WebRtcConfig.loopback("2001:db8::1")
    with pytest.raises(UsageError):
        WebRtcConfig(rcvbuf=0)
    with pytest.raises(UsageError):
        WebRtcConfig(recv_queue_limit=1000)
    with pytest.raises(UsageError):
        IceServer("http://stun.example")
    from_url = WebRtcConfig(ice_servers=("stun:127.0.0.1:3478",))  # type: ignore[arg-type]
    assert from_url.ice_servers == (IceServer("stun:127.0.0.1:3478"),)
    with pytest.raises(UsageError):
        WebRtcConfig(ice_servers=("127.0.0.1:3478",))  # type: ignore[arg-type]
    listed = WebRtcConfig(ice_allow=["127.0.0.1"])  # type: ignore[arg-type]
    assert listed.ice_allow == ("127.0.0.1",)
    assert hash(listed) == hash(WebRtcConfig(ice_allow=("127.0.0.1",)))


def test_local_sdp_check_accepts_allowed_host_candidates() -> None:
    policy = IcePolicy.from_config(WebRtcConfig.loopback("127.0.0.1", "127.9.0.1"), fake_interfaces)
    policy.check_local_sdp(sdp_with("a 1 udp 1 127.0.0.1 5000 typ host", "b 1 udp 1 127.9.0.1 5001 typ host"))


@pytest.mark.parametrize(
    "sdp",
    [
        sdp_with("a 1 udp 1 fd00:1::20 5000 typ host"),
        sdp_with("a 1 udp 1 127.0.0.1 5000 typ host", c_line="c=IN IP6 fd00:1::20"),
        sdp_with("a 1 udp 1 2001:db8:113::9 5000 typ srflx raddr 127.0.0.1 rport 5000"),
        sdp_with("a 1 udp 1 127.0.0.1 5000 typ host raddr fd00:8::3 rport 1"),
    ],
    ids=["host", "c-line", "srflx-without-server", "related"],
)
def test_local_sdp_check_refuses_excluded_addresses(sdp: str) -> None:
    policy = IcePolicy.from_config(WebRtcConfig.loopback("127.0.0.1"), fake_interfaces)
    with pytest.raises(IcePolicyError):
        policy.check_local_sdp(sdp)


def test_reflexive_candidates_are_allowed_only_with_a_configured_server() -> None:
    config = WebRtcConfig(ice_allow=("fd00:1::/32",), ice_servers=(IceServer("stun:127.0.0.1:3478"),))
    policy = IcePolicy.from_config(config, fake_interfaces)
    policy.check_local_sdp(
        sdp_with(
            "a 1 udp 1 fd00:1::20 5000 typ host",
            "b 1 udp 1 2001:db8:113::9 6000 typ srflx raddr fd00:1::20 rport 5000",
            c_line="c=IN IP6 2001:db8:113::9",
        )
    )
    with pytest.raises(IcePolicyError):  # the related address must still be allowed
        policy.check_local_sdp(
            sdp_with("b 1 udp 1 2001:db8:113::9 6000 typ srflx raddr fd00:8::3 rport 5000")
        )
    # A relayed candidate's related address is the reflexive address the server reported.
    policy.check_local_sdp(
        sdp_with(
            "a 1 udp 1 fd00:1::20 5000 typ host",
            "r 1 udp 1 2001:db8:51::3 7000 typ relay raddr 2001:db8:113::9 rport 6000",
            c_line="c=IN IP6 2001:db8:51::3",
        )
    )


def test_remote_sdp_filter_drops_mdns_and_tcp_candidates() -> None:
    sdp = sdp_with(
        "a 1 udp 1 127.0.0.1 5000 typ host",
        "b 1 udp 1 3f1c-peer.local 5001 typ host",
        "c 1 tcp 1 127.0.0.1 9 typ host tcptype active",
        "short",
    )
    loopback = IcePolicy.from_config(WebRtcConfig.loopback(), fake_interfaces)
    kept = candidate_lines(filter_remote_sdp(sdp, loopback))
    assert [(c.address, c.transport) for c in kept] == [("127.0.0.1", "udp")]


def test_remote_sdp_filter_drops_loopback_unless_we_bind_loopback() -> None:
    sdp = sdp_with(
        "a 1 udp 1 127.0.0.1 5000 typ host",
        "b 1 udp 1 2001:db8:51::7 5001 typ host",
        "c 1 udp 1 0.0.0.0 5002 typ host",
        "d 1 udp 1 ff02::fb 5353 typ host",
    )
    lan = IcePolicy.from_config(WebRtcConfig(), fake_interfaces)
    assert [c.address for c in candidate_lines(filter_remote_sdp(sdp, lan))] == ["2001:db8:51::7"]
    loopback = IcePolicy.from_config(WebRtcConfig.loopback(), fake_interfaces)
    assert [c.address for c in candidate_lines(filter_remote_sdp(sdp, loopback))] == [
        "127.0.0.1",
        "2001:db8:51::7",
    ]


def test_remote_sdp_filter_caps_the_number_of_candidates() -> None:
    sdp = sdp_with(*(f"f{i} 1 udp 1 2001:db8:51::{i:x} 5000 typ host" for i in range(1, 40)))
    assert len(candidate_lines(filter_remote_sdp(sdp))) == MAX_REMOTE_CANDIDATES


def test_candidate_parse_refuses_malformed_lines() -> None:
    with pytest.raises(TransportError):
        candidate_lines(sdp_with("a 1 udp 1 127.0.0.1"))


def test_sdp_fingerprint() -> None:
    fp = bytes(range(32))
    text = ":".join(f"{b:02X}" for b in fp)
    assert sdp_fingerprint_sha256(f"a=fingerprint:sha-256 {text}\r\n") == fp
    assert sdp_fingerprint_sha256("a=fingerprint:sha-512 00\r\n") is None
    with pytest.raises(TransportError):
        sdp_fingerprint_sha256("a=fingerprint:sha-256 00:11\r\n")
    with pytest.raises(TransportError):
        sdp_fingerprint_sha256(f"a=fingerprint:sha-256 {text}\r\na=fingerprint:sha-256 {'00:' * 31}00\r\n")


@given(st.text())
def test_sdp_parsers_raise_only_transport_errors(text: str) -> None:
    try:
        candidate_lines(text)
        sdp_fingerprint_sha256(text)
    except TransportError:
        pass
    filter_remote_sdp(text)


class FakeSocket:
    """Models Linux: SO_RCVBUF capped at rmem_max and doubled on read-back; FORCE needs root."""

    def __init__(self, rmem_max: int, root: bool) -> None:
        self.rmem_max = rmem_max
        self.root = root
        self.value = 212992

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        assert level == socket.SOL_SOCKET
        if option == SO_RCVBUFFORCE:
            if not self.root:
                raise PermissionError("needs CAP_NET_ADMIN")
            self.value = value * 2
        else:
            assert option == socket.SO_RCVBUF
            self.value = min(value, self.rmem_max) * 2

    def getsockopt(self, level: int, option: int, /) -> int:
        assert option == socket.SO_RCVBUF
        return self.value


def test_receive_buffer_capped_by_the_kernel_is_reported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peer.transport.iceconfig"):
        result = set_receive_buffer(FakeSocket(rmem_max=212992, root=False), 4 * 1024 * 1024)
    assert result.capped and not result.forced
    assert result.effective == 212992
    assert any("capped" in r.getMessage() for r in caplog.records)


def test_receive_buffer_forced_as_root(caplog: pytest.LogCaptureFixture) -> None:
    if SO_RCVBUFFORCE is None:
        pytest.skip("no SO_RCVBUFFORCE on this platform")
    with caplog.at_level(logging.WARNING, logger="peer.transport.iceconfig"):
        result = set_receive_buffer(FakeSocket(rmem_max=212992, root=True), 4 * 1024 * 1024)
    assert result.forced and not result.capped
    assert result.effective == 4 * 1024 * 1024
    assert not caplog.records


def test_receive_buffer_on_a_real_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        result = set_receive_buffer(sock, 1024 * 1024)
        assert result.effective >= 1024 * 1024 or not result.forced
        assert result.effective == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        assert result.capped == (result.effective < 1024 * 1024)
