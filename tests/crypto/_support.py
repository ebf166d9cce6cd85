"""Helpers shared by the crypto tests: vector loading and replayable randomness."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load_vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def fixed_randbytes(*chunks: bytes) -> Callable[[int], bytes]:
    """A ``randbytes`` that hands out ``chunks`` in order and fails if asked for anything else."""
    queue = list(chunks)

    def randbytes(n: int) -> bytes:
        assert queue, "fixed_randbytes exhausted"
        chunk = queue.pop(0)
        assert len(chunk) == n, f"asked for {n} bytes, next fixed chunk has {len(chunk)}"
        return chunk

    return randbytes
