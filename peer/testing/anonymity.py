"""Joining the test recorder's files (DESIGN §11): who saw what, and who could link what.

Used by the anonymity tests and by ``peersm demo`` on its own throwaway testnet only.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from dht.keys import provider_key
from peer.net.recorder import load


class Views:
    """Every process's records, indexed: NodeIDs, circuits with their previous hop, payloads."""

    def __init__(self, d: Path) -> None:
        self.node_of: dict[str, str] = {}  # process name -> its NodeID (hex)
        self.prev: dict[tuple[str, int], str] = {}  # (process, circuit) -> previous hop's NodeID
        self.prev_circ_id: dict[tuple[str, int], int] = {}  # (process, circuit) -> id on the link from prev
        self.origins: dict[str, set[tuple[Any, Any]]] = defaultdict(set)  # process -> {(first hop, circ id)}
        self.payloads: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        self.dht: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.bridge: list[str] = []
        for f in sorted(d.glob("*.record")):
            name = f.stem
            for r in load(f):
                k = r["kind"]
                if k == "self":
                    self.node_of[name] = r["node_id"]
                elif k == "neighbour":
                    self.neighbours[name].add(r["node_id"])
                elif k == "circuit":
                    self.prev[(name, r["circ"])] = r["prev"]
                    if r.get("prev_circ_id") is not None:
                        self.prev_circ_id[(name, r["circ"])] = r["prev_circ_id"]
                    if r["prev"] == "self":
                        self.origins[name].add((r["next"], r.get("next_circ_id")))
                elif k == "payload":
                    self.payloads[(name, r["circ"])].append(r["data"])
                elif k == "dht":
                    self.dht[name].append(r)
                elif k == "bridge":
                    self.bridge.append(r["data"])

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
