"""Anonymity (DESIGN §1, §11): join what every process saw and check who learned what.

Every process of a testnet records, behind an explicit test flag, its neighbours, each
circuit it is part of with the neighbour before it, every relay payload it decrypted, its
DHT operations, and (the bridge) all its traffic.  The check: no process other than the
requester holds both the requester's identity (as the previous hop of a circuit) and the
hash_name (or its DHT key) in that circuit's context; likewise for the holder; the requester
never asks the DHT; the bridge never sees a hash_name.  Nor may an ORDB that sees the
hash_name on a circuit an end built have a direct link to that end at the time, ORDB-to-ORDB
links included (its own test).  A negative control — a requester that
uses 1-hop circuits to its ORDBs — must make both checks fail.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.app.apiclient import ApiClient
from peer.app.testnet import NetSpec, launch_testnet, stop_testnet
from peer.testing.anonymity import Views

pytestmark = pytest.mark.e2e
HOLDER, REQUESTER, UNSAFE = 1, 6, 4


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("anon")
    state = launch_testnet(
        NetSpec(peers=8, dir=d, links=3, exits=0, record=True, peer_args={UNSAFE: ("--test-one-hop-ordb",)})
    )
    state["dir"] = d
    yield state
    stop_testnet(d)


def api(net: dict[str, Any], i: int) -> ApiClient:
    return ApiClient.from_data_dir(Path(net["peers"][i]["data_dir"]), timeout=60)


def share_and_get(net: dict[str, Any], tmp: Path, holder: int, requester: int, name: str) -> bytes:
    src = tmp / name
    src.write_bytes(os.urandom(3_000_000))
    link = api(net, holder).post("/api/shares", {"path": str(src), "encrypt": False})["link"]
    c = api(net, requester)
    out = tmp / f"{name}.out"
    s = c.post("/api/downloads", {"link": link, "output": str(out)})
    deadline = time.monotonic() + 180
    while (s := c.get(f"/api/downloads/{s['id']}"))["state"] not in ("complete", "failed"):
        assert time.monotonic() < deadline, s
        time.sleep(0.3)
    assert s["state"] == "complete", (s.get("error"), s)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    return bytes.fromhex(s["id"])


def test_nobody_links_requester_or_holder_to_the_content(net: dict[str, Any], tmp_path: Path) -> None:
    h = share_and_get(net, tmp_path, HOLDER, REQUESTER, "safe.bin")
    time.sleep(1.0)
    v = Views(net["dir"])
    req, hol = f"peer{REQUESTER}", f"peer{HOLDER}"
    assert v.node_of.get(req) and v.node_of.get(hol), "the recorder did not run"
    # the records are rich enough to catch a leak: the ORDBs did see the hash_name in payloads
    assert any(h.hex() in p for ps in v.payloads.values() for p in ps), "no process saw the hash_name at all"
    assert v.who_links(req, h) == [], "a process knows both who asks and what"
    assert v.who_links(hol, h) == [], "a process knows both who serves and what"
    # the requester never looks content up in the DHT (its ORDBs do); it may publish as an ORDB itself
    assert not [r for r in v.dht[req] if r["op"] == "find_providers" and r["hash_name"] == h.hex()], (
        "the requester asked the DHT itself"
    )
    assert v.bridge and not any(h.hex() in b for b in v.bridge), "the bridge saw the hash_name"


def test_no_ordb_is_directly_linked_to_the_end_it_serves(net: dict[str, Any], tmp_path: Path) -> None:
    """An ORDB that sees the hash_name on a circuit an end built must not have a direct link to that
    end at the time (it would hold the end's address and what it asks for or serves together)."""
    h = share_and_get(net, tmp_path, HOLDER, REQUESTER, "linked.bin")
    time.sleep(1.0)
    v = Views(net["dir"])
    req, hol = f"peer{REQUESTER}", f"peer{HOLDER}"
    # the records follow circuits back to the end that built them (else the check sees nothing)
    seen = [(p, c) for (p, c), ps in v.payloads.items() if any(h.hex() in x for x in ps)]
    origins = {v.origin_of(p, c) for p, c in seen}
    assert req in origins and hol in origins, f"no ORDB circuit traced back to an end: {origins}"
    assert v.leaks(req, h) == [], "an ORDB of the requester's circuits was linked to it"
    assert v.leaks(hol, h) == [], "an ORDB of the holder's circuits was linked to it"


def test_negative_control_one_hop_ordb_is_caught(net: dict[str, Any], tmp_path: Path) -> None:
    """A requester whose ORDB circuits are 1 hop: its ORDB sees it and the hash_name together."""
    h = share_and_get(net, tmp_path, HOLDER, UNSAFE, "unsafe.bin")
    time.sleep(1.0)
    v = Views(net["dir"])
    leaks = v.who_links(f"peer{UNSAFE}", h)
    me = f"peer{UNSAFE}"
    seen_by = sorted(
        {(p, v.prev_circ_id.get((p, c))) for (p, c), prev in v.prev.items() if prev == v.node_of[me]}
    )
    assert leaks, (
        f"the check missed the 1-hop ORDB leak: origins {sorted(v.origins[me])[:6]} seen {seen_by[:6]}"
    )
    assert v.linked_ordbs(me, h), "the direct-link check missed the 1-hop ORDB (linked to the requester)"
