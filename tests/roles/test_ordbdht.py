"""The ORDB's DHT side (peer.roles.ordbdht, DESIGN §6, §8): provider records through a real DHT on
127.0.0.1 UDP, and forwarding a query to another ORDB over an ORDB-to-ORDB link and a 1-hop
circuit (the real onion core and driver over in-memory links).

Two swarm peers are ORDBs with real DhtNodes keyed by their own identities: peer 0 ("us") and
peer 1 (the ORDB that serves the hash_name).  The link manager and the signalling are small
stand-ins: ``connect`` makes the swarm link that a WebRTC link would be.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dht.keys import provider_key
from dht.node import DhtNode
from dht.records import ProviderRecord
from peer.errors import PeerError
from peer.net.neighbours import LinkRefused
from peer.net.recorder import Recorder, load
from peer.net.routing import EventRoutes
from peer.proto import events as ev
from peer.roles.ordbdht import OrdbDht
from peer.testing.swarm import Swarm
from peer.wire.commands import RelayCommand

HN = bytes(range(32))
BRIDGE = "wss://bridge.example/ws"


class Links:
    """Stand-in for peer 0's LinkManager: ORDB-to-ORDB links are swarm links made on ``connect``."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.neighbours: dict[bytes, object] = {}
        self.ordb_links: dict[bytes, int] = {}
        self.connects: list[tuple[bytes, object, int]] = []
        self.dropped: list[bytes] = []
        self.mode = "link"  # "link" | "nothing" (no link came of it) | "refuse"
        self._index = {p.keys.node_id: p.index for p in swarm.peers}

    def chan_of(self, node_id: bytes, *, ordb: bool = False) -> int | None:
        return self.ordb_links.get(node_id) if ordb else None

    def neighbour_ids(self) -> list[bytes]:
        return list(self.neighbours)

    def linked_ids(self) -> set[bytes]:
        return set(self.neighbours) | set(self.ordb_links)

    def drop_ordb_link(self, node_id: bytes, why: str) -> None:
        self.dropped.append(node_id)
        self.ordb_links.pop(node_id, None)

    async def connect(self, record: Any, via: object, *, purpose: int = 0) -> None:
        self.connects.append((record.node_id, via, purpose))
        await asyncio.sleep(0)  # other queries for the same ORDB arrive meanwhile
        if self.mode == "refuse":
            raise LinkRefused("the other ORDB is full")
        if self.mode == "nothing":
            return
        j = self._index[record.node_id]
        await self.swarm.connect(0, j)
        self.ordb_links[record.node_id] = self.swarm.peers[0].chans[j]


class Signalling:
    """Stand-in: one way to reach the other ORDB, or none."""

    def __init__(self) -> None:
        self.via: list[object] = [object()]

    def signallers_for(self, rec: object) -> list[object]:
        return list(self.via)


@dataclass
class Scene:
    swarm: Swarm
    dhts: list[DhtNode]
    ours: OrdbDht
    theirs: OrdbDht
    links: Links
    signalling: Signalling
    routes: EventRoutes
    recorded: Path
    at_remote: list[ev.RelayMessageReceived]


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    swarm = await Swarm.start(3, mesh=False)
    dhts: list[DhtNode] = []
    for i in (0, 1):
        d = DhtNode()
        await d.start(
            swarm.peers[i].keys.identity,
            "127.0.0.1",
            bootstrap=[dhts[0].address] if dhts else (),
            rng=random.Random(i),
        )
        dhts.append(d)
    recorder = Recorder(tmp_path / "record.jsonl")
    links = Links(swarm)
    signalling = Signalling()
    routes = EventRoutes(lambda e: None)

    def ordb_dht(i: int, rec: Recorder | None) -> OrdbDht:
        p = swarm.peers[i]
        return OrdbDht(
            keys=p.keys,
            dht=dhts[i],
            node=p.node,
            driver=p.driver,
            links=links,  # type: ignore[arg-type]
            signalling=signalling,  # type: ignore[arg-type]
            bridges={BRIDGE: object()},  # type: ignore[dict-item]
            own_circuit=routes.own_circuit,
            recorder=rec,
        )

    at_remote: list[ev.RelayMessageReceived] = []
    swarm.peers[1].driver.on_event = lambda e: (
        at_remote.append(e) if isinstance(e, ev.RelayMessageReceived) else None
    )
    s = Scene(
        swarm,
        dhts,
        ordb_dht(0, recorder),
        ordb_dht(1, None),
        links,
        signalling,
        routes,
        tmp_path / "record.jsonl",
        at_remote,
    )
    yield s
    recorder.close()
    for d in dhts:
        d.stop()
    await swarm.close()


async def their_record(s: Scene) -> ProviderRecord:
    """The other ORDB publishes; we find its provider record in the DHT, as the ORDB role does."""
    assert await s.theirs.publish_provider(HN) >= 1
    (prov,) = await s.ours.find_providers(HN)
    assert isinstance(prov, ProviderRecord)
    return prov


async def until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


# ---- the DHT side --------------------------------------------------------------------------------


async def test_our_provider_record_carries_our_keys_and_routes(scene: Scene) -> None:
    keys = scene.swarm.peers[0].keys
    assert await scene.ours.publish_provider(HN) == 2  # ourselves and the other DHT node
    (rec,) = await scene.dhts[1].find_providers(HN)
    host, port = scene.dhts[0].address
    assert rec.node_id == keys.node_id and rec.key == provider_key(HN)
    assert (rec.ntor_key, rec.seal_key) == (keys.ntor.public, keys.seal.public)
    assert rec.route.endpoints == (("udp", f"{host}:{port}"), ("webrtc", host))
    assert rec.route.bridges == (BRIDGE,)
    assert [(r["kind"], r["op"], r["key"], r["hash_name"]) for r in load(scene.recorded)] == [
        ("dht", "publish_provider", provider_key(HN).hex(), HN.hex())
    ]


class FailingDht:
    address = ("127.0.0.1", 9)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def publish_provider(self, hash_name: bytes, fields: object) -> int:
        raise self.exc


@pytest.mark.parametrize("exc", [OSError("network unreachable"), PeerError("no DHT node answered")], ids=repr)
async def test_a_failed_publication_counts_zero_and_does_not_raise(scene: Scene, exc: Exception) -> None:
    scene.ours.dht = FailingDht(exc)  # type: ignore[assignment]
    assert await scene.ours.publish_provider(HN) == 0


async def test_finding_providers_leaves_us_out(scene: Scene) -> None:
    assert await scene.ours.publish_provider(HN) >= 1
    assert await scene.theirs.publish_provider(HN) >= 1
    assert {r.node_id for r in await scene.dhts[0].find_providers(HN)} == {
        scene.swarm.peers[0].keys.node_id,
        scene.swarm.peers[1].keys.node_id,
    }
    found = await scene.ours.find_providers(HN)
    assert [r.node_id for r in found] == [scene.swarm.peers[1].keys.node_id]  # type: ignore[attr-defined]
    assert [r["op"] for r in load(scene.recorded)] == ["publish_provider", "find_providers"]


# ---- forwarding to another ORDB ------------------------------------------------------------------


def queries(s: Scene) -> list[tuple[int, bytes]]:
    return [(e.stream_id, e.data) for e in s.at_remote if e.command == RelayCommand.DB_QUERY]


async def test_queries_to_one_ordb_share_one_link_and_one_circuit(scene: Scene) -> None:
    prov = await their_record(scene)
    owner: list[ev.Event] = []
    scene.ours.owner = owner.append
    bodies = [b"query-%d" % i for i in range(3)]
    got = await asyncio.gather(*(scene.ours.forward_query(prov, b) for b in bodies))
    assert all(g is not None for g in got)
    circs = {g[0] for g in got if g is not None}
    sids = [g[1] for g in got if g is not None]
    # one ORDB-to-ORDB link (purpose 1), set up once although three queries came at once
    assert [(n, p) for n, _via, p in scene.links.connects] == [(prov.node_id, 1)]
    (circ,) = circs
    assert len(set(sids)) == 3
    assert scene.routes.owner_of(circ) == owner.append
    # a 1-hop circuit: the other ORDB ends it, nobody else carries it
    assert len(scene.swarm.peers[1].node.circuits) == 1 and not scene.swarm.peers[2].node.circuits
    await until(lambda: len(queries(scene)) == 3)
    assert sorted(body for _sid, body in queries(scene)) == bodies


async def test_a_closed_circuit_is_rebuilt_on_the_same_link(scene: Scene) -> None:
    prov = await their_record(scene)
    first = await scene.ours.forward_query(prov, b"one")
    assert first is not None
    scene.swarm.peers[0].driver.destroy_circuit(first[0])
    second = await scene.ours.forward_query(prov, b"two")
    assert second is not None and second[0] != first[0]
    assert len(scene.links.connects) == 1  # the link stayed up: no new link
    await until(lambda: [b for _s, b in queries(scene)] == [b"one", b"two"])


async def test_an_existing_ordb_link_is_used_without_signalling(scene: Scene) -> None:
    prov = await their_record(scene)
    await scene.swarm.connect(0, 1)
    scene.links.ordb_links[prov.node_id] = scene.swarm.peers[0].chans[1]
    scene.signalling.via = []
    got = await scene.ours.forward_query(prov, b"direct")
    assert got is not None and scene.links.connects == []
    assert scene.routes.owner_of(got[0]) is None  # no owner set: the circuit is nobody's in particular
    await until(lambda: queries(scene) == [(got[1], b"direct")])


async def test_no_way_to_reach_the_ordb_means_no_forward(scene: Scene) -> None:
    prov = await their_record(scene)
    scene.signalling.via = []
    assert await scene.ours.forward_query(prov, b"lost") is None
    assert scene.links.connects == [] and not scene.swarm.peers[0].node.circuits


async def test_a_link_that_did_not_come_up_means_no_forward(scene: Scene) -> None:
    prov = await their_record(scene)
    scene.links.mode = "nothing"
    assert await scene.ours.forward_query(prov, b"lost") is None
    assert len(scene.links.connects) == 1 and not scene.swarm.peers[0].node.circuits


async def test_a_refused_link_fails_that_query_only(scene: Scene) -> None:
    prov = await their_record(scene)
    scene.links.mode = "refuse"
    with pytest.raises(LinkRefused):
        await scene.ours.forward_query(prov, b"refused")
    scene.links.mode = "link"
    got = await scene.ours.forward_query(prov, b"later")  # the per-ORDB lock was released
    assert got is not None and len(scene.links.connects) == 2
    await until(lambda: [b for _s, b in queries(scene)] == [b"later"])


async def test_an_ordb_link_closes_once_idle_and_not_while_a_query_waits(scene: Scene) -> None:
    """A link we opened stays while a forwarded query's stream is open, and closes
    ORDB_LINK_IDLE s after the last forward once none is (it then stops counting as a direct
    link); the next query opens a new one."""
    from peer.roles.ordbdht import ORDB_LINK_IDLE
    from peer.wire.ordb import DbEnd, DbEndReason

    prov = await their_record(scene)
    now = [100.0]
    scene.ours.clock = lambda: now[0]
    got = await scene.ours.forward_query(prov, b"one")
    assert got is not None
    circ, sid = got
    assert scene.ours.close_idle(now[0] + 10 * ORDB_LINK_IDLE) == 0  # the query still waits
    scene.swarm.peers[0].node.db_end(circ, sid, DbEnd(DbEndReason.FINISHED).encode())
    now[0] += 1
    second = await scene.ours.forward_query(prov, b"two")  # a later query on the same link
    assert second is not None
    scene.swarm.peers[0].node.db_end(circ, second[1], DbEnd(DbEndReason.FINISHED).encode())
    assert scene.ours.close_idle(now[0] + ORDB_LINK_IDLE - 0.5) == 0  # not idle long enough
    assert scene.ours.close_idle(now[0] + ORDB_LINK_IDLE) == 1
    assert scene.links.dropped == [prov.node_id] and prov.node_id not in scene.links.linked_ids()
    assert circ not in scene.swarm.peers[0].node.circuits
    assert scene.ours.close_idle(now[0] + 100 * ORDB_LINK_IDLE) == 0  # nothing left to close
    third = await scene.ours.forward_query(prov, b"three")
    assert third is not None and len(scene.links.connects) == 2
