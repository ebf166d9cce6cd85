"""The private tor network fixture (tests/tornet.py), one per test session.

Skipped when Debian's ``tor`` is not installed, unless ``PEERSM_REQUIRE_TOR=1`` (set by CI), in
which case its absence is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.tornet import TorNet, tor_available


@pytest.fixture(scope="session")
def tornet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorNet]:
    if not tor_available():
        if os.environ.get("PEERSM_REQUIRE_TOR") == "1":
            pytest.fail("tor is not installed (apt-get install -y tor) and PEERSM_REQUIRE_TOR=1")
        pytest.skip("tor is not installed (apt-get install -y tor)")
    net = TorNet(tmp_path_factory.mktemp("tornet"))
    net.start()
    try:
        yield net
    finally:
        net.stop()
