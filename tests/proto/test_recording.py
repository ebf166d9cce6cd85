"""The anonymity recorder as events (DESIGN §11): the core emits ``Observed`` only when
``NodeConfig.record`` is on, with the fields the recorder file has always had; the driver
writes them (and the neighbours it sees) to its ``Recorder``."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from peer.net.driver import NodeDriver
from peer.net.handshake import PeerKeys, peer_handshake
from peer.net.recorder import Recorder, load
from peer.proto import events as ev
from peer.proto.circuit import HopSpec, OriginCircuit, RelayCircuit
from peer.proto.node import NodeConfig, OnionNode
from peer.transport.memory import memory_link_pair
from peer.wire.commands import RelayCommand
from tests.proto.harness import Net

NEEDLE = b"the hash_name"


def json_of(value: object) -> Any:
    return json.loads(json.dumps(value))


def recording(net: Net) -> list[list[dict[str, object]]]:
    out: list[list[dict[str, object]]] = [[] for _ in net.nodes]
    for t, got in zip(net.nodes, out, strict=True):
        t.recorder = got.append
    return out


def test_nothing_is_observed_unless_recording_is_on() -> None:
    net = Net(4)
    got = recording(net)
    net.mesh()
    circ = net.build(0, [1, 2, 3])
    net.nodes[0].node.open_db_stream(circ, RelayCommand.DB_QUERY, NEEDLE)
    net.pump()
    assert net.nodes[3].take(ev.RelayMessageReceived)  # the message did go through
    assert got == [[], [], [], []]


def test_each_hop_records_its_neighbours_on_the_circuit_and_what_it_recognised() -> None:
    net = Net(4, record=True)
    got = recording(net)
    net.mesh()
    ids = [t.keys.node_id for t in net.nodes]
    circ = net.build(0, [1, 2, 3])
    sid = net.nodes[0].node.open_db_stream(circ, RelayCommand.DB_QUERY, NEEDLE)
    net.pump()
    oc = net.nodes[0].node.circuits[circ]
    assert isinstance(oc, OriginCircuit)
    relays = [
        next(c for c in net.nodes[k].node.circuits.values() if isinstance(c, RelayCircuit)) for k in (1, 2, 3)
    ]
    r1, r2, r3 = relays
    assert got[0][0] == {
        "kind": "circuit",
        "circ": circ,
        "prev": "self",
        "next": ids[1],
        "next_circ_id": oc.circ_id,
    }
    # the OP recognised the two EXTENDED2 (from hops 0 and 1)
    assert [(r["kind"], r["hop"], r["cmd"]) for r in got[0][1:]] == [
        ("payload", 0, RelayCommand.EXTENDED2),
        ("payload", 1, RelayCommand.EXTENDED2),
    ]
    assert got[1] == [
        {"kind": "circuit", "circ": r1.handle, "prev": ids[0], "next": None, "prev_circ_id": oc.circ_id},
        {"kind": "extend", "circ": r1.handle, "next": ids[2], "next_circ_id": r1.next_id},
    ]
    assert got[2][0] == {
        "kind": "circuit",
        "circ": r2.handle,
        "prev": ids[1],
        "next": None,
        "prev_circ_id": r1.next_id,
    }
    assert got[3] == [
        {"kind": "circuit", "circ": r3.handle, "prev": ids[2], "next": None, "prev_circ_id": r2.next_id},
        {
            "kind": "payload",
            "circ": r3.handle,
            "hop": -1,
            "cmd": RelayCommand.DB_QUERY,
            "stream": sid,
            "data": NEEDLE,
        },
    ]
    # the recorder file keeps the key order it always had
    assert list(got[0][0]) == ["kind", "circ", "prev", "next", "next_circ_id"]
    assert list(got[3][1]) == ["kind", "circ", "hop", "cmd", "stream", "data"]
    # nothing was recorded twice or left over as an ordinary event
    assert not any(isinstance(e, ev.Observed) for t in net.nodes for e in t.events)


def test_observed_is_a_frozen_record() -> None:
    o = ev.Observed.of("extend", circ=3, next=b"\x01", next_circ_id=7)
    assert o.record() == {"kind": "extend", "circ": 3, "next": b"\x01", "next_circ_id": 7}
    assert o == ev.Observed("extend", (("circ", 3), ("next", b"\x01"), ("next_circ_id", 7)))
    assert hash(o) == hash(ev.Observed.of("extend", circ=3, next=b"\x01", next_circ_id=7))


async def test_the_driver_writes_the_records_to_its_recorder(tmp_path: Path) -> None:
    rng = random.Random(3)
    files = [tmp_path / "a.record", tmp_path / "b.record"]
    keys = [PeerKeys.generate(rng.randbytes) for _ in files]
    recorders = [Recorder(f) for f in files]
    drivers = []
    for k, rec in zip(keys, recorders, strict=True):
        node = OnionNode(
            node_id=k.node_id,
            ntor_keys={k.ntor.public: k.ntor},
            randbytes=rng.randbytes,
            config=NodeConfig(record=True),
        )
        drivers.append(NodeDriver(node, recorder=rec))
    da, db = drivers
    seen: list[ev.Event] = []
    db.on_event = seen.append
    la, lb = memory_link_pair()
    ca = da.add_link(la, peer_handshake(keys[0], la, time.time))
    cb = db.add_link(lb, peer_handshake(keys[1], lb, time.time))
    await asyncio.gather(da.wait_open(ca), db.wait_open(cb))
    circ = await da.build_circuit(ca, [HopSpec(keys[1].node_id, keys[1].ntor.public, keys[1].link_specs())])
    sid = da.node.open_db_stream(circ, RelayCommand.DB_QUERY, NEEDLE)
    da.flush()
    for _ in range(1000):
        if any(isinstance(e, ev.RelayMessageReceived) for e in seen):
            break
        await asyncio.sleep(0.001)
    oc = da.node.circuits[circ]
    assert isinstance(oc, OriginCircuit)
    bc = next(iter(db.node.circuits))
    for d in drivers:
        await d.close()
    for rec in recorders:
        rec.close()
    a, b = (load(f) for f in files)

    def strip(r: dict[str, Any]) -> dict[str, Any]:
        assert list(r)[:3] == ["t", "pid", "kind"]
        return {k: v for k, v in r.items() if k not in ("t", "pid")}

    a_id, b_id = keys[0].node_id.hex(), keys[1].node_id.hex()
    assert [strip(r) for r in a] == [
        {"kind": "neighbour", "chan": ca, "node_id": b_id, "addr": json_of(la.remote_address)},
        {"kind": "circuit", "circ": circ, "prev": "self", "next": b_id, "next_circ_id": oc.circ_id},
    ]
    assert [strip(r) for r in b] == [
        {"kind": "neighbour", "chan": cb, "node_id": a_id, "addr": json_of(lb.remote_address)},
        {"kind": "circuit", "circ": bc, "prev": a_id, "next": None, "prev_circ_id": oc.circ_id},
        {
            "kind": "payload",
            "circ": bc,
            "hop": -1,
            "cmd": RelayCommand.DB_QUERY,
            "stream": sid,
            "data": NEEDLE.hex(),
        },
    ]
    assert not any(isinstance(e, ev.Observed) for e in seen)  # records go to the recorder only
