"""Our own circuits (DESIGN §5): to exits for streams, and to ORDBs for content, within the path rules.

Paths come from :mod:`peer.net.pathsel` over the peer view and the links we hold; the first hop is
one of our linked guards.  Each circuit built here is given to its owner in :class:`EventRoutes`
before anyone can send on it, so its events reach that owner only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dht.records import PeerRecord, ProviderRecord
from peer.errors import PathError, PeerError
from peer.net.driver import CircuitError, NodeDriver, OnionStream, StreamError
from peer.net.neighbours import LinkManager
from peer.net.pathsel import eligible_ordbs, select_path, select_path_to
from peer.net.peerview import PeerView
from peer.net.routing import EventRoutes, Handler
from peer.net.socks import StreamOpenError
from peer.proto import events as ev
from peer.proto.circuit import HopSpec
from peer.proto.node import OnionNode
from peer.wire.linkspec import LinkSpecEd25519, LinkSpecPeerNodeId

log = logging.getLogger(__name__)

ORDB_BUILD_TIMEOUT = 20.0


@dataclass(frozen=True)
class CircuitRules:
    hops: int = 3  # hops of a circuit to an exit
    subnet_rule: bool = True  # no two hops in one /16
    one_hop_ordb: bool = False  # test only: the anonymity test's negative control (breaks §5)


def hop_of(rec: PeerRecord | ProviderRecord) -> HopSpec:
    """How to extend a circuit to the peer of a record (its NodeID and Ed25519 identity)."""
    return HopSpec(
        rec.node_id, rec.ntor_key, (LinkSpecPeerNodeId(rec.node_id), LinkSpecEd25519(rec.identity_key))
    )


class CircuitManager:
    """Builds our circuits and remembers their paths; routes nothing itself (see EventRoutes)."""

    def __init__(
        self,
        *,
        node: OnionNode,
        driver: NodeDriver,
        view: PeerView,
        links: LinkManager,
        guards: Callable[[], list[bytes]],
        refresh_view: Callable[[], Awaitable[None]],
        routes: EventRoutes,
        rules: CircuitRules,
        rng: random.Random,
    ) -> None:
        self.node = node
        self.driver = driver
        self.view = view
        self.links = links
        self._guards = guards
        self._refresh_view = refresh_view
        self.routes = routes
        self.rules = rules
        self.rng = rng
        self._exit_circuits: list[int] = []
        self.paths: dict[int, list[bytes]] = {}

    @property
    def own_id(self) -> bytes:
        return self.node.node_id

    def linked_guards(self) -> list[bytes]:
        return [g for g in self._guards() if g in self.links.neighbours]

    def circuit_closed(self, circ: int) -> None:
        if circ in self._exit_circuits:
            self._exit_circuits.remove(circ)
        self.paths.pop(circ, None)

    def _own(self, circ: int, owner: Handler | None) -> None:
        if owner is None:
            return
        self.routes.own_circuit(circ, owner)
        if circ not in self.node.circuits:  # closed before it had an owner: tell the owner now
            self.routes.route(ev.CircuitClosed(circ, 0, "closed while it was being built"))

    # ---- circuits to exits, and streams on them ------------------------------------------------
    async def build_circuit(
        self, *, hops: int | None = None, want_exit: bool = True, avoid: tuple[bytes, ...] = ()
    ) -> tuple[int, list[PeerRecord]]:
        def choose() -> list[PeerRecord]:
            return select_path(
                self.view,
                own_node_id=self.own_id,
                first_hops=self.linked_guards(),
                hops=hops or self.rules.hops,
                rng=self.rng,
                want_exit=want_exit,
                subnet_rule=self.rules.subnet_rule,
                avoid=avoid,
            )

        try:
            path = choose()
        except PathError:
            # records change as links come and go: refresh the view once before giving up
            await self._refresh_view()
            path = choose()
        chan = self.links.chan_of(path[0].node_id)
        if chan is None:
            raise PathError("the guard's link went away")
        circ = await self.driver.build_circuit(chan, [hop_of(r) for r in path])
        self._exit_circuits.append(circ)
        self.paths[circ] = [r.node_id for r in path]
        return circ, path

    async def open_stream(self, host: str, port: int) -> OnionStream:
        """A stream to host:port through a circuit to an exit peer (reused while it lives)."""
        last: Exception | None = None
        for attempt in range(6):
            circ = next((c for c in reversed(self._exit_circuits) if c in self.node.circuits), None)
            if circ is None or attempt:
                try:
                    circ, _path = await self.build_circuit()
                except (PathError, CircuitError) as exc:
                    last = exc
                    log.warning("no circuit for a stream yet (attempt %d): %s", attempt + 1, exc)
                    await asyncio.sleep(1.0)
                    await self._refresh_view()
                    continue
            try:
                return await self.driver.open_stream(circ, host, port)
            except (StreamError, CircuitError) as exc:
                last = exc
                if isinstance(exc, StreamError) and exc.end_reason is not None:
                    break  # the exit answered: retrying elsewhere would not change its answer
        reason = last.end_reason if isinstance(last, StreamError) else None
        raise StreamOpenError(f"could not open a stream: {last}", reason)

    async def open_socks_stream(self, host: str, port: int) -> OnionStream:
        try:
            return await self.open_stream(host, port)
        except StreamOpenError:
            raise
        except PeerError as exc:
            raise StreamOpenError(str(exc)) from exc

    # ---- circuits to ORDBs (DESIGN §5: never our own ORDB, disjoint from guards and neighbours) ---
    def eligible_ordbs(self, exclude: set[bytes] | None = None) -> list[PeerRecord]:
        return eligible_ordbs(
            self.view,
            own_node_id=self.own_id,
            guards=self._guards(),
            neighbours=self.links.linked_ids(),  # ORDB-to-ORDB links are direct links too
            exclude=exclude or set(),
        )

    async def build_ordb_circuit(
        self, exclude: set[bytes], owner: Handler | None = None
    ) -> tuple[int, bytes]:
        """A circuit of 2 hops then an ORDB chosen uniformly among the eligible ones we can reach,
        given to ``owner``.

        Neighbour lists in records lag behind links that move: when an extension fails, the view
        is refreshed and the choice made again."""
        if self.rules.one_hop_ordb:  # NEGATIVE CONTROL for the anonymity test: breaks DESIGN §5 on purpose
            return await self._one_hop_ordb(exclude, owner)
        errors: list[str] = []
        for attempt in range(3):
            cands = self.eligible_ordbs(exclude)
            self.rng.shuffle(cands)
            for target in cands:
                path = self._path_to(target, errors)
                if path is None:
                    continue
                chan = self.links.chan_of(path[0].node_id)
                if chan is None:
                    continue
                try:
                    circ = await self.driver.build_circuit(
                        chan, [hop_of(r) for r in path], timeout=ORDB_BUILD_TIMEOUT
                    )
                except CircuitError as exc:
                    errors.append(str(exc))
                    continue
                if target.node_id in self.links.linked_ids():  # it linked to us while we built
                    self.node.destroy_circuit(circ)
                    self.driver.flush()
                    errors.append("the ORDB linked to us while the circuit was built")
                    continue
                self.paths[circ] = [r.node_id for r in path]
                self._own(circ, owner)
                return circ, target.node_id
            if not cands:
                errors.append("no eligible ORDB (rule: never our own, our guards or a peer we are linked to)")
            await self._refresh_view()
            if attempt:
                await asyncio.sleep(0.5)
        raise PathError(f"no circuit to an eligible ORDB: {errors[-1] if errors else 'no candidates'}")

    def _path_to(self, target: PeerRecord, errors: list[str]) -> list[PeerRecord] | None:
        for before in (2, 3):  # at least 2 hops before an ORDB; 3 when the graph needs it
            try:
                return select_path_to(
                    self.view,
                    target,
                    own_node_id=self.own_id,
                    first_hops=self.linked_guards(),
                    rng=self.rng,
                    before=before,
                    subnet_rule=self.rules.subnet_rule,
                )
            except PathError as exc:
                errors.append(str(exc))
        return None

    async def _one_hop_ordb(self, exclude: set[bytes], owner: Handler | None) -> tuple[int, bytes]:
        for n in self.links.neighbour_ids():
            rec = self.view.get(n)
            chan = self.links.chan_of(n)
            if rec is None or chan is None or n in exclude:
                continue
            circ = await self.driver.build_circuit(chan, [hop_of(rec)], timeout=ORDB_BUILD_TIMEOUT)
            self._own(circ, owner)
            return circ, n
        raise PathError("no neighbour for a 1-hop ORDB circuit")

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        live = [c for c in self._exit_circuits if c in self.node.circuits]
        return {
            "circuits": len(live),
            "circuit_paths": [
                [n.hex()[:16] for n in p] for c, p in self.paths.items() if c in self.node.circuits
            ],
            "relayed_circuits": len(self.node.circuits) - len(live),
        }
