"""Sybil availability (issue 6): 10 Sybils with valid keys and IDs next to a key, serving their own
validly signed records and dropping stores; find_providers still returns an honest provider >= 99%."""

from __future__ import annotations

import random

from dht.keys import common_prefix_bits, provider_key
from dht.localnet import start_network, stop_all
from dht.messages import Store, StoreAck, StoreStatus, Values
from dht.node import DhtNode
from dht.records import ProviderRecord, RecordKind, Route
from dht.responder import Responder
from peer.crypto.identity import Identity

from .helpers import identity_near
from .test_node import fields

N = 200
SYBILS = 10
NAME = b"the hash_name the Sybils surround"
KEY = provider_key(NAME)


class SybilResponder(Responder):
    """Answers FIND_VALUE for KEY with only its own (valid) record and only fellow Sybils; drops stores."""

    own: bytes = b""
    fellows: tuple = ()

    def _answer(self, req, addr, now, budget):  # type: ignore[no-untyped-def]
        if isinstance(req.body, Store):
            return StoreAck(StoreStatus.STORED)  # claims success, keeps nothing
        body = super()._answer(req, addr, now, budget)
        if isinstance(body, Values) and getattr(req.body, "key", None) == KEY:
            return Values(self.fellows, (self.own,), 0)
        return body


async def test_honest_provider_found_despite_sybils() -> None:
    rng = random.Random(71)
    sybil_ids = [identity_near(KEY, 11, rng) for _ in range(SYBILS)]
    identities = [Identity.generate(rng.randbytes) for _ in range(N)] + sybil_ids
    # Sybils join among the first nodes so that they are well known.
    order = identities[:20] + sybil_ids + identities[20:N]
    nodes = await start_network(N + SYBILS, seed=72, identities=order)
    sybils = [n for n in nodes if n.identity in sybil_ids]
    honest = [n for n in nodes if n.identity not in sybil_ids]
    try:
        assert len(sybils) == SYBILS
        closest_honest = max(common_prefix_bits(n.node_id, KEY) for n in honest)
        assert all(common_prefix_bits(s.node_id, KEY) > closest_honest for s in sybils)  # nearest to the key
        for s in sybils:
            evil = SybilResponder(s.identity, s.table, s.store, s.verified, s._challenge, 20)
            now = s._clock()
            evil.own = (
                ProviderRecord(
                    KEY,
                    s.identity.public,
                    bytes(32),
                    bytes(32),
                    Route((("udp", "127.6.6.6:6"),)),
                    int(now + 600),
                )
                .sign(s.identity)
                .encode()
            )
            evil.fellows = tuple(x.contact for x in sybils if x is not s)
            s.responder = evil
        ordbs = rng.sample(honest, 3)
        for o in ordbs:
            await o.publish_provider(NAME, fields(o))
        assert all(not s.store.get(RecordKind.PROVIDER, KEY, s._clock()) for s in sybils)
        honest_ids = {o.node_id for o in ordbs}
        sybil_ids_set = {s.node_id for s in sybils}
        ok = saw_sybil_records = 0
        for _ in range(200):
            querier: DhtNode = rng.choice(honest)
            found = {r.node_id for r in await querier.find_providers(NAME)}
            ok += bool(found & honest_ids)
            saw_sybil_records += bool(found & sybil_ids_set)
        assert saw_sybil_records > 0  # the Sybils were reached and their records are valid
        assert ok / 200 >= 0.99, f"{ok}/200"
    finally:
        stop_all(nodes)
