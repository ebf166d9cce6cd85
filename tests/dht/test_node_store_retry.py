"""A store round that too few nodes took (a loaded or churning network) runs again (issue 6)."""

from __future__ import annotations

from dht.localnet import start_network, stop_all
from dht.messages import Contact, Reply, RequestBody, Store
from dht.node import DhtNode
from dht.records import Record

from .test_node import own_peer_record


class FirstStoresLost(DhtNode):
    """A node whose first round of STORE requests is lost on the way (every one of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0
        self.rounds_to_lose = 1

    async def _store_round(self, record: Record) -> int:
        self.rounds_to_lose -= 1
        return await super()._store_round(record)

    async def _rpc(self, contact: Contact, body: RequestBody, *, learn: bool = True) -> Reply | None:
        if isinstance(body, Store) and self.rounds_to_lose >= 0:
            self.lost += 1
            return None
        return await super()._rpc(contact, body, learn=learn)


async def test_a_store_round_nobody_took_is_run_again() -> None:
    nodes = await start_network(24, seed=91, make_node=lambda i: FirstStoresLost() if i == 5 else DhtNode())
    try:
        (publisher,) = (n for n in nodes if isinstance(n, FirstStoresLost))  # nodes are listed as they joined
        accepted = await publisher.publish_peer(own_peer_record(publisher))
        assert publisher.lost >= 10  # the first round was lost
        assert accepted >= 10
        rec = await next(n for n in nodes if n is not publisher).find_peer(publisher.node_id)
        assert rec is not None and rec.node_id == publisher.node_id
    finally:
        stop_all(nodes)
