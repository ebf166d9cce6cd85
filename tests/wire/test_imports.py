"""The wire layer is sans-I/O: importing it pulls in no network, event-loop or database module."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("asyncio", "socket", "ssl", "sqlite3", "selectors", "aiortc", "aiohttp", "aiosqlite")


def test_import_peer_wire_is_sans_io() -> None:
    code = (
        "import sys, peer.wire, peer.wire.cells, peer.wire.relay, peer.wire.linkspec, peer.wire.commands\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
