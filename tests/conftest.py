"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: at least 2,000 examples per decoder test),
``dev`` (fast local runs) and ``fuzz`` (100,000).  Pick one with
``HYPOTHESIS_PROFILE=fuzz pytest ...``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from storage.chunkstore import ChunkStore

settings.register_profile(
    "ci", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=100_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: needs_tool marker and CI's skip rules (PEERSM_REQUIRE_TOR, PEERSM_FAIL_ON_SKIP); pytester for its tests.
pytest_plugins = ("tests.skippolicy", "pytester")

#: End-to-end tests that never get a rerun: a leak that shows once is a leak.
NO_RERUN = {"test_anonymity.py"}
E2E_DIR = Path(__file__).parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: CI's split (.ci/run) relies on the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is an ``e2e`` test.  Multi-process end-to-end tests on a shared
    2-core machine can lose a race that has nothing to do with what they check; they get one rerun,
    which pytest reports (an ``R`` in the progress line and "N rerun" in the summary), so a flaky test
    stays visible. Unit, property and protocol tests get none."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("e2e") is not None and item.path.name not in NO_RERUN:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    """A real SQLite chunk store in the test's temporary directory."""
    s = await ChunkStore.open(tmp_path / "store.db")
    yield s
    await s.close()
