"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: at least 2,000 examples per decoder test),
``dev`` (fast local runs) and ``fuzz`` (100,000).  Pick one with
``HYPOTHESIS_PROFILE=fuzz pytest ...``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=100_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
