"""Fixtures for the bridge tests: a bridge on 127.0.0.1 port 0 with a fixed wall clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from peer.roles.bridge import Bridge

from .helpers import NOW


@pytest.fixture
def rng() -> random.Random:
    return random.Random(4)


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    b = Bridge(wall_clock=lambda: NOW)
    await b.start("127.0.0.1", 0)
    try:
        yield b
    finally:
        await b.stop()
