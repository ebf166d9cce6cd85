"""The protocol core is sans-I/O: importing it loads no asyncio, socket, ssl or sqlite."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "peer.wire",
    "peer.wire.cells",
    "peer.wire.relay",
    "peer.wire.linkspec",
    "peer.crypto",
    "peer.crypto.ntor",
    "peer.crypto.relaycrypto",
    "peer.crypto.cert",
    "peer.proto.channel",
    "peer.proto.node",
    "peer.proto.origin",
    "peer.proto.forwarding",
    "peer.proto.streams",
    "peer.proto.flow",
    "peer.proto.state",
    "peer.proto.violation",
    "peer.proto.circuit",
    "peer.proto.exitpolicy",
]
FORBIDDEN = ["asyncio", "socket", "ssl", "sqlite3", "_sqlite3", "aiortc", "aiohttp", "selectors"]


def test_core_imports_no_io_modules() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the core pulled in: {out.stdout.strip()}"
