"""`peersm get`'s progress line says what the download waits for before the first piece."""

from __future__ import annotations

import time

from peer.app.share import _bar


def test_the_line_names_the_wait_then_shows_progress() -> None:
    t0 = time.monotonic() - 12
    searching = _bar({"state": "searching", "total": 0, "circuits": 4}, t0)
    assert searching.startswith("searching: no ORDB has it yet") and "12 s" in searching
    assert "4 circuits" in searching
    assert _bar({"state": "connecting", "circuits": 0}, t0).startswith("building circuits to ORDBs")
    line = _bar({"state": "downloading", "have": 5, "total": 10, "size": 10_000_000, "bytes": 5_000_000}, t0)
    assert "50.0%" in line and "5.0/10.0 MB" in line and "ETA" in line
