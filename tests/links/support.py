"""Helpers of the link tests: polling with a deadline, and what a recording bridge saw."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: What a recording bridge saw: (kind, raw message) pairs, kind "in:<COMMAND>" or "out:<COMMAND>".
Seen = list[tuple[str, bytes]]


async def wait_for(pred: Callable[[], object], timeout: float) -> bool:
    """True as soon as ``pred()`` is true; after ``timeout`` seconds, its last value."""
    for _ in range(int(timeout / 0.1)):
        if pred():
            return True
        await asyncio.sleep(0.1)
    return bool(pred())
