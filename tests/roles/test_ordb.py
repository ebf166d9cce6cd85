"""OrdbService on the real onion core and driver over in-memory links: holders announce, a
requester asks, the ORDB pairs, splices, fails over, drops a liar, forwards to another ORDB
(counter + 1, refused at 5) and never forwards what it holds itself.

The holders and the requester are small fakes on their own peers that speak the DB_* messages
through the node (docs/ordb-protocol.md); each reaches the ORDB through a circuit of its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from peer.errors import PathError
from peer.proto import events as ev
from peer.roles.ordb import OrdbService
from peer.testing.swarm import Swarm, SwarmPeer
from peer.wire.commands import RelayCommand
from peer.wire.ordb import (
    DbConnected,
    DbEnd,
    DbEndReason,
    DbInfo,
    DbQuery,
    DeliveryKind,
    InfoEntry,
    PieceRange,
)

T = TypeVar("T")
HN = bytes(range(32))
ORDB, OTHER_ORDB = 3, 4  # peer indexes
LIAR, HONEST, REQUESTER = 0, 1, 2


class First(random.Random):
    """The ORDB picks the first holder of its table (the first to announce)."""

    def choice(self, seq: Sequence[T]) -> T:  # type: ignore[override]
        return seq[0]


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(5)
    yield s
    await s.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def later(p: SwarmPeer) -> None:
    """Flush a peer's node after the current event (no nested flush inside its event handler)."""
    asyncio.get_running_loop().call_soon(p.driver.flush)


class FakeHolder:
    """Announces HN on a circuit to an ORDB and answers the queries passed down to it.

    mode: "answer" (DB_CONNECTED, the payload, DB_END FINISHED), "hold" (no DB_END: still
    delivering), "connect" (DB_CONNECTED only), "silent" (never answers)."""

    def __init__(self, swarm: Swarm, index: int, payload: bytes, mode: str = "answer") -> None:
        self.swarm, self.index, self.peer = swarm, index, swarm.peers[index]
        self.payload, self.mode = payload, mode
        self.queries: list[DbQuery] = []
        self.ends: list[DbEnd] = []
        self.circ = self.stream = -1
        self.peer.driver.on_event = self.on_event

    async def announce(self, ordb: int, *names: bytes, pieces: tuple[int, int] = (0, 8)) -> None:
        self.circ = await self.swarm.build_circuit(self.index, [ordb])
        body = DbInfo(tuple(InfoEntry(n, 8, (PieceRange(*pieces),)) for n in names or (HN,))).encode()
        self.stream = self.peer.node.open_db_stream(self.circ, RelayCommand.DB_INFO, body)
        self.peer.driver.flush()

    def on_event(self, e: ev.Event) -> None:
        if not isinstance(e, ev.RelayMessageReceived) or e.circ != self.circ:
            return
        if e.stream_id == self.stream and e.command == RelayCommand.DB_QUERY:
            q = DbQuery.decode(e.data)
            self.queries.append(q)
            if self.mode != "silent":
                self.answer(q)
        elif e.command == RelayCommand.DB_END:
            self.ends.append(DbEnd.decode(e.data))

    def answer(self, q: DbQuery) -> None:
        node = self.peer.node
        hello = DbConnected(q.txid, DeliveryKind.PIECES, q.first, q.count, len(self.payload))
        sid = node.open_db_stream(self.circ, RelayCommand.DB_CONNECTED, hello.encode())
        if self.mode in ("answer", "hold"):
            node.stream_send(self.circ, sid, self.payload)
        if self.mode == "answer":
            node.db_end(self.circ, sid, DbEnd(DbEndReason.FINISHED, q.txid).encode())
        later(self.peer)


@dataclass
class Answer:
    connected: list[DbConnected] = field(default_factory=list)
    data: bytes = b""
    end: DbEnd | None = None


class Requester:
    """Asks an ORDB through a circuit of its own and collects each query's answer."""

    def __init__(self, swarm: Swarm, index: int = REQUESTER) -> None:
        self.swarm, self.index, self.peer = swarm, index, swarm.peers[index]
        self.answers: dict[int, Answer] = {}
        self.circ = -1
        self.peer.driver.on_event = self.on_event

    async def connect(self, ordb: int) -> None:
        self.circ = await self.swarm.build_circuit(self.index, [HONEST, ordb])

    def ask(self, q: DbQuery | bytes) -> Answer:
        body = q.encode() if isinstance(q, DbQuery) else q
        sid = self.peer.node.open_db_stream(self.circ, RelayCommand.DB_QUERY, body)
        self.peer.driver.flush()
        self.answers[sid] = a = Answer()
        return a

    def end(self, a: Answer, reason: DbEndReason) -> None:
        sid = next(s for s, x in self.answers.items() if x is a)
        self.peer.node.db_end(self.circ, sid, DbEnd(reason).encode())
        self.peer.driver.flush()

    def on_event(self, e: ev.Event) -> None:
        if not isinstance(e, ev.RelayMessageReceived) or e.circ != self.circ:
            return
        a = self.answers.get(e.stream_id)
        if a is None:
            return
        if e.command == RelayCommand.DB_CONNECTED:
            a.connected.append(DbConnected.decode(e.data))
            a.data = b""  # a second DB_CONNECTED restarts the delivery (failover)
        elif e.command == RelayCommand.DB_DATA:
            a.data += e.data
            self.peer.node.stream_consumed(self.circ, e.stream_id, 1)
            later(self.peer)
        elif e.command == RelayCommand.DB_END:
            a.end = DbEnd.decode(e.data)


def ordb_at(swarm: Swarm, index: int = ORDB, **kw: object) -> OrdbService:
    p = swarm.peers[index]
    o = OrdbService(p.node, kick=p.driver.flush, rng=First(), **kw)  # type: ignore[arg-type]
    p.driver.on_event = o.handle
    return o


def ask(counter: int = 0) -> DbQuery:
    return DbQuery(HN, 0, 4, counter)


async def test_a_lying_holder_is_dropped_and_the_next_query_goes_to_another(swarm: Swarm) -> None:
    ordb = ordb_at(swarm)
    liar = FakeHolder(swarm, LIAR, b"lie" * 100, mode="hold")
    honest = FakeHolder(swarm, HONEST, b"truth" * 100)
    await liar.announce(ORDB, HN, bytes(32))
    await until(lambda: HN in ordb.holders)
    await honest.announce(ORDB)
    await until(lambda: len(ordb.holders[HN]) == 2)
    req = Requester(swarm)
    await req.connect(ORDB)

    first = req.ask(ask())
    await until(lambda: len(first.data) == len(liar.payload))
    assert first.connected[0].txid == bytes(16)  # the requester never sees the txid
    assert first.data == liar.payload and len(liar.queries) == 1
    req.end(first, DbEndReason.BAD_PIECE)  # the pieces failed verification
    await until(lambda: ordb.stats["bad_piece_drops"] == 1)
    assert len(ordb.holders[HN]) == 1
    assert bytes(32) in ordb.holders  # the liar's other hash_name stays
    await until(lambda: len(liar.ends) == 1)
    assert liar.ends[0] == DbEnd(DbEndReason.BAD_PIECE, liar.queries[0].txid)  # it stops delivering

    second = req.ask(ask())
    await until(lambda: second.end is not None)
    assert second.data == honest.payload and second.end == DbEnd(DbEndReason.FINISHED)
    assert len(liar.queries) == 1 and len(honest.queries) == 1
    await ordb.close()


async def test_a_holder_whose_circuit_breaks_mid_answer_hands_the_query_to_another(swarm: Swarm) -> None:
    ordb = ordb_at(swarm)
    breaking = FakeHolder(swarm, LIAR, b"", mode="connect")
    honest = FakeHolder(swarm, HONEST, b"truth" * 100)
    await breaking.announce(ORDB)
    await until(lambda: HN in ordb.holders)
    await honest.announce(ORDB)
    await until(lambda: len(ordb.holders[HN]) == 2)
    req = Requester(swarm)
    await req.connect(ORDB)

    a = req.ask(ask())
    await until(lambda: len(a.connected) == 1)  # paired with the first holder, which then breaks
    swarm.peers[LIAR].driver.destroy_circuit(breaking.circ)
    await until(lambda: a.end is not None)
    assert len(a.connected) == 2 and a.data == honest.payload and a.end == DbEnd(DbEndReason.FINISHED)
    assert len(honest.queries) == 1 and honest.queries[0].txid != breaking.queries[0].txid
    assert len(ordb.holders[HN]) == 1  # the broken circuit's holder left the table
    await ordb.close()


async def test_a_holder_that_does_not_answer_in_time_is_replaced_and_its_late_answer_reset(
    swarm: Swarm,
) -> None:
    ordb = ordb_at(swarm)
    ordb.table.answer_timeout = 0.1
    slow = FakeHolder(swarm, LIAR, b"late", mode="silent")
    honest = FakeHolder(swarm, HONEST, b"truth")
    await slow.announce(ORDB)
    await until(lambda: HN in ordb.holders)
    await honest.announce(ORDB)
    await until(lambda: len(ordb.holders[HN]) == 2)
    req = Requester(swarm)
    await req.connect(ORDB)

    a = req.ask(ask())
    await until(lambda: a.end is not None)
    assert a.data == honest.payload and len(a.connected) == 1
    slow.mode = "connect"
    slow.answer(slow.queries[0])
    await until(lambda: len(slow.ends) == 1)
    assert slow.ends[0] == DbEnd(DbEndReason.RESET, slow.queries[0].txid)
    await ordb.close()


async def forward_between(swarm: Swarm, calls: list[int]) -> Callable[[object, bytes], object]:
    """The runtime's forward: a 1-hop circuit from our ORDB to the other one, a stream on it."""
    circ = await swarm.build_circuit(ORDB, [OTHER_ORDB])
    node = swarm.peers[ORDB].node

    async def forward(prov: object, body: bytes) -> tuple[int, int] | None:
        calls.append(DbQuery.decode(body).counter)
        sid = node.open_db_stream(circ, RelayCommand.DB_QUERY, body)
        swarm.peers[ORDB].driver.flush()
        return circ, sid

    return forward


async def providers(hash_name: bytes) -> list[object]:
    return ["the other ORDB"]


async def forwarding(
    swarm: Swarm, find: Callable[[bytes], Awaitable[list[object]]], calls: list[int]
) -> tuple[OrdbService, OrdbService, FakeHolder, Requester]:
    """A requester linked to an ORDB with no holder, which forwards to the ORDB an honest holder announced to."""
    near = ordb_at(swarm, find_providers=find, forward=await forward_between(swarm, calls))
    far = ordb_at(swarm, OTHER_ORDB)
    holder = FakeHolder(swarm, HONEST, b"truth" * 100)
    await holder.announce(OTHER_ORDB)
    await until(lambda: HN in far.holders)
    req = Requester(swarm)
    await req.connect(ORDB)
    return near, far, holder, req


@pytest.mark.parametrize("counter", [3, 4])
async def test_a_forward_carries_the_counter_and_is_refused_at_5(swarm: Swarm, counter: int) -> None:
    calls: list[int] = []
    near, far, holder, req = await forwarding(swarm, providers, calls)

    a = req.ask(ask(counter))
    await until(lambda: a.end is not None)
    if counter + 1 < 5:  # forwarded at 4: accepted, answered through both ORDBs
        assert calls == [counter + 1] and holder.queries[0].counter == counter + 1
        assert a.data == holder.payload and a.end == DbEnd(DbEndReason.FINISHED)
        assert near.stats["forwarded"] == 1
    else:  # a forward at 5 is refused
        assert calls == [] and holder.queries == []
        assert a.end == DbEnd(DbEndReason.LOOP)
    await near.close()
    await far.close()


async def test_a_bad_piece_travels_down_a_forward_to_the_ordb_that_indexes_the_liar(swarm: Swarm) -> None:
    near = ordb_at(swarm, find_providers=providers, forward=await forward_between(swarm, []))
    far = ordb_at(swarm, OTHER_ORDB)
    liar = FakeHolder(swarm, LIAR, b"lie" * 100, mode="hold")
    await liar.announce(OTHER_ORDB)
    await until(lambda: HN in far.holders)
    req = Requester(swarm)
    await req.connect(ORDB)

    a = req.ask(ask())
    await until(lambda: len(a.data) == len(liar.payload))
    req.end(a, DbEndReason.BAD_PIECE)
    await until(lambda: far.stats["bad_piece_drops"] == 1)
    assert HN not in far.holders and near.stats["bad_piece_drops"] == 0
    await near.close()
    await far.close()


class Local:
    """This peer holds (or fetches) HN itself."""

    def __init__(self, node_of: SwarmPeer, has: bool) -> None:
        self.peer, self._has = node_of, has
        self.served = 0

    def involved(self, hash_name: bytes) -> bool:
        return hash_name == HN

    async def has(self, q: DbQuery) -> bool:
        return self._has

    async def serve_here(self, stream: tuple[int, int], q: DbQuery) -> None:
        node, (circ, sid) = self.peer.node, stream
        payload = b"ours" * 50
        hello = DbConnected(bytes(16), DeliveryKind.PIECES, q.first, q.count, len(payload))
        node.send_relay(circ, RelayCommand.DB_CONNECTED, sid, hello.encode())
        node.stream_send(circ, sid, payload)
        node.db_end(circ, sid, DbEnd(DbEndReason.FINISHED).encode())
        self.peer.driver.flush()
        self.served += 1


@pytest.mark.parametrize("case", ["served here", "not here", "not here, a holder lacks the range"])
async def test_an_ordb_that_holds_or_fetches_the_hash_name_never_forwards_it(swarm: Swarm, case: str) -> None:
    calls: list[int] = []
    local = Local(swarm.peers[ORDB], case == "served here")
    ordb = ordb_at(swarm, find_providers=providers, forward=await forward_between(swarm, calls), local=local)
    if case.endswith("lacks the range"):
        partial = FakeHolder(swarm, LIAR, b"")
        await partial.announce(ORDB, pieces=(6, 8))
        await until(lambda: HN in ordb.holders)
    req = Requester(swarm)
    await req.connect(ORDB)

    a = req.ask(ask())
    await until(lambda: a.end is not None)
    assert calls == []
    if case == "served here":
        assert a.data == b"ours" * 50 and a.end == DbEnd(DbEndReason.FINISHED) and local.served == 1
        await until(lambda: ordb.status()["open_queries"] == 0)
    else:
        assert a.end == DbEnd(DbEndReason.UNAVAILABLE) and a.connected == []
    await ordb.close()


@pytest.mark.parametrize(
    ("lookup", "error"),
    [("none", "no provider record"), ("raises", "provider lookup failed"), ("fails", "forwarding failed")],
)
async def test_a_forward_that_finds_nobody_ends_unavailable_and_says_why(
    swarm: Swarm, lookup: str, error: str
) -> None:
    lookups: list[bytes] = []

    async def find(hash_name: bytes) -> list[object]:
        lookups.append(hash_name)
        if lookup == "raises":
            raise PathError("the DHT is empty")
        return [] if lookup == "none" else ["a", "b", "c", "d"]

    tries: list[object] = []

    async def forward(prov: object, body: bytes) -> tuple[int, int] | None:
        tries.append(prov)
        raise TimeoutError("no link")

    ordb = ordb_at(swarm, find_providers=find, forward=forward)
    req = Requester(swarm)
    await req.connect(ORDB)
    a = req.ask(ask())
    await until(lambda: a.end is not None)
    assert a.end == DbEnd(DbEndReason.UNAVAILABLE)
    assert str(ordb.status()["last_forward_error"]).startswith(error)
    assert len(tries) == (3 if lookup == "fails" else 0)  # at most three provider records tried
    assert len(lookups) == 1  # nobody found: UNAVAILABLE at once (the requester asks elsewhere)
    assert ordb.stats["unavailable"] == 1
    await ordb.close()


async def test_a_malformed_query_and_the_quotas_are_answered(swarm: Swarm) -> None:
    ordb = ordb_at(swarm)
    req = Requester(swarm)
    await req.connect(ORDB)
    bad = req.ask(b"\x02" + ask().encode()[1:])  # unknown version
    await until(lambda: bad.end is not None)
    assert bad.end == DbEnd(DbEndReason.UNAVAILABLE)
    holder = FakeHolder(swarm, HONEST, b"", mode="silent")
    await holder.announce(ORDB)
    await until(lambda: HN in ordb.holders)
    waiting = [req.ask(ask()) for _ in range(16)]
    over = req.ask(ask())
    await until(lambda: over.end is not None)
    assert over.end == DbEnd(DbEndReason.OVERLOAD) and all(a.end is None for a in waiting)
    assert ordb.status()["open_queries"] == 16 and ordb.status()["hash_names"] == 1
    swarm.peers[REQUESTER].driver.destroy_circuit(req.circ)  # the requester goes: its queries end
    await until(lambda: ordb.status()["open_queries"] == 0)
    await ordb.close()


async def test_a_delivery_longer_than_the_stream_window_is_acknowledged_as_the_requester_drains(
    swarm: Swarm,
) -> None:
    ordb = ordb_at(swarm)
    big = FakeHolder(swarm, HONEST, bytes(range(256)) * 2000)  # 512 KB: twice the holder's stream window
    await big.announce(ORDB)
    await until(lambda: HN in ordb.holders)
    req = Requester(swarm)
    await req.connect(ORDB)
    a = req.ask(ask())
    await until(lambda: a.end is not None)
    assert a.data == big.payload and a.end == DbEnd(DbEndReason.FINISHED)
    await ordb.close()


async def test_a_forward_reuses_the_providers_it_found_for_the_next_queries(swarm: Swarm) -> None:
    """A download asks many small queries: one DHT lookup serves the hash_name's forwards for a while."""
    lookups: list[bytes] = []

    async def find(hash_name: bytes) -> list[object]:
        lookups.append(hash_name)
        return ["the other ORDB"]

    near, far, holder, req = await forwarding(swarm, find, [])
    for n in (1, 2, 3):
        a = req.ask(ask())
        await until(lambda a=a: a.end is not None)  # type: ignore[misc]
        assert a.data == holder.payload and a.end == DbEnd(DbEndReason.FINISHED)
        assert near.stats["forwarded"] == n
    assert lookups == [HN]
    await near.close()
    await far.close()
