"""Exit policies (peer/proto/exitpolicy.py), table-driven: order, ports, networks, names, default, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import UsageError
from peer.proto.exitpolicy import ExitPolicy

#: (policy, host, port, allowed)
CASES = [
    # the default rejects everything (exits are opt-in)
    ("", "127.0.0.1", 80, False),
    ("", "example.com", 443, False),
    # first match wins: a reject before an accept wins, and the other way round
    ("reject 127.0.0.1:80, accept *:*", "127.0.0.1", 80, False),
    ("reject 127.0.0.1:80, accept *:*", "127.0.0.1", 81, True),
    ("reject 127.0.0.1:80, accept *:*", "127.0.0.2", 80, True),
    ("accept *:*, reject 127.0.0.1:80", "127.0.0.1", 80, True),
    ("reject *:25, accept 127.0.0.0/8:*", "127.0.0.1", 25, False),
    ("reject *:25, accept 127.0.0.0/8:*", "127.0.0.1", 26, True),
    # no rule matches: rejected
    ("accept 127.0.0.1:80", "127.0.0.1", 22, False),
    ("accept 127.0.0.1:80", "127.0.0.2", 80, False),
    # port bounds of a range: lo and hi are inside, lo-1 and hi+1 outside
    ("accept *:80-443", "127.0.0.1", 79, False),
    ("accept *:80-443", "127.0.0.1", 80, True),
    ("accept *:80-443", "127.0.0.1", 443, True),
    ("accept *:80-443", "127.0.0.1", 444, False),
    ("accept *:443-443", "127.0.0.1", 443, True),
    ("accept *:443", "127.0.0.1", 442, False),
    ("accept *:443", "127.0.0.1", 444, False),
    ("accept *:*", "127.0.0.1", 1, True),
    ("accept *:*", "127.0.0.1", 65535, True),
    ("accept *:1-65535", "127.0.0.1", 65535, True),
    # IPv4 networks: /32, /8 and /0 at their edges
    ("accept 127.0.0.1/32:*", "127.0.0.1", 80, True),
    ("accept 127.0.0.1/32:*", "127.0.0.2", 80, False),
    ("accept 127.0.0.0/8:*", "127.0.0.0", 80, True),
    ("accept 127.0.0.0/8:*", "127.255.255.255", 80, True),
    ("accept 127.0.0.0/8:*", "126.255.255.255", 80, False),
    ("accept 127.0.0.0/8:*", "128.0.0.0", 80, False),
    ("accept 127.9.9.9/8:*", "127.0.0.1", 80, True),  # host bits are ignored, as tor does
    ("accept 0.0.0.0/0:*", "255.255.255.255", 80, True),
    ("accept 0.0.0.0/0:*", "::1", 80, False),  # an IPv4 /0 says nothing of IPv6
    ("accept 0.0.0.0/0:*", "example.com", 80, False),  # nor of names
    # IPv6: bracketed, tor's [net]/bits spelling, /128 and /0, and a bracketed host in the BEGIN
    ("accept [::1]:80", "::1", 80, True),
    ("accept [::1]:80", "[::1]", 80, True),
    ("accept [::1]:80", "::2", 80, False),
    ("accept [2001:db8::]/32:*", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 443, True),
    ("accept [2001:db8::]/32:*", "2001:db9::", 443, False),
    ("accept [2001:db8::/32]:*", "2001:db8::1", 443, True),
    ("accept [::1/128]:*", "::1", 443, True),
    ("accept [::/0]:*", "fd00::1", 443, True),
    ("accept [::/0]:*", "127.0.0.1", 443, False),
    ("reject [2001:db8::]/32:*, accept *:*", "2001:db8::1", 443, False),
    # an IPv4-mapped IPv6 address reaches the IPv4 address: the IPv4 rules apply to it
    ("reject 127.0.0.0/8:*, accept *:*", "::ffff:127.0.0.1", 80, False),
    ("accept 127.0.0.1:80", "::ffff:127.0.0.1", 80, True),
    # names against address rules: a name never matches an address or a network (no resolution)
    ("accept 127.0.0.1:*", "localhost", 80, False),
    ("accept 127.0.0.0/8:*", "localhost", 80, False),
    ("accept 0.0.0.0/0:*", "localhost", 80, False),
    ("reject 127.0.0.0/8:*, accept *:*", "localhost", 80, True),  # documented: checked before resolution
    # addresses against name rules, and names against names (case and a final dot do not matter)
    ("accept localhost:*", "127.0.0.1", 80, False),
    ("accept localhost:*", "localhost", 80, True),
    ("accept localhost:*", "LocalHost.", 80, True),
    ("accept example.com:*", "www.example.com", 80, False),
    ("reject example.com:*, accept *:*", "example.com", 80, False),
    # whitespace and newlines between rules
    ("  accept  127.0.0.1:80 ,\n reject *:* ", "127.0.0.1", 80, True),
    ("accept 127.0.0.2:80\naccept 127.0.0.1:80", "127.0.0.1", 80, True),
]


@pytest.mark.parametrize(("policy", "host", "port", "allowed"), CASES)
def test_policy_decides(policy: str, host: str, port: int, allowed: bool) -> None:
    assert ExitPolicy.parse(policy).allows(host, port) is allowed


def test_the_default_policy_has_no_rule_and_rejects_everything() -> None:
    assert ExitPolicy() == ExitPolicy.reject_all() == ExitPolicy.parse("") == ExitPolicy.parse(" ,\n, ")
    assert ExitPolicy.reject_all().rules == ()


BAD = [
    "accept",  # no target
    "allow *:*",  # unknown verb
    "ACCEPT *:*",  # verbs are lower case
    "accept *",  # no port
    "accept :80",  # no host
    "accept *:",  # empty port
    "accept *:0",  # ports are 1..65535
    "accept *:65536",
    "accept *:0-80",
    "accept *:80-65536",
    "accept *:443-80",  # an empty range
    "accept *:80-",
    "accept *:-80",
    "accept *:80-90-100",
    "accept *:+80",
    "accept *:8_0",
    "accept *:0x50",
    "accept *:http",
    "accept *:80 extra",
    "accept 127.0.0.0/33:*",  # a network that is not one
    "accept 127.0.0.0/:*",
    "accept [2001:db8::]/129:*",
    "accept *.example.com:*",  # no wildcard names
    "accept exa mple.com:*",
    "accept *:*:*",
    "accept [:*",
    "accept 127.0.0.1:80, bogus",  # one bad rule fails the whole policy
]


@pytest.mark.parametrize("text", BAD)
def test_bad_spellings_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="bad exit policy rule"):
        ExitPolicy.parse(text)


@settings(max_examples=max(100, settings().max_examples // 4))
@given(st.text(alphabet=st.sampled_from("acceptrj */:-,[]0123456789.fx\n"), max_size=40))
def test_parse_gives_a_policy_or_a_usage_error(text: str) -> None:
    try:
        policy = ExitPolicy.parse(text)
    except UsageError:
        return
    for rule in policy.rules:
        assert 1 <= rule.port_lo <= rule.port_hi <= 65535
        assert rule.host


# ---- after resolution: the addresses a name resolved to (issue 16's exit policy bypass) ----------
LOCAL = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "0.0.0.0", "224.0.0.1"]
LOCAL += ["::1", "fe80::1", "fc00::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]


@pytest.mark.parametrize("address", LOCAL)
def test_star_and_name_rules_never_reach_a_local_address(address: str) -> None:
    p = ExitPolicy.parse("accept localhost:*, accept *:*")
    assert not p.allows_address("localhost", address, 80)
    assert not p.allows_address("example.com", address, 80)


# public addresses as values for the pure policy check (documentation ranges count as private):
# nothing in this file opens a socket
@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1"])
def test_a_public_address_is_allowed_by_star(address: str) -> None:
    assert ExitPolicy.parse("accept *:*").allows_address("example.com", address, 443)
    assert not ExitPolicy.parse("accept *:80").allows_address("example.com", address, 443)
    assert not ExitPolicy.reject_all().allows_address("example.com", address, 443)


def test_an_address_rule_opens_exactly_its_network() -> None:
    p = ExitPolicy.parse("accept 127.0.0.1:*, accept 10.0.0.0/8:8080")
    assert p.allows_address("localhost", "127.0.0.1", 80)
    assert p.allows_address("x", "::ffff:127.0.0.1", 80)  # the IPv4 address it reaches
    assert not p.allows_address("localhost", "127.0.0.2", 80)
    assert p.allows_address("svc", "10.9.9.9", 8080) and not p.allows_address("svc", "10.9.9.9", 80)
    assert not p.allows_address("x", "fe80::1%eth0", 80)  # scoped: never


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_a_reject_rule_catches_the_resolved_address_of_any_spelling(address: str) -> None:
    p = ExitPolicy.parse("reject 127.0.0.0/8:*, accept *:*")
    for name in ("localhost", "2130706433", "0x7f000001", "127.1"):
        assert p.allows(name, 80)  # a name: the BEGIN check cannot tell
        assert not p.allows_address(name, address, 80)


def test_a_name_rule_still_decides_for_public_addresses() -> None:
    p = ExitPolicy.parse("reject evil.example:*, accept *:*")
    assert not p.allows_address("evil.example", "93.184.216.34", 80)
    assert p.allows_address("good.example", "93.184.216.34", 80)
