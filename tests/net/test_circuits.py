"""Our circuits (peer.net.circuits, DESIGN §5) on the real onion core and driver over in-memory links.

Peer 0 of an in-process swarm is "us": a real CircuitManager over its node and driver, a real
PeerView holding signed records of the other swarm peers (their real keys; the neighbour lists
in the records decide which paths exist), real EventRoutes, and a small stand-in for the link
manager that lists which swarm links are our neighbours.  Each test checks where the circuit
really went (which relays carry it), what a stream reaches, and what a failure says.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from dht.records import PeerRecord, Route
from peer.crypto.identity import Identity
from peer.errors import PathError, TransportError
from peer.net import circuits as circuits_mod
from peer.net.circuits import CircuitManager, CircuitRules
from peer.net.peerview import PeerView
from peer.net.routing import EventRoutes
from peer.net.socks import StreamOpenError
from peer.proto import events as ev
from peer.proto.exitpolicy import ExitPolicy
from peer.testing.swarm import Swarm
from peer.wire.commands import EndReason

N = 7


class FastSleep:
    """``asyncio`` as the circuits module sees it, with its pauses between retries cut to nothing."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.pauses.append(delay)
        await asyncio.sleep(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> FastSleep:
    proxy = FastSleep()
    monkeypatch.setattr(circuits_mod, "asyncio", proxy)
    return proxy


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(N, exit_policy=ExitPolicy.parse("accept 127.0.0.1:*"))
    yield s
    await s.close()


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1 (the destination of our streams); yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nid(swarm: Swarm, i: int) -> bytes:
    return swarm.peers[i].keys.node_id


def record(
    swarm: Swarm, i: int, neighbours: Iterable[int], *, stable: bool = True, exit: bool = False
) -> PeerRecord:
    """Peer i's signed record: its real keys, a host of its own /16, the neighbours it lists."""
    k = swarm.peers[i].keys
    return PeerRecord(
        k.identity.public,
        k.ntor.public,
        k.seal.public,
        Route((("tls", f"127.{i}.0.1:443"),)),
        tuple(nid(swarm, n) for n in neighbours),
        stable,
        int(time.time()) + 600,
        exit=exit,
    ).sign(k.identity)


class Links:
    """Stand-in for the LinkManager of peer 0: which swarm links are neighbours, ORDB links."""

    def __init__(self, swarm: Swarm, neighbours: Iterable[int], ordb_links: Iterable[int] = ()) -> None:
        self.swarm = swarm
        self.neighbours: dict[bytes, object] = {nid(swarm, i): object() for i in neighbours}
        self.ordb_links: dict[bytes, object] = {nid(swarm, i): object() for i in ordb_links}
        self.gone: set[bytes] = set()  # listed, but chan_of finds no channel (a link going away)
        self._index = {nid(swarm, i): i for i in range(len(swarm.peers))}

    def chan_of(self, node_id: bytes, *, ordb: bool = False) -> int | None:
        if node_id in self.gone:
            return None
        if node_id in self.neighbours or (ordb and node_id in self.ordb_links):
            return self.swarm.peers[0].chans.get(self._index[node_id])
        return None

    def neighbour_ids(self) -> list[bytes]:
        return list(self.neighbours)

    def linked_ids(self) -> set[bytes]:
        return set(self.neighbours) | set(self.ordb_links)


class Us:
    """Peer 0 as the runtime wires it: its events go to EventRoutes, then to the manager."""

    def __init__(
        self,
        swarm: Swarm,
        *,
        guards: list[int],
        neighbours: Iterable[int],
        records: Iterable[PeerRecord],
        ordb_links: Iterable[int] = (),
        rules: CircuitRules | None = None,
        seed: int = 1,
    ) -> None:
        self.swarm = swarm
        self.peer = swarm.peers[0]
        self.view = PeerView(self.peer.keys.node_id)
        self.view.add_all(records, time.time())
        self.links = Links(swarm, neighbours, ordb_links)
        self.guards = [nid(swarm, g) for g in guards]
        self.refreshes = 0
        self.on_refresh: Callable[[int], None] | None = None
        self.unowned: list[ev.Event] = []
        self.routes = EventRoutes(self.unowned.append)
        self.cm = CircuitManager(
            node=self.peer.node,
            driver=self.peer.driver,
            view=self.view,
            links=self.links,  # type: ignore[arg-type]
            guards=lambda: self.guards,
            refresh_view=self.refresh,
            routes=self.routes,
            rules=rules or CircuitRules(),
            rng=random.Random(seed),
        )
        self.peer.driver.on_event = self.on_event

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.on_refresh is not None:
            self.on_refresh(self.refreshes)

    def add(self, *records: PeerRecord) -> None:
        self.view.add_all(records, time.time())

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, (ev.RelayMessageReceived, ev.StreamWritable, ev.CircuitClosed)):
            self.routes.route(e)
            if isinstance(e, ev.CircuitClosed):
                self.cm.circuit_closed(e.circ)

    def path(self, circ: int) -> list[int]:
        index = {p.keys.node_id: p.index for p in self.swarm.peers}
        return [index[n] for n in self.cm.paths[circ]]


def carriers(swarm: Swarm) -> dict[int, int]:
    """How many circuits each other peer relays or ends (where our circuits really went)."""
    return {p.index: len(p.node.circuits) for p in swarm.peers[1:] if p.node.circuits}


def chain(swarm: Swarm) -> list[PeerRecord]:
    """Records that allow one exit path only: guard 1 -> 2 -> 3 (exit)."""
    return [record(swarm, 1, [0, 2]), record(swarm, 2, [1, 3]), record(swarm, 3, [2], exit=True)]


def no_exit(swarm: Swarm) -> list[PeerRecord]:
    """The same chain, but 3 does not allow exits (yet)."""
    return [*chain(swarm)[:2], record(swarm, 3, [2])]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def echoed(stream: Any, data: bytes) -> bytes:
    await stream.write(data)
    return bytes(await stream.readexactly(len(data)))


# ---- circuits to exits ---------------------------------------------------------------------------


async def test_a_circuit_follows_the_records_from_a_linked_guard_to_an_exit(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    circ, path = await us.cm.build_circuit()
    assert [r.node_id for r in path] == us.cm.paths[circ]
    assert us.path(circ) == [1, 2, 3]
    assert carriers(swarm) == {1: 1, 2: 1, 3: 1}  # built over those relays, and no others
    assert us.refreshes == 0


async def test_the_first_hop_is_always_a_guard_we_are_linked_to(swarm: Swarm) -> None:
    # 4 is a guard too, and could start a path (4 -> 2 -> 3), but we hold no link to it
    records = [*chain(swarm), record(swarm, 4, [2])]
    records[1] = record(swarm, 2, [1, 3, 4])
    us = Us(swarm, guards=[4, 1], neighbours=[1, 5], records=records)
    assert us.cm.linked_guards() == [nid(swarm, 1)]
    starts = set()
    for _ in range(6):
        circ, _path = await us.cm.build_circuit()
        starts.add(us.path(circ)[0])
    assert starts == {1}
    assert 4 not in carriers(swarm)


async def test_the_view_is_refreshed_once_before_giving_up(swarm: Swarm) -> None:
    exit_rec = record(swarm, 3, [2], exit=True)
    us = Us(swarm, guards=[1], neighbours=[1], records=no_exit(swarm))
    us.on_refresh = lambda n: us.add(exit_rec)  # 3 now allows exits
    circ, _path = await us.cm.build_circuit()
    assert us.refreshes == 1 and us.path(circ) == [1, 2, 3]


async def test_no_path_after_a_refresh_is_a_path_error_naming_the_rule(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=no_exit(swarm))
    with pytest.raises(PathError, match="no exit peer at the end"):
        await us.cm.build_circuit()
    assert us.refreshes == 1  # once, not in a loop
    assert carriers(swarm) == {} and us.cm.paths == {}


async def test_a_guard_whose_link_is_going_away_builds_nothing(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    us.links.gone.add(nid(swarm, 1))
    with pytest.raises(PathError, match="the guard's link went away"):
        await us.cm.build_circuit()
    assert carriers(swarm) == {} and us.cm.paths == {}


async def test_hops_want_exit_and_avoid_shape_the_path(swarm: Swarm) -> None:
    records = [
        record(swarm, 1, [2, 4]),
        record(swarm, 2, [1, 3]),
        record(swarm, 3, [2], exit=True),
        record(swarm, 4, [1, 3], exit=True),
    ]
    us = Us(swarm, guards=[1], neighbours=[1], records=records)
    circ, _ = await us.cm.build_circuit(hops=2)
    assert us.path(circ) == [1, 4]  # 2 hops ending at an exit: 2 is none
    circ, _ = await us.cm.build_circuit(hops=2, want_exit=False, avoid=(nid(swarm, 4),))
    assert us.path(circ) == [1, 2]
    with pytest.raises(PathError):
        await us.cm.build_circuit(hops=2, avoid=(nid(swarm, 4),))


# ---- streams -------------------------------------------------------------------------------------


async def test_streams_reuse_the_live_circuit(swarm: Swarm, echo: int) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    a = await us.cm.open_stream("127.0.0.1", echo)
    b = await us.cm.open_stream("127.0.0.1", echo)
    assert a.circ == b.circ and list(us.cm.paths) == [a.circ]
    assert await echoed(a, b"through the exit") == b"through the exit"
    assert await echoed(b, b"same circuit") == b"same circuit"
    assert us.cm.status()["circuits"] == 1


async def test_a_closed_circuit_is_replaced_for_the_next_stream(swarm: Swarm, echo: int) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    a = await us.cm.open_stream("127.0.0.1", echo)
    us.peer.driver.destroy_circuit(a.circ)
    await until(lambda: a.circ not in us.cm.paths)
    b = await us.cm.open_stream("127.0.0.1", echo)
    assert b.circ != a.circ and list(us.cm.paths) == [b.circ]
    assert await echoed(b, b"new circuit") == b"new circuit"


async def test_a_circuit_lost_while_opening_a_stream_is_replaced(swarm: Swarm, echo: int) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    first, _ = await us.cm.build_circuit()
    (at_exit,) = swarm.peers[3].node.circuits
    swarm.peers[3].driver.destroy_circuit(at_exit)  # the DESTROY is on its way to us
    s = await us.cm.open_stream("127.0.0.1", echo)
    assert s.circ != first and us.path(s.circ) == [1, 2, 3]
    assert await echoed(s, b"retried") == b"retried"


async def test_the_exits_answer_is_final(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    with pytest.raises(StreamOpenError) as info:
        await us.cm.open_stream("127.0.0.1", closed_port())
    assert info.value.end_reason == EndReason.CONNECTREFUSED
    assert len(us.cm.paths) == 1  # one circuit: another exit would not change the answer


async def test_the_exit_policy_refusal_reaches_the_socks_client(swarm: Swarm) -> None:
    for p in swarm.peers:
        p.node.config = p.node.config.__class__(exit_policy=ExitPolicy.reject_all())
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    with pytest.raises(StreamOpenError) as info:
        await us.cm.open_socks_stream("127.0.0.1", 80)
    assert info.value.end_reason == EndReason.EXITPOLICY  # kept, not replaced by a generic error
    assert len(us.cm.paths) == 1


async def test_no_circuit_is_retried_with_a_refresh_each_time(
    swarm: Swarm, echo: int, fast: FastSleep
) -> None:
    exit_rec = record(swarm, 3, [2], exit=True)
    us = Us(swarm, guards=[1], neighbours=[1], records=no_exit(swarm))
    us.on_refresh = lambda n: us.add(exit_rec) if n == 3 else None
    s = await us.cm.open_stream("127.0.0.1", echo)
    # attempt 1: build refreshes once (1), fails, refresh after a pause (2); attempt 2: build
    # refreshes (3), which brings the exit's record
    assert us.refreshes == 3 and fast.pauses == [1.0]
    assert await echoed(s, b"late") == b"late"


async def test_no_circuit_at_all_gives_up_with_the_reason(swarm: Swarm, fast: FastSleep) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=no_exit(swarm))
    with pytest.raises(StreamOpenError, match="could not open a stream: no path") as info:
        await us.cm.open_socks_stream("127.0.0.1", 80)
    assert info.value.end_reason is None
    assert len(fast.pauses) == 6 and carriers(swarm) == {}


async def test_socks_gets_a_stream_error_for_any_peer_error(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=no_exit(swarm))

    def bridge_down(n: int) -> None:
        raise TransportError("bridge unreachable")

    us.on_refresh = bridge_down  # refreshing the view fails with a PeerError that is no stream error
    with pytest.raises(StreamOpenError, match="bridge unreachable") as info:
        await us.cm.open_socks_stream("127.0.0.1", 80)
    assert info.value.end_reason is None


# ---- circuits to ORDBs ---------------------------------------------------------------------------


def ordb_scene(swarm: Swarm) -> list[PeerRecord]:
    """1 is our guard and neighbour, 2 a neighbour too; 4 and 5 are ORDBs the records reach in
    two hops (1 -> 3 -> 4 | 5); 6 is reached in three (1 -> 3 -> 5 -> 6)."""
    return [
        record(swarm, 1, [0, 3]),
        record(swarm, 2, [0, 3]),
        record(swarm, 3, [1, 2, 4, 5]),
        record(swarm, 4, [3]),
        record(swarm, 5, [3, 6]),
        record(swarm, 6, [5]),
    ]


def ids(swarm: Swarm, recs: Iterable[PeerRecord]) -> set[int]:
    index = {p.keys.node_id: p.index for p in swarm.peers}
    return {index[r.node_id] for r in recs}


async def test_eligible_ordbs_are_never_us_our_guards_or_peers_we_link_to(swarm: Swarm) -> None:
    records = [*ordb_scene(swarm), record(swarm, 0, [1])]  # our own record: the view refuses it
    us = Us(swarm, guards=[1, 6], neighbours=[1, 2], ordb_links=[5], records=records)
    assert ids(swarm, us.cm.eligible_ordbs()) == {3, 4}
    assert ids(swarm, us.cm.eligible_ordbs({nid(swarm, 4)})) == {3}


async def test_an_ordb_circuit_has_two_hops_before_the_ordb(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm))
    owner: list[ev.Event] = []
    circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, 3), nid(swarm, 5), nid(swarm, 6)}, owner.append)
    assert ordb == nid(swarm, 4) and us.path(circ) == [1, 3, 4]
    assert carriers(swarm) == {1: 1, 3: 1, 4: 1}
    assert us.routes.owner_of(circ) == owner.append
    us.peer.driver.destroy_circuit(circ)
    await until(lambda: bool(owner))
    assert [type(e) for e in owner] == [ev.CircuitClosed] and us.unowned == []


async def test_an_ordb_reached_only_in_three_hops_gets_three(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm))
    circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, n) for n in (3, 4, 5)})
    assert ordb == nid(swarm, 6) and us.path(circ) == [1, 3, 5, 6]


async def test_excluded_ordbs_are_never_chosen(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm))
    chosen = set()
    for _ in range(8):
        _circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, 3), nid(swarm, 4)})
        chosen.add(ordb)
    assert chosen <= {nid(swarm, 5), nid(swarm, 6)} and nid(swarm, 4) not in chosen


def strangers(n: int) -> list[PeerRecord]:
    """Records of peers nobody lists as a neighbour: eligible ORDBs that no path reaches."""
    out = []
    for i in range(n):
        ident = Identity.generate(random.Random(100 + i).randbytes)
        route = Route((("tls", f"127.{100 + i}.0.1:443"),))
        rec = PeerRecord(
            ident.public, bytes(32), bytes(31) + b"\x01", route, (), True, int(time.time()) + 600
        )
        out.append(rec.sign(ident))
    return out


async def test_ordbs_no_path_reaches_are_passed_over(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=[*ordb_scene(swarm), *strangers(5)])
    assert len(us.cm.eligible_ordbs({nid(swarm, n) for n in (3, 4, 5)})) == 6
    for _ in range(4):
        circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, n) for n in (3, 4, 5)})
        assert ordb == nid(swarm, 6) and us.path(circ) == [1, 3, 5, 6]
    assert us.refreshes == 0  # the one reachable ORDB was found at the first attempt every time


async def test_an_ordb_behind_a_guard_whose_link_is_going_away_is_passed_over(swarm: Swarm) -> None:
    # 4 is reached only through guard 2 (2 -> 6 -> 4), 5 only through guard 1 (1 -> 3 -> 5)
    records = [
        record(swarm, 1, [0, 3]),
        record(swarm, 2, [0, 6]),
        record(swarm, 3, [1, 5]),
        record(swarm, 6, [2, 4]),
        record(swarm, 4, [6]),
        record(swarm, 5, [3]),
    ]
    us = Us(swarm, guards=[1, 2], neighbours=[1, 2], records=records)
    us.links.gone.add(nid(swarm, 2))  # still listed, but its link is closing: no channel
    for _ in range(6):
        circ, ordb = await us.cm.build_ordb_circuit(set())
        assert ordb == nid(swarm, 5) and us.path(circ) == [1, 3, 5]
    assert us.refreshes == 0  # 4 was passed over for 5 in the same attempt, every time
    assert 2 not in carriers(swarm)


async def test_no_path_to_any_eligible_ordb_names_the_rule(swarm: Swarm, fast: FastSleep) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm))
    with pytest.raises(PathError, match="no path to the ORDB"):
        await us.cm.build_ordb_circuit({nid(swarm, n) for n in (4, 5, 6)})  # 3 is left: unreachable
    assert us.refreshes == 3 and carriers(swarm) == {}


async def test_an_ordb_circuit_closed_while_being_built_is_told_to_its_owner(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm))
    real = us.peer.driver

    class LosesItAtOnce:
        """The driver as the manager sees it, when the circuit closes right after it was built."""

        async def build_circuit(self, chan: int, path: list[Any], timeout: float = 30.0) -> int:
            circ = await real.build_circuit(chan, path, timeout)
            real.destroy_circuit(circ)
            return circ

    us.cm.driver = LosesItAtOnce()  # type: ignore[assignment]
    owner: list[ev.Event] = []
    circ, _ordb = await us.cm.build_ordb_circuit({nid(swarm, n) for n in (3, 5, 6)}, owner.append)
    closed = [e for e in owner if isinstance(e, ev.CircuitClosed)]
    assert [e.circ for e in closed] == [circ]
    assert closed[0].message == "closed while it was being built"
    assert us.routes.owner_of(circ) is None  # told, then forgotten


async def test_stale_neighbour_lists_are_refreshed_and_the_choice_made_again(fast: FastSleep) -> None:
    # real links: 0-1, 1-3, 3-5, 5-6 (no 1-4): the records we hold first still say 1 -> 4 -> 6
    async with await Swarm.start(N, mesh=False) as swarm:
        for a, b in ((0, 1), (1, 3), (3, 5), (5, 6)):
            await swarm.connect(a, b)
        stale = [record(swarm, 1, [0, 4]), record(swarm, 4, [1, 6]), record(swarm, 6, [4])]
        fresh = [record(swarm, 1, [0, 3]), record(swarm, 3, [1, 5]), record(swarm, 5, [3, 6])]
        us = Us(swarm, guards=[1], neighbours=[1], records=stale)
        us.on_refresh = lambda n: us.add(*fresh)
        circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, n) for n in (3, 4, 5)})
        assert ordb == nid(swarm, 6) and us.path(circ) == [1, 3, 5, 6]
        assert us.refreshes == 1  # the failed extension (1 has no link to 4) led to one refresh


async def test_no_eligible_ordb_is_a_path_error_after_three_refreshes(swarm: Swarm, fast: FastSleep) -> None:
    us = Us(swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm)[:2])
    with pytest.raises(PathError, match="no eligible ORDB"):
        await us.cm.build_ordb_circuit(set())
    assert us.refreshes == 3 and carriers(swarm) == {}


async def test_the_negative_control_builds_one_hop_to_a_neighbour(swarm: Swarm) -> None:
    us = Us(
        swarm, guards=[1], neighbours=[1, 2], records=ordb_scene(swarm), rules=CircuitRules(one_hop_ordb=True)
    )
    owner: list[ev.Event] = []
    circ, ordb = await us.cm.build_ordb_circuit({nid(swarm, 1)}, owner.append)
    assert ordb == nid(swarm, 2) and carriers(swarm) == {2: 1}
    assert us.routes.owner_of(circ) == owner.append
    with pytest.raises(PathError, match="no neighbour"):
        await us.cm.build_ordb_circuit({nid(swarm, 1), nid(swarm, 2)})


# ---- status --------------------------------------------------------------------------------------


async def test_status_counts_our_circuits_and_those_we_relay(swarm: Swarm) -> None:
    us = Us(swarm, guards=[1], neighbours=[1], records=chain(swarm))
    circ, path = await us.cm.build_circuit()
    await swarm.build_circuit(5, [0, 6])  # another peer's circuit through us
    assert us.cm.status() == {
        "circuits": 1,
        "circuit_paths": [[r.node_id.hex()[:16] for r in path]],
        "relayed_circuits": 1,
    }
    us.peer.driver.destroy_circuit(circ)
    await until(lambda: us.cm.status()["circuits"] == 0)
    assert us.cm.status() == {"circuits": 0, "circuit_paths": [], "relayed_circuits": 1}
