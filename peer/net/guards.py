"""Our guards (DESIGN §5): the stable peers every circuit of ours starts at, kept across restarts."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

from peer.net.keystore import atomic_write_private

GUARDS_FILE = "guards.json"
N_GUARDS = 2


class Guards:
    """N_GUARDS stable peers, linked ones first; persisted in DATA/guards.json (0600)."""

    def __init__(self, data_dir: Path, count: int = N_GUARDS) -> None:
        self._path = data_dir / GUARDS_FILE
        self.count = count
        self.ids: list[bytes] = []
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            self.ids = [bytes.fromhex(h) for h in json.loads(self._path.read_text())["guards"]]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.ids

    def choose(self, stable: set[bytes], linked: Iterable[bytes]) -> bool:
        """Keep ``count`` stable peers as guards: the ones we hold links to first (a guard we
        cannot link to is no first hop, and it would shrink the eligible ORDBs); unlinked ones
        only fill in, and the link manager keeps trying to reach them.  True if they changed."""
        linked_stable = [n for n in linked if n in stable]
        new = [g for g in self.ids if g in linked_stable]
        for n in linked_stable:
            if len(new) >= self.count:
                break
            if n not in new:
                new.append(n)
        for g in [*self.ids, *sorted(stable)]:
            if len(new) >= self.count:
                break
            if g not in new and g in stable:
                new.append(g)
        changed = new != self.ids
        self.ids = new
        if changed:
            data = json.dumps({"guards": [g.hex() for g in self.ids]}).encode()
            atomic_write_private(self._path, data)
        return changed
