"""The records the anonymity verdict needs, made by the runtime itself (no processes): the onion
core's records of a real 3-hop circuit (sans-I/O harness) follow it back to the process that built
it, and the link manager records when a link ends.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

from peer.net.neighbours import LinkManager
from peer.testing.anonymity import Views
from peer.wire.commands import RelayCommand
from tests.proto.harness import Net

H = bytes(range(32))  # the hash_name


def write(d: Path, records: dict[str, list[dict[str, Any]]]) -> Views:
    for name, recs in records.items():
        with open(d / f"{name}.record", "w") as f:
            for r in recs:
                f.write(json.dumps({"pid": 1, **r}) + "\n")
    return Views(d)


def test_the_onion_cores_records_follow_a_real_circuit_back(tmp_path: Path) -> None:
    """A 3-hop circuit built by the sans-I/O core: its records (origin, relays' circuits and extends,
    the ORDB's payload) name the requester as the circuit's origin."""
    t = {"now": 1.0}
    recs: dict[str, list[dict[str, Any]]] = {}
    names = ["req", "guard", "middle", "ordb", "other"]
    net = Net(5, seed=7, record=True)
    for name, tn in zip(names, net.nodes, strict=True):
        out = recs[name] = [{"kind": "self", "t": 0.0, "node_id": tn.keys.node_id.hex()}]
        tn.recorder = lambda r, out=out: out.append(
            json.loads(json.dumps({"t": t["now"], **r}, default=_hex))
        )
    for i, j in ((0, 1), (1, 2), (2, 3), (4, 1), (1, 3)):
        net.connect(i, j)
    decoy = net.build(4, [1, 2, 3])  # another process's circuit over the same middle and ORDB
    circ = net.build(0, [1, 2, 3])
    net.nodes[4].node.open_db_stream(decoy, RelayCommand.DB_QUERY, b"decoy")
    t["now"] = 10.0
    net.nodes[0].node.open_db_stream(circ, RelayCommand.DB_QUERY, H)
    net.pump()
    seen_at = [r["circ"] for r in recs["ordb"] if r["kind"] == "payload" and H.hex() in r["data"]]
    assert len(seen_at) == 1
    v = write(tmp_path, recs)
    assert v.origin_of("ordb", seen_at[0]) == "req"
    other = [r["circ"] for r in recs["ordb"] if r["kind"] == "payload" and r["circ"] != seen_at[0]]
    assert other and {v.origin_of("ordb", c) for c in other} == {"other"}
    # with a direct link between the requester and the ORDB at t=10 the verdict fails
    recs["ordb"].append({"kind": "neighbour", "t": 5.0, "chan": 99, "node_id": recs["req"][0]["node_id"]})
    assert write(tmp_path, recs).linked_ordbs("req", H)


def _hex(value: object) -> str:
    return bytes(value).hex() if isinstance(value, bytes | bytearray) else str(value)


def test_link_manager_records_the_end_of_a_link() -> None:
    """The link boundary records when a link ends (test-only recorder), so the join knows link
    lifetimes; without a recorder it records nothing."""
    got: list[dict[str, object]] = []
    driver = types.SimpleNamespace(recorder=got.append)
    lm = LinkManager(keys=None, driver=driver, webrtc=None)  # type: ignore[arg-type]
    lm.channel_closed(7)
    assert got == [{"kind": "neighbour_closed", "chan": 7}]
    driver.recorder = None
    lm.channel_closed(8)
    assert len(got) == 1
