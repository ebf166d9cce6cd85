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


def test_public_names_are_exported() -> None:
    import peer.wire

    for name in peer.wire.__all__:
        assert hasattr(peer.wire, name), name
    for name in ("Cell", "pull_cell", "RelayCell", "peek_header", "Extend2", "LinkSpecPeerNodeId"):
        assert name in peer.wire.__all__
