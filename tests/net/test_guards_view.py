"""The peer view (peer.net.peerview) and the keys on disk (peer.net.keystore).

The view keeps only records it verified itself, the newest per NodeID, and drops them when
they expire.  The key store keeps a stable peer's keys in a private file written atomically
and never writes an ephemeral peer's keys at all.
"""

from __future__ import annotations

import dataclasses
import os
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.records import PeerRecord, Route
from peer.crypto.identity import Identity
from peer.errors import StorageError, WireError
from peer.net import keystore
from peer.net.handshake import PeerKeys
from peer.net.keystore import (
    KEY_FILE,
    atomic_write_private,
    decode_keys,
    encode_keys,
    load_or_create_keys,
)
from peer.net.peerview import PeerView, record_hosts, subnet16

NOW = 1_800_000_000.0


def identity(seed: int) -> Identity:
    return Identity.generate(random.Random(seed).randbytes)


def record(
    ident: Identity,
    *,
    expiry: float = NOW + 600,
    endpoints: tuple[tuple[str, str], ...] = (("tls", "127.0.0.1:443"),),
) -> PeerRecord:
    return PeerRecord(
        ident.public, bytes(31) + b"\x02", bytes(31) + b"\x03", Route(endpoints), (), True, int(expiry)
    ).sign(ident)


# ---- the peer view -----------------------------------------------------------------------------


def test_a_valid_record_is_kept_and_found() -> None:
    view = PeerView(identity(0).node_id)
    rec = record(identity(1))
    assert view.add(rec, NOW) is True
    assert view.get(rec.node_id) == rec and view.all() == [rec] and len(view) == 1


def test_our_own_record_is_refused() -> None:
    me = identity(0)
    view = PeerView(me.node_id)
    assert view.add(record(me), NOW) is False and len(view) == 0


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: dataclasses.replace(r, ntor_key=bytes(31) + b"\x09"),  # changed after signing
        lambda r: dataclasses.replace(r, signature=bytes(64)),
        lambda r: dataclasses.replace(r, identity_key=identity(9).public),  # someone else's name on it
        lambda r: dataclasses.replace(r, expiry=r.expiry + 1),
    ],
    ids=["field-changed", "zero-signature", "other-identity", "expiry-changed"],
)
def test_records_with_a_bad_signature_are_refused(spoil) -> None:  # type: ignore[no-untyped-def]
    view = PeerView(identity(0).node_id)
    bad = spoil(record(identity(1)))
    assert view.add(bad, NOW) is False
    assert view.get(bad.node_id) is None and len(view) == 0


def test_expired_and_far_future_records_are_refused() -> None:
    view = PeerView(identity(0).node_id)
    assert view.add(record(identity(1), expiry=NOW), NOW) is False  # expiry <= now
    assert view.add(record(identity(2), expiry=NOW - 3600), NOW) is False
    assert view.add(record(identity(3), expiry=NOW + 10 * 24 * 3600), NOW) is False
    assert len(view) == 0


def test_add_all_counts_only_what_it_kept() -> None:
    view = PeerView(identity(0).node_id)
    good = [record(identity(n)) for n in (1, 2, 3)]
    forged = dataclasses.replace(record(identity(4)), seal_key=bytes(32))
    expired = record(identity(5), expiry=NOW - 1)
    own = record(identity(0))
    assert view.add_all([good[0], forged, good[1], expired, own, good[2]], NOW) == 3
    assert sorted(r.node_id for r in view.all()) == sorted(r.node_id for r in good)
    assert view.get(forged.node_id) is None and view.get(expired.node_id) is None


def test_the_newest_record_per_peer_wins() -> None:
    ident = identity(1)
    view = PeerView(identity(0).node_id)
    old, new = record(ident, expiry=NOW + 100), record(ident, expiry=NOW + 900)
    assert view.add(new, NOW)
    assert view.add(old, NOW) is True  # valid, but older: not kept
    assert view.get(ident.node_id) == new
    newer = record(ident, expiry=NOW + 1200, endpoints=(("tls", "127.0.0.2:443"),))
    assert view.add(newer, NOW) and view.get(ident.node_id) == newer and len(view) == 1


def test_expire_drops_records_at_their_expiry() -> None:
    view = PeerView(identity(0).node_id)
    short, long_ = record(identity(1), expiry=NOW + 60), record(identity(2), expiry=NOW + 600)
    view.add_all([short, long_], NOW)
    view.expire(NOW + 59)
    assert len(view) == 2
    view.expire(NOW + 60)
    assert view.all() == [long_]
    view.forget(long_.node_id)
    view.forget(long_.node_id)  # forgetting twice is harmless
    assert len(view) == 0


def test_record_hosts_lists_the_ip_addresses_of_a_route() -> None:
    rec = record(
        identity(1),
        endpoints=(
            ("tls", "127.0.0.1:443"),
            ("ws", "[::1]:8080"),
            ("tls", "[fd00::9]"),
            ("udp", "fd00::7"),
            ("webrtc", "peer"),
            ("tls", "relay.example.invalid:443"),
        ),
    )
    assert record_hosts(rec) == {"127.0.0.1", "::1", "fd00::9", "fd00::7"}


def test_subnet16_groups_ipv4_by_16_and_ipv6_by_32() -> None:
    assert subnet16("127.1.2.3") == "127.1.0.0/16" == subnet16("127.1.200.9")
    assert subnet16("127.2.0.1") != subnet16("127.1.0.1")
    assert subnet16("2001:db8:1::1") == "2001:db8::/32" == subnet16("2001:db8:ffff::2")


# ---- keys on disk ------------------------------------------------------------------------------


def public_parts(keys: PeerKeys) -> tuple[bytes, bytes, bytes]:
    return keys.identity.public, keys.ntor.public, keys.seal.public


def test_a_stable_peer_keeps_its_keys_in_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_or_create_keys(data, stable=True)
    path = data / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    again = load_or_create_keys(data, stable=True)
    assert public_parts(again) == public_parts(first) and again.node_id == first.node_id
    assert path.read_bytes() == encode_keys(first)
    assert sorted(p.name for p in data.iterdir()) == [KEY_FILE]  # no temporary file left


def test_an_ephemeral_peer_never_writes_keys(tmp_path: Path) -> None:
    a = load_or_create_keys(tmp_path, stable=False)
    b = load_or_create_keys(tmp_path, stable=False)
    assert public_parts(a) != public_parts(b)
    assert list(tmp_path.iterdir()) == []


def test_an_ephemeral_peer_ignores_a_stable_key_file(tmp_path: Path) -> None:
    stable = load_or_create_keys(tmp_path, stable=True)
    assert load_or_create_keys(tmp_path, stable=False).node_id != stable.node_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o610, 0o602], ids=oct)
def test_a_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    load_or_create_keys(tmp_path, stable=True)
    (tmp_path / KEY_FILE).chmod(mode)
    with pytest.raises(StorageError, match="chmod 600"):
        load_or_create_keys(tmp_path, stable=True)


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:50], lambda b: b + b"\x00", lambda b: b"\x02" + b[1:], lambda b: b""],
    ids=["truncated", "trailing", "version-2", "empty"],
)
def test_a_damaged_key_file_is_reported(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    load_or_create_keys(tmp_path, stable=True)
    path = tmp_path / KEY_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StorageError, match="damaged"):
        load_or_create_keys(tmp_path, stable=True)


def test_keys_round_trip() -> None:
    keys = PeerKeys.generate(random.Random(7).randbytes)
    data = encode_keys(keys)
    assert len(data) == 97 and data[0] == keystore.VERSION
    assert public_parts(decode_keys(data)) == public_parts(keys)


@given(st.binary(max_size=200))
def test_decode_keys_takes_only_a_whole_version_1_file(data: bytes) -> None:
    try:
        keys = decode_keys(data)
    except WireError:
        assert len(data) != 97 or data[0] != keystore.VERSION
        return
    assert len(data) == 97 and data[0] == keystore.VERSION and encode_keys(keys) == data


def test_atomic_write_replaces_with_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        atomic_write_private(path, b"new")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "downloads.json"
    atomic_write_private(path, b"[1]")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore.os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_private(path, b"[1, 2]")
    monkeypatch.undo()
    assert path.read_bytes() == b"[1]"  # never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads.json"]
