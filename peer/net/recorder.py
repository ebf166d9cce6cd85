"""The anonymity test recorder (DESIGN §11): what one process saw, as JSON lines.

Switched on only by an explicit test flag (``peersm up --test-record FILE``, ``peersm bridge
--test-record FILE``), never by default: a log of who fetched what is a seizure risk.  It
records, at the process's boundaries: its neighbours (NodeID and observed address), every
circuit it is part of with the neighbour before and after it, every relay payload it
decrypted (recognised at this node), the DHT operations it made, and a bridge's traffic.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "a", buffering=1)

    def __call__(self, record: dict[str, Any]) -> None:
        record = {"t": round(time.time(), 3), "pid": os.getpid(), **record}
        self._f.write(json.dumps(record, default=_hex) + "\n")

    def close(self) -> None:
        self._f.close()


def _hex(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def load(path: Path) -> list[dict[str, Any]]:
    """Every record of a file (a test joins the files of all processes)."""
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out
