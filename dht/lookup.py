"""Iterative Kademlia lookup as a sans-I/O object (DESIGN §8).

The caller asks :meth:`Lookup.next_queries` whom to query, sends the RPCs, and
reports each outcome with :meth:`Lookup.on_reply` or :meth:`Lookup.on_timeout`.
Unlike the ``kademlia`` package's crawler, which sends alpha queries and waits for
every reply of the round, a new query goes out as soon as any reply or timeout
frees one of the ``alpha`` slots, so one slow or dead contact never holds the
lookup back.  The lookup is done when the ``k`` closest contacts that have neither
failed nor stalled (gone past a fraction of the timeout) have all replied.  ``rounds`` is the longest referral chain that was
followed (seed contacts are at depth 1).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .keys import as_int
from .messages import Contact


class QueryState(enum.Enum):
    """Where one candidate stands in the lookup."""

    NEW = "new"
    IN_FLIGHT = "in-flight"
    STALLED = "stalled"  # still in flight, but slow: its slot is free and the lookup may end without it
    REPLIED = "replied"
    FAILED = "failed"


_OUT = frozenset({QueryState.FAILED, QueryState.STALLED})
_ASKED = frozenset({QueryState.IN_FLIGHT, QueryState.STALLED})


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    depth: int
    state: QueryState = QueryState.NEW


class Lookup:
    """Find the ``k`` nodes closest to ``target``, querying at most ``alpha`` at a time."""

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        k: int,
        alpha: int,
        self_id: bytes | None = None,
        max_candidates: int = 1000,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self._target = as_int(target)
        self._self_id = self_id
        self._max_candidates = max_candidates
        self._cands: dict[bytes, _Candidate] = {}
        self.queries = 0
        self.replies = 0
        self.failures = 0
        self.rounds = 0
        self._add(seeds, depth=1)

    def _add(self, contacts: Iterable[Contact], depth: int) -> None:
        for c in contacts:
            if c.node_id == self._self_id or c.node_id in self._cands:
                continue
            if len(self._cands) >= self._max_candidates:
                return
            self._cands[c.node_id] = _Candidate(c, as_int(c.node_id) ^ self._target, depth)

    def _live_sorted(self) -> list[_Candidate]:
        return sorted((c for c in self._cands.values() if c.state not in _OUT), key=lambda c: c.distance)

    @property
    def in_flight(self) -> int:
        return sum(c.state is QueryState.IN_FLIGHT for c in self._cands.values())

    def next_queries(self) -> list[Contact]:
        """Contacts to query now; each is marked in flight."""
        slots = self.alpha - self.in_flight
        out: list[Contact] = []
        if slots <= 0:
            return out
        for cand in self._live_sorted()[: self.k]:
            if cand.state is QueryState.NEW:
                cand.state = QueryState.IN_FLIGHT
                out.append(cand.contact)
                self.queries += 1
                if len(out) == slots:
                    break
        return out

    def on_reply(self, node_id: bytes, contacts: Iterable[Contact] = ()) -> None:
        cand = self._cands.get(node_id)
        if cand is None or cand.state not in _ASKED:
            return
        cand.state = QueryState.REPLIED
        self.replies += 1
        self.rounds = max(self.rounds, cand.depth)
        self._add(contacts, cand.depth + 1)

    def on_timeout(self, node_id: bytes) -> None:
        """The query timed out or its reply was invalid: the contact is out of this lookup."""
        cand = self._cands.get(node_id)
        if cand is None or cand.state not in _ASKED:
            return
        cand.state = QueryState.FAILED
        self.failures += 1

    def on_stall(self, node_id: bytes) -> None:
        """The query is slow: free its slot; a later reply or timeout is still taken."""
        cand = self._cands.get(node_id)
        if cand is not None and cand.state is QueryState.IN_FLIGHT:
            cand.state = QueryState.STALLED

    @property
    def done(self) -> bool:
        """The k closest contacts that neither failed nor stalled have all replied."""
        return all(c.state is QueryState.REPLIED for c in self._live_sorted()[: self.k])

    @property
    def settled(self) -> bool:
        """Like :attr:`done`, but stalled contacts among the k closest must have answered or failed."""
        near = sorted(
            (c for c in self._cands.values() if c.state is not QueryState.FAILED), key=lambda c: c.distance
        )[: self.k]
        return all(c.state is QueryState.REPLIED for c in near)

    def closest(self, n: int | None = None) -> list[Contact]:
        """The closest contacts that replied, nearest first."""
        replied = [c.contact for c in self._live_sorted() if c.state is QueryState.REPLIED]
        return replied[: n or self.k]

    def state_of(self, node_id: bytes) -> QueryState | None:
        cand = self._cands.get(node_id)
        return cand.state if cand else None
