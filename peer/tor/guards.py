"""The persisted guard set (guard-spec, simplified: a small sampled set used in order).

The first hop of every circuit comes from a short list of guards kept in
``<data_dir>/tor/guards.json`` (mode 0600), so that the relays that see our address change
rarely.  The first listed guard that is still Running, Valid and Guard-flagged in the current
consensus, and compatible with the rest of the path, is used; only when none is usable is a new
one drawn (bandwidth-weighted) from the consensus and appended.  At most ``max_guards`` are kept:
when full, guards absent from the consensus are dropped first, then the oldest.

File format (version 1)::

    {"version": 1, "guards": [{"rsa_id": "<40 hex>", "ed25519_id": "<64 hex>|null", "added": <unix time>}]}
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peer.errors import StorageError, UnknownVersion
from peer.tor.directory import NetworkDirectory, Relay
from peer.tor.errors import NoSuitableRelay
from peer.tor.path import PathBuilder, usable, weighted_choice

GUARDS_FILE = "guards.json"
FORMAT_VERSION = 1
DEFAULT_MAX_GUARDS = 3


@dataclass(frozen=True, slots=True)
class GuardEntry:
    rsa_id: bytes
    ed25519_id: bytes | None
    added: float


class GuardSet:
    """The guard list of one data directory (or in memory when ``path`` is None)."""

    def __init__(self, path: Path | str | None, *, max_guards: int = DEFAULT_MAX_GUARDS) -> None:
        self.path = Path(path) if path is not None else None
        self.max_guards = max_guards
        self.entries: list[GuardEntry] = self._load()

    @classmethod
    def in_data_dir(cls, data_dir: Path | str, **kw: int) -> GuardSet:
        return cls(Path(data_dir) / "tor" / GUARDS_FILE, **kw)

    def _load(self) -> list[GuardEntry]:
        if self.path is None or not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            if doc.get("version") != FORMAT_VERSION:
                raise UnknownVersion(f"guard file version {doc.get('version')!r}")
            return [
                GuardEntry(
                    bytes.fromhex(g["rsa_id"]),
                    bytes.fromhex(g["ed25519_id"]) if g.get("ed25519_id") else None,
                    float(g["added"]),
                )
                for g in doc["guards"]
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(f"guard file {self.path} is unreadable: {type(exc).__name__}") from exc

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {
            "version": FORMAT_VERSION,
            "guards": [
                {
                    "rsa_id": g.rsa_id.hex(),
                    "ed25519_id": g.ed25519_id.hex() if g.ed25519_id else None,
                    "added": g.added,
                }
                for g in self.entries
            ],
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(doc, f, indent=1)
        os.replace(tmp, self.path)

    def choose(
        self,
        directory: NetworkDirectory,
        builder: PathBuilder,
        exclude: Sequence[Relay],
        now: float,
        rng: random.Random,
    ) -> Relay:
        """The guard for a new circuit whose other hops are ``exclude`` (adds one if needed)."""
        for entry in self.entries:
            relay = directory.by_rsa_id(entry.rsa_id)
            if relay is None or not usable(relay) or "Guard" not in relay.flags:
                continue
            if entry.ed25519_id is not None and relay.ed25519_id not in (None, entry.ed25519_id):
                continue  # same RSA id, other Ed25519 identity: not the guard we chose
            if builder.compatible(relay, exclude):
                return relay
        known = {e.rsa_id for e in self.entries}
        candidates = [
            r
            for r in builder.relays
            if "Guard" in r.flags and r.rsa_id not in known and builder.compatible(r, exclude)
        ]
        if not candidates:
            rule = "" if builder.allow_same_subnet else " (same relay or same /16)"
            raise NoSuitableRelay(f"no usable guard: every Guard-flagged relay conflicts with the path{rule}")
        relay = weighted_choice(candidates, rng)
        self._add(GuardEntry(relay.rsa_id, relay.ed25519_id, now), directory)
        self.save()
        return relay

    def _add(self, entry: GuardEntry, directory: NetworkDirectory) -> None:
        if len(self.entries) >= self.max_guards:  # drop unlisted guards first, then the oldest
            self.entries = [e for e in self.entries if directory.by_rsa_id(e.rsa_id) is not None]
            while self.entries and len(self.entries) >= self.max_guards:
                self.entries.pop(0)
        self.entries.append(entry)


def select_path(
    directory: NetworkDirectory,
    port: int,
    *,
    guards: GuardSet,
    rng: random.Random,
    now: float,
    hops: int = 3,
    allow_same_subnet: bool = False,
) -> tuple[Relay, ...]:
    """A path ``(guard, middles..., exit)`` to ``port`` from a verified directory (see peer.tor.path)."""
    builder = PathBuilder(directory.relays, rng, allow_same_subnet=allow_same_subnet)
    return builder.build(
        port, hops=hops, guard_chooser=lambda exclude: guards.choose(directory, builder, exclude, now, rng)
    )
