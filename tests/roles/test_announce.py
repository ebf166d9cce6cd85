"""The holder keeps announcing until an ORDB has its share; the ORDB keeps publishing its provider
record until another DHT node has it (real onion core and driver over in-memory links, a real
SQLite store).  Both were one-shot once: a share announced while no circuit to an ORDB would
build (a peer just started, a loaded machine) stayed unfindable until the peer restarted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from peer.errors import PathError
from peer.proto import events as ev
from peer.roles import holder as holder_mod
from peer.roles import ordb as ordb_mod
from peer.roles.holder import HolderService
from peer.roles.ordb import OrdbService
from peer.testing.swarm import Swarm
from storage.chunkstore import ChunkStore


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holder_mod, "ANNOUNCE_RETRY_FIRST", 0.05)
    monkeypatch.setattr(ordb_mod, "PUBLISH_RETRY_FIRST", 0.01)


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = await Swarm.start(4)
    yield s
    await s.close()


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


class Roles:
    """Peer 0 holds, peer 3 is the ORDB, reached through peers 1 and 2."""

    def __init__(
        self,
        swarm: Swarm,
        store: ChunkStore,
        failures: int,
        publish: Callable[[bytes], Awaitable[int]] | None = None,
    ) -> None:
        self.swarm = swarm
        self.failures = failures
        self.builds = 0
        o = swarm.peers[3]
        self.ordb = OrdbService(o.node, kick=o.driver.flush, publish_provider=publish)
        self.holder = self.new_holder(store)
        o.driver.on_event = self.ordb.handle

    def new_holder(self, store: ChunkStore) -> HolderService:
        h = self.swarm.peers[0]
        self.holder = HolderService(
            h.node,
            store,
            kick=h.driver.flush,
            build_ordb_circuit=self.build,
            announce_delay=(0, 0),
            ordbs_per_share=1,
        )
        h.driver.on_event = self.on_holder_event
        return self.holder

    def on_holder_event(self, e: ev.Event) -> None:
        self.holder.handle(e)

    async def build(self, exclude: set[bytes]) -> tuple[int, bytes]:
        self.builds += 1
        if self.builds <= self.failures:
            raise PathError("no eligible ORDB yet")
        circ = await self.swarm.build_circuit(0, [1, 2, 3])
        return circ, self.swarm.peers[3].keys.node_id


async def share(store: ChunkStore, tmp_path: Path, name: str = "file.bin", size: int = 300_000) -> bytes:
    f = tmp_path / name
    f.write_bytes(os.urandom(size))
    return (await store.import_file(f, encrypt=False, randbytes=os.urandom)).hash_name


async def announced(roles: Roles, store: ChunkStore, tmp_path: Path) -> bytes:
    """Share a file from peer 0 and wait until the ORDB indexes it."""
    hn = await share(store, tmp_path)
    roles.holder.announce_soon(hn)
    await until(lambda: hn in roles.ordb.holders)
    return hn


async def test_a_failed_announcement_is_tried_again(swarm: Swarm, store: ChunkStore, tmp_path: Path) -> None:
    roles = Roles(swarm, store, failures=3)
    await announced(roles, store, tmp_path)
    assert roles.builds == 4
    assert roles.holder.announce_retries == 3
    status = roles.holder.announce_status()
    assert status["last_error"] == "no eligible ORDB yet" and status["announced"] == 1
    await until(lambda: status_pending(roles.holder) == 0)
    await roles.holder.close()


def status_pending(h: HolderService) -> object:
    return h.announce_status()["pending"]


async def test_a_closed_announce_circuit_is_replaced(swarm: Swarm, store: ChunkStore, tmp_path: Path) -> None:
    roles = Roles(swarm, store, failures=0)
    hn = await announced(roles, store, tmp_path)
    (first,) = roles.holder.circuits
    (old,) = roles.ordb.holders[hn]
    swarm.peers[0].driver.destroy_circuit(first)
    await until(
        lambda: (
            roles.builds == 2 and [h.stream for h in roles.ordb.holders.get(hn, [])] not in ([], [old.stream])
        )
    )
    assert first not in roles.holder.circuits and len(roles.holder.circuits) == 1
    await roles.holder.close()


async def test_a_restarted_holder_announces_what_it_seeds(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    roles = Roles(swarm, store, failures=0)
    hn = await share(store, tmp_path)
    quiet = await share(store, tmp_path, "quiet.bin", 1000)
    await store.set_seeding(quiet, False)  # opted out: must stay unannounced
    assert await roles.holder.announce_held() == 1
    await until(lambda: hn in roles.ordb.holders)
    assert quiet not in roles.ordb.holders
    await roles.holder.close()


async def test_the_ordb_publishes_again_until_another_node_took_the_record(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    answers = [0, 1, 3]  # failed, only we kept it, stored elsewhere
    calls: list[bytes] = []

    async def publish(hash_name: bytes) -> int:
        calls.append(hash_name)
        return answers[len(calls) - 1]

    roles = Roles(swarm, store, failures=0, publish=publish)
    hn = await share(store, tmp_path)
    roles.holder.announce_soon(hn)
    await until(lambda: len(calls) == 3)
    await asyncio.sleep(0.2)  # no fourth attempt once a record is stored elsewhere
    assert calls == [hn, hn, hn] and roles.ordb.stats["publish_retries"] == 2
    assert hn in roles.ordb.published
    await roles.holder.close()
    await roles.ordb.close()


async def test_an_ordb_that_became_a_neighbour_is_replaced(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    roles = Roles(swarm, store, failures=0)
    hn = await announced(roles, store, tmp_path)
    (first,) = roles.holder.circuits
    assert roles.holder.retire_ordbs({swarm.peers[2].keys.node_id}) == 0  # a middle hop: kept
    assert roles.holder.retire_ordbs({swarm.peers[3].keys.node_id}) == 1
    await until(
        lambda: roles.builds == 2 and first not in roles.holder.circuits and len(roles.holder.circuits) == 1
    )
    await until(lambda: hn in roles.ordb.holders)  # announced again, on the new circuit
    await roles.holder.close()


async def test_many_shares_at_once_are_each_announced_then_topped_up(
    swarm: Swarm, store: ChunkStore, tmp_path: Path
) -> None:
    roles = Roles(swarm, store, failures=0)
    roles.holder.ordbs_per_share = 2
    names = [await share(store, tmp_path, f"many{i}.bin", 20_000) for i in range(6)]
    for hn in names:
        roles.holder.announce_soon(hn)
    await until(lambda: all(hn in roles.ordb.holders for hn in names))
    per_name = lambda: [sum(hn in c.hash_names for c in roles.holder.circuits.values()) for hn in names]  # noqa: E731
    await until(lambda: per_name() == [2] * 6)
    # 6 names x 2 ORDBs at 4 names per circuit: 3 circuits suffice; none is built per name
    assert len(roles.holder.circuits) <= 4, len(roles.holder.circuits)
    await until(lambda: status_pending(roles.holder) == 0)
    await roles.holder.close()
