"""Shared fixtures of the link tests: a real bridge on 127.0.0.1 that records what it saw."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from peer.roles.bridge import Bridge
from tests.links.support import Seen


@pytest.fixture
async def recording_bridge() -> AsyncIterator[tuple[Bridge, Seen]]:
    seen: Seen = []
    bridge = Bridge(recorder=lambda kind, raw: seen.append((kind, raw)))
    await bridge.start("127.0.0.1", 0)
    yield bridge, seen
    await bridge.stop()
