"""Path selection rules (path-spec §2.2, simplified; see peer/tor/path.py) as hypothesis properties
over random consensuses, and the persisted guard set."""

from __future__ import annotations

import json
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import PathError, StorageError, UsageError
from peer.tor.consensus import Consensus
from peer.tor.directory import NetworkDirectory, Relay, family_rsa_ids
from peer.tor.errors import NoSuitableRelay
from peer.tor.guards import GuardSet, select_path
from peer.tor.microdesc import PolicySummary
from peer.tor.path import PathBuilder, check_path, subnet_of, weighted_choice

FLAG_SETS = st.frozensets(st.sampled_from(["Running", "Valid", "Guard", "Exit", "BadExit", "Fast", "Stable"]))
POLICIES = st.sampled_from(
    [
        PolicySummary(True, ((1, 65535),)),
        PolicySummary(True, ((80, 80), (443, 443))),
        PolicySummary(False, ((1, 65535),)),
        PolicySummary(False, ((25, 25),)),
    ]
)


@st.composite
def relays(draw: st.DrawFn, n: int) -> Relay:
    return Relay(
        nickname=f"r{n}",
        rsa_id=n.to_bytes(20, "big"),
        ed25519_id=n.to_bytes(32, "big"),
        address=f"10.{draw(st.integers(0, 3))}.{draw(st.integers(0, 255))}.1",
        orport=9001,
        flags=draw(FLAG_SETS) | draw(st.sampled_from([frozenset(), frozenset({"Running", "Valid"})])),
        bandwidth=draw(st.integers(0, 1000)),
        ntor_key=bytes(32),
        policy=draw(POLICIES),
        family=frozenset(i.to_bytes(20, "big") for i in draw(st.sets(st.integers(0, 11), max_size=4))),
        family_ids=frozenset(draw(st.sets(st.sampled_from(["ed25519:a", "ed25519:b"]), max_size=1))),
    )


@st.composite
def networks(draw: st.DrawFn) -> list[Relay]:
    n = draw(st.integers(0, 12))
    return [draw(relays(i)) for i in range(n)]


def directory_of(rs: list[Relay]) -> NetworkDirectory:
    c = Consensus(0.0, 1.0, 2.0, frozenset(), (), (), {}, {}, (), {}, "")
    return NetworkDirectory(c, tuple(rs), frozenset())


@given(
    networks(), st.sampled_from([25, 80, 443, 8080]), st.integers(2, 5), st.booleans(), st.integers(0, 2**32)
)
def test_paths_always_follow_the_rules(net: list[Relay], port: int, hops: int, same: bool, seed: int) -> None:
    rng = random.Random(seed)
    try:
        path = PathBuilder(net, rng, allow_same_subnet=same).build(port, hops=hops)
    except NoSuitableRelay:
        return
    assert len(path) == hops
    check_path(path, port, allow_same_subnet=same)
    assert all(r in net for r in path)


@given(networks(), st.sampled_from([80, 443]), st.integers(0, 2**32))
def test_guard_set_paths_follow_the_rules(net: list[Relay], port: int, seed: int) -> None:
    rng = random.Random(seed)
    guards = GuardSet(None)
    d = directory_of(net)
    for _ in range(3):
        try:
            path = select_path(d, port, guards=guards, rng=rng, now=1000.0)
        except NoSuitableRelay:
            continue
        check_path(path, port)
        assert path[0].rsa_id in {g.rsa_id for g in guards.entries}
    assert len(guards.entries) <= 3


def test_no_two_hops_in_one_slash16_unless_allowed() -> None:
    same = [
        Relay(
            f"r{i}",
            bytes([i]) * 20,
            None,
            "127.0.0.1",
            9000 + i,
            frozenset({"Running", "Valid", "Guard", "Exit"}),
            10,
            bytes(32),
            PolicySummary(True, ((1, 65535),)),
        )
        for i in range(1, 4)
    ]
    with pytest.raises(NoSuitableRelay, match="/16"):
        PathBuilder(same, random.Random(1)).build(80)
    path = PathBuilder(same, random.Random(1), allow_same_subnet=True).build(80)
    assert len({r.rsa_id for r in path}) == 3


def test_error_names_the_missing_exit() -> None:
    rs = [
        Relay(
            "g",
            b"\x01" * 20,
            None,
            "127.10.0.1",
            1,
            frozenset({"Running", "Valid", "Guard"}),
            1,
            bytes(32),
            PolicySummary(False, ((1, 65535),)),
        )
    ]
    with pytest.raises(NoSuitableRelay, match="exit accepting port 80"):
        PathBuilder(rs, random.Random(0)).build(80)
    with pytest.raises(UsageError):
        PathBuilder(rs, random.Random(0)).build(80, hops=1)
    assert issubclass(NoSuitableRelay, PathError)


def test_weighted_choice_follows_bandwidth() -> None:
    rs = [
        Relay(
            f"r{i}",
            bytes([i]) * 20,
            None,
            "127.10.0.1",
            1,
            frozenset(),
            bw,
            bytes(32),
            PolicySummary(False, ()),
        )
        for i, bw in enumerate([0, 100, 900])
    ]
    rng = random.Random(7)
    counts = {r.nickname: 0 for r in rs}
    for _ in range(5000):
        counts[weighted_choice(rs, rng).nickname] += 1
    assert counts["r0"] == 0
    assert 3.0 < counts["r2"] / counts["r1"] < 18.0  # expected 9; loose bound, seeded rng


def test_subnet_of() -> None:
    assert subnet_of("127.1.2.3") == subnet_of("127.1.200.9") != subnet_of("127.2.0.1")
    assert subnet_of("[2001:db8::1]") == subnet_of("2001:db8:ffff::2")


def _net(n: int) -> list[Relay]:
    return [
        Relay(
            f"r{i}",
            bytes([i]) * 20,
            bytes([i]) * 32,
            f"10.{i}.0.1",
            9001,
            frozenset({"Running", "Valid", "Guard", "Exit"}),
            100,
            bytes(32),
            PolicySummary(True, ((1, 65535),)),
        )
        for i in range(1, n + 1)
    ]


def test_guard_set_is_persisted_and_reused(tmp_path: Path) -> None:
    d = directory_of(_net(8))
    guards = GuardSet.in_data_dir(tmp_path)
    first = select_path(d, 80, guards=guards, rng=random.Random(1), now=5.0)
    f = tmp_path / "tor" / "guards.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    doc = json.loads(f.read_text())
    assert doc["version"] == 1 and doc["guards"][0]["rsa_id"] == first[0].rsa_id.hex()
    reloaded = GuardSet.in_data_dir(tmp_path)
    for seed in range(20):
        path = select_path(d, 80, guards=reloaded, rng=random.Random(seed), now=6.0)
        check_path(path, 80)
        assert path[0].rsa_id in {g.rsa_id for g in reloaded.entries}
    assert len(reloaded.entries) <= 3


def test_guard_gone_from_consensus_is_replaced(tmp_path: Path) -> None:
    net = _net(6)
    guards = GuardSet.in_data_dir(tmp_path)
    g1 = select_path(directory_of(net), 80, guards=guards, rng=random.Random(3), now=1.0)[0]
    rest = [r for r in net if r.rsa_id != g1.rsa_id]
    g2 = select_path(directory_of(rest), 80, guards=guards, rng=random.Random(3), now=2.0)[0]
    assert g2.rsa_id != g1.rsa_id
    assert [e.rsa_id for e in GuardSet.in_data_dir(tmp_path).entries] == [g1.rsa_id, g2.rsa_id]


def test_corrupt_or_future_guard_file(tmp_path: Path) -> None:
    f = tmp_path / "guards.json"
    f.write_text("{not json")
    with pytest.raises(StorageError):
        GuardSet(f)
    f.write_text(json.dumps({"version": 2, "guards": []}))
    with pytest.raises(StorageError):
        GuardSet(f)


def test_no_two_hops_of_one_family() -> None:
    def relay(i: int, family: tuple[int, ...] = (), ids: tuple[str, ...] = ()) -> Relay:
        return Relay(
            f"r{i}",
            bytes([i]) * 20,
            None,
            f"127.{i}.0.1",
            9000 + i,
            frozenset({"Running", "Valid", "Guard", "Exit"}),
            10,
            bytes(32),
            PolicySummary(True, ((1, 65535),)),
            frozenset(bytes([f]) * 20 for f in family),
            frozenset(ids),
        )

    # 1 and 2 list each other: one family; 3 lists 1 but 1 does not list 3: not a family
    one, two, three = relay(1, (2, 3)), relay(2, (1,)), relay(3, (1,))
    assert one.same_family(two) and two.same_family(one)
    assert not three.same_family(relay(4))
    assert not relay(3, (4,)).same_family(relay(4))
    assert relay(5, ids=("ed25519:x",)).same_family(relay(6, ids=("ed25519:x",)))
    with pytest.raises(NoSuitableRelay, match="family"):
        check_path([one, two], 80)
    for seed in range(50):  # with only 1, 2 and a third relay, every 3-hop path uses the third
        path = PathBuilder([one, two, relay(7)], random.Random(seed)).build(80, hops=2)
        check_path(path, 80)
        assert {r.nickname for r in path} != {"r1", "r2"}
    with pytest.raises(NoSuitableRelay, match="another family"):
        PathBuilder([one, two], random.Random(0)).build(80, hops=2)


def test_family_lines_name_rsa_ids() -> None:
    hexid = "AB" * 20
    got = family_rsa_ids([f"${hexid}", f"${'CD' * 20}=nick", f"${'EF' * 20}~nick", "nickname", "$zz", "$12"])
    assert got == {bytes.fromhex(hexid), bytes.fromhex("CD" * 20), bytes.fromhex("EF" * 20)}
