"""The anonymity verdict's join (peer/testing/anonymity.py) on records made here, no processes.

An ORDB that sees the hash_name on a circuit an end built, while it has a direct link to that end,
is a leak (whatever the number of hops); a link that closed before, or one to the other end, is not.
The 1-hop ORDB negative control is flagged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peer.testing.anonymity import Views

H = bytes(range(32))  # the hash_name
REQ, GUARD, MIDDLE, ORDB, HOL = (f"{b:02x}" * 32 for b in (0xA1, 0xB2, 0xC3, 0xD4, 0xE5))  # NodeIDs (hex)


def write(d: Path, records: dict[str, list[dict[str, Any]]]) -> Views:
    for name, recs in records.items():
        with open(d / f"{name}.record", "w") as f:
            for r in recs:
                f.write(json.dumps({"pid": 1, **r}) + "\n")
    return Views(d)


def link(a: dict[str, Any], b: dict[str, Any], up: float, down: float | None = None) -> None:
    """A direct link between two processes' record lists, as both record it."""
    for me, other in ((a, b), (b, a)):
        chan = 100 + len(me["recs"])
        me["recs"].append({"kind": "neighbour", "t": up, "chan": chan, "node_id": other["id"]})
        if down is not None:
            me["recs"].append({"kind": "neighbour_closed", "t": down, "chan": chan})


def proc(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "recs": [{"kind": "self", "t": 0.0, "node_id": node_id}]}


def three_hops(origin: dict[str, Any], g: dict[str, Any], m: dict[str, Any], o: dict[str, Any]) -> None:
    """``origin`` builds origin -> g -> m -> o (circuit ids 11, 22, 33 on the three links) and sends
    the hash_name to ``o`` at t=10."""
    origin["recs"].append(
        {"kind": "circuit", "t": 1.0, "circ": 1, "prev": "self", "next": g["id"], "next_circ_id": 11}
    )
    g["recs"] += [
        {"kind": "circuit", "t": 1.0, "circ": 5, "prev": origin["id"], "next": None, "prev_circ_id": 11},
        {"kind": "extend", "t": 1.0, "circ": 5, "next": m["id"], "next_circ_id": 22},
    ]
    m["recs"] += [
        {"kind": "circuit", "t": 1.0, "circ": 7, "prev": g["id"], "next": None, "prev_circ_id": 22},
        {"kind": "extend", "t": 1.0, "circ": 7, "next": o["id"], "next_circ_id": 33},
    ]
    o["recs"] += [
        {"kind": "circuit", "t": 1.0, "circ": 9, "prev": m["id"], "next": None, "prev_circ_id": 33},
        {"kind": "payload", "t": 10.0, "circ": 9, "hop": 0, "cmd": 201, "stream": 1, "data": H.hex()},
    ]


def net() -> dict[str, dict[str, Any]]:
    return {
        "req": proc(REQ),
        "guard": proc(GUARD),
        "middle": proc(MIDDLE),
        "ordb": proc(ORDB),
        "hol": proc(HOL),
    }


def views(tmp: Path, n: dict[str, dict[str, Any]]) -> Views:
    return write(tmp, {name: p["recs"] for name, p in n.items()})


def test_an_ordb_directly_linked_to_the_requester_is_a_leak(tmp_path: Path) -> None:
    n = net()
    three_hops(n["req"], n["guard"], n["middle"], n["ordb"])
    link(n["req"], n["ordb"], up=5.0)  # still up when the ORDB sees the hash_name (t=10)
    v = views(tmp_path, n)
    assert v.origin_of("ordb", 9) == "req"
    assert v.who_links("req", H) == []  # the previous hop is the middle: the old check saw nothing
    assert v.linked_ordbs("req", H) == ["ordb (circuit 9, directly linked to req at t=10.0)"]
    assert v.leaks("req", H) == v.linked_ordbs("req", H)
    assert v.leaks("hol", H) == []


def test_a_link_only_one_side_recorded_counts(tmp_path: Path) -> None:
    for side, other in (("ordb", REQ), ("req", ORDB)):
        n = net()
        three_hops(n["req"], n["guard"], n["middle"], n["ordb"])
        n[side]["recs"].append({"kind": "neighbour", "t": 5.0, "chan": 3, "node_id": other})
        d = tmp_path / side
        d.mkdir()
        assert views(d, n).linked_ordbs("req", H), f"a link only {side} recorded was missed"


def test_a_link_closed_before_the_ordb_saw_the_hash_name_is_not(tmp_path: Path) -> None:
    n = net()
    three_hops(n["req"], n["guard"], n["middle"], n["ordb"])
    link(n["req"], n["ordb"], up=2.0, down=8.0)
    v = views(tmp_path, n)
    assert v.origin_of("ordb", 9) == "req"
    assert not v.linked_at("ordb", "req", 10.0) and v.linked_at("ordb", "req", 7.0)
    assert v.leaks("req", H) == []


def test_a_link_opened_after_the_ordb_saw_the_hash_name_is_not(tmp_path: Path) -> None:
    n = net()
    three_hops(n["req"], n["guard"], n["middle"], n["ordb"])
    link(n["req"], n["ordb"], up=12.0)
    assert views(tmp_path, n).leaks("req", H) == []


def test_an_ordb_linked_to_one_end_while_serving_the_other_names_only_the_one_it_serves(
    tmp_path: Path,
) -> None:
    n = net()
    three_hops(n["hol"], n["guard"], n["middle"], n["ordb"])  # the holder's announce circuit
    link(n["req"], n["ordb"], up=5.0)
    v = views(tmp_path, n)
    assert v.origin_of("ordb", 9) == "hol"
    assert v.leaks("req", H) == []  # it knows the requester's address, not that it asks
    assert v.leaks("hol", H) == []  # it serves the holder's circuit, but has no link to the holder
    link(n["hol"], n["ordb"], up=6.0)
    assert views(tmp_path, n).linked_ordbs("hol", H)


def test_the_one_hop_negative_control_is_flagged(tmp_path: Path) -> None:
    n = net()
    link(n["req"], n["ordb"], up=1.0)
    n["req"]["recs"].append(
        {"kind": "circuit", "t": 2.0, "circ": 1, "prev": "self", "next": ORDB, "next_circ_id": 44}
    )
    n["ordb"]["recs"] += [
        {"kind": "circuit", "t": 2.0, "circ": 4, "prev": REQ, "next": None, "prev_circ_id": 44},
        {"kind": "payload", "t": 3.0, "circ": 4, "hop": 0, "cmd": 201, "stream": 1, "data": "00" + H.hex()},
    ]
    v = views(tmp_path, n)
    assert v.who_links("req", H) == ["ordb (circuit 4)"]
    assert v.linked_ordbs("req", H) == ["ordb (circuit 4, directly linked to req at t=3.0)"]
    assert len(v.leaks("req", H)) == 2


def test_a_circuit_id_on_another_link_does_not_trace(tmp_path: Path) -> None:
    """The same circuit id on a different link is another circuit: the trace stops (no origin)."""
    n = net()
    three_hops(n["req"], n["guard"], n["middle"], n["ordb"])
    n["middle"]["recs"][-1]["next"] = HOL  # the middle extended circuit 33 to someone else
    link(n["req"], n["ordb"], up=5.0)
    v = views(tmp_path, n)
    assert v.origin_of("ordb", 9) is None
    assert v.leaks("req", H) == []
