"""Joining the test recorder's files (DESIGN §11): who saw what, and who could link what.

Used by the anonymity tests and by ``peersm demo`` on its own throwaway testnet only.

Two checks make the verdict (:meth:`Views.leaks`): a circuit's previous hop that saw the hash_name
(:meth:`Views.who_links`: the 1-hop ORDB), and an ORDB that saw the hash_name on a circuit an end
built while it was directly linked to that end (:meth:`Views.linked_ordbs`).  The second follows a
circuit back hop by hop (each hop records the circuit id it chose on its link to the next) and
compares times with link lifetimes (``neighbour`` and ``neighbour_closed`` records).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from dht.keys import provider_key
from peer.net.recorder import load

#: A circuit is followed back at most this many hops (the path rules allow 5).
MAX_TRACE = 16

Circ = tuple[str, int]  # (process, circuit handle in that process)


class Views:
    """Every process's records, indexed: NodeIDs, circuits with their previous hop, payloads,
    link lifetimes."""

    def __init__(self, d: Path) -> None:
        self.node_of: dict[str, str] = {}  # process name -> its NodeID (hex)
        self.prev: dict[Circ, str] = {}  # (process, circuit) -> previous hop's NodeID ("self": origin)
        self.prev_circ_id: dict[Circ, int] = {}  # (process, circuit) -> id on the link from prev
        self.origins: dict[str, set[tuple[Any, Any]]] = defaultdict(set)  # process -> {(first hop, circ id)}
        self.payloads: dict[Circ, list[str]] = defaultdict(list)
        self.payload_times: dict[Circ, list[float]] = defaultdict(list)  # parallel to payloads
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        #: (process, neighbour NodeID) -> [(link up, link down or +inf)], from that process's records
        self.links: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        #: (sender NodeID, receiver NodeID, circuit id on their link) -> the sender's circuit
        self.sent_to: dict[tuple[str, str, int], Circ] = {}
        self.dht: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.bridge: list[str] = []
        sends: list[tuple[str, int, str, int]] = []  # (process, circuit, next NodeID, next circ id)
        for f in sorted(d.glob("*.record")):
            name = f.stem
            opened: dict[tuple[Any, Any], tuple[str, float]] = {}  # (pid, chan) -> (NodeID, up)
            for r in load(f):
                k = r["kind"]
                if k == "self":
                    self.node_of[name] = r["node_id"]
                elif k == "neighbour":
                    self.neighbours[name].add(r["node_id"])
                    opened[(r.get("pid"), r["chan"])] = (r["node_id"], r["t"])
                elif k == "neighbour_closed":
                    up = opened.pop((r.get("pid"), r["chan"]), None)
                    if up is not None:
                        self.links[(name, up[0])].append((up[1], r["t"]))
                elif k == "circuit":
                    self.prev[(name, r["circ"])] = r["prev"]
                    if r.get("prev_circ_id") is not None:
                        self.prev_circ_id[(name, r["circ"])] = r["prev_circ_id"]
                    if r["prev"] == "self":
                        self.origins[name].add((r["next"], r.get("next_circ_id")))
                        if r.get("next_circ_id") is not None:
                            sends.append((name, r["circ"], r["next"], r["next_circ_id"]))
                elif k == "extend":
                    if r.get("next_circ_id") is not None:
                        sends.append((name, r["circ"], r["next"], r["next_circ_id"]))
                elif k == "payload":
                    self.payloads[(name, r["circ"])].append(r["data"])
                    self.payload_times[(name, r["circ"])].append(r["t"])
                elif k == "dht":
                    self.dht[name].append(r)
                elif k == "bridge":
                    self.bridge.append(r["data"])
            for nid, since in opened.values():  # never closed in the records: up until the end
                self.links[(name, nid)].append((since, math.inf))
        for proc, circ, nxt, cid in sends:
            if proc in self.node_of:
                self.sent_to[(self.node_of[proc], nxt, cid)] = (proc, circ)

    @staticmethod
    def _needles(hash_name: bytes) -> tuple[str, str]:
        return hash_name.hex(), provider_key(hash_name).hex()

    def saw_content(self, proc: str, hash_name: bytes) -> bool:
        needles = self._needles(hash_name)
        return any(
            n in p for (pr, _c), ps in self.payloads.items() if pr == proc for p in ps for n in needles
        ) or any(r.get("hash_name") == hash_name.hex() for r in self.dht.get(proc, []))

    def saw_identity(self, proc: str, of: str) -> bool:
        """``proc`` had ``of`` as a direct neighbour (it knows its address and NodeID)."""
        return self.node_of.get(of, "?") in self.neighbours.get(proc, set())

    def linked_at(self, a: str, b: str, t: float) -> bool:
        """``a`` and ``b`` had a direct link at time ``t`` (by either one's records)."""
        a_id, b_id = self.node_of.get(a, "?"), self.node_of.get(b, "?")
        spans = self.links.get((a, b_id), []) + self.links.get((b, a_id), [])
        return any(up <= t < down for up, down in spans)

    def origin_of(self, proc: str, circ: int) -> str | None:
        """The process that built the circuit ``circ`` of ``proc`` (followed back hop by hop), or None
        where the records do not tell."""
        at: Circ = (proc, circ)
        for _ in range(MAX_TRACE):
            prev = self.prev.get(at)
            if prev is None:
                return None
            if prev == "self":
                return at[0]
            cid = self.prev_circ_id.get(at)
            me = self.node_of.get(at[0])
            if cid is None or me is None:
                return None
            back = self.sent_to.get((prev, me, cid))
            if back is None:
                return None
            at = back
        return None

    def who_links(self, identity_of: str, hash_name: bytes) -> list[str]:
        """Processes other than ``identity_of`` that held, in one circuit ``identity_of`` built, both
        its identity (it was the previous hop: a direct neighbour) and the hash_name or DHT key.

        A circuit counts as built by ``identity_of`` when its own records show an origin circuit to
        that process with the same circuit id on their link (a circuit it merely relays does not
        name it as the one who asks or serves)."""
        ident = self.node_of[identity_of]
        needles = self._needles(hash_name)
        out = []
        for (proc, circ), prev in self.prev.items():
            if proc == identity_of or prev != ident:
                continue
            if (self.node_of.get(proc), self.prev_circ_id.get((proc, circ))) not in self.origins[identity_of]:
                continue
            if any(n in p for p in self.payloads.get((proc, circ), []) for n in needles):
                out.append(f"{proc} (circuit {circ})")
        return out

    def ordb_for(self, proc: str, hash_name: bytes) -> set[str | None]:
        """Who built the circuits on which ``proc`` saw the hash_name or DHT key (None: the records do
        not tell)."""
        needles = self._needles(hash_name)
        return {
            self.origin_of(pr, c)
            for (pr, c), ps in self.payloads.items()
            if pr == proc and any(n in p for p in ps for n in needles)
        }

    def linked_ordbs(self, identity_of: str, hash_name: bytes) -> list[str]:
        """Processes other than ``identity_of`` that saw the hash_name or DHT key on a circuit
        ``identity_of`` built (as its ORDB, whatever the number of hops) while they had a direct link
        to ``identity_of``: they hold its address and what it asks for or serves at the same time."""
        needles = self._needles(hash_name)
        out = []
        for (proc, circ), datas in self.payloads.items():
            if proc == identity_of:
                continue
            times = self.payload_times[(proc, circ)]
            seen = [t for t, p in zip(times, datas, strict=True) if any(n in p for n in needles)]
            if not seen or self.origin_of(proc, circ) != identity_of:
                continue
            linked = [t for t in seen if self.linked_at(proc, identity_of, t)]
            if linked:
                out.append(f"{proc} (circuit {circ}, directly linked to {identity_of} at t={linked[0]})")
        return out

    def leaks(self, identity_of: str, hash_name: bytes) -> list[str]:
        """The verdict for one end: every process that could tie ``identity_of`` to the hash_name
        (empty: none)."""
        return self.who_links(identity_of, hash_name) + self.linked_ordbs(identity_of, hash_name)
