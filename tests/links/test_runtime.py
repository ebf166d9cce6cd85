"""The peer runtime in one process over real WebRTC links and a real bridge on 127.0.0.1.

A malicious bridge that tampers with relayed offers gets the link refused with a clear
error and no circuit uses it; an honest bridge never sees an ICE candidate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peer.errors import PathError
from peer.node import Peer, PeerConfig
from peer.roles.bridge import Bridge
from peer.wire.cells import Introduce
from tests.links.support import Seen, wait_for

pytestmark = pytest.mark.e2e
#: How a peer refuses an offer whose seal does not open (peer/net/neighbours.py).
TAMPERED = "an offer that does not open"
#: Bridge messages that carry signed peer records (routes, with addresses, are public by design).
RECORD_KINDS = {"in:DB_REGISTER", "out:DB_FOUND_PEER"}


class TamperingBridge(Bridge):
    """A test double of a malicious bridge: flips one byte of every relayed blob."""

    def _on_introduce(self, conn, msg: Introduce) -> None:  # type: ignore[no-untyped-def]
        blob = bytearray(msg.blob)
        blob[len(blob) // 2] ^= 0x01
        super()._on_introduce(conn, Introduce(msg.target, bytes(blob)))


async def start_peers(tmp: Path, url: str, n: int, **kw: object) -> list[Peer]:
    peers = []
    for i in range(n):
        cfg = PeerConfig(data_dir=tmp / f"p{i}", host=f"127.{60 + i}.0.1", bridges=[url], stable=True, **kw)  # type: ignore[arg-type]
        peers.append(await Peer.start(cfg))
    return peers


async def test_tampered_offer_is_refused_and_no_circuit_uses_it(tmp_path: Path) -> None:
    bridge = TamperingBridge()
    await bridge.start("127.0.0.1", 0)
    peers = await start_peers(tmp_path, bridge.url, 2, connect_timeout=3.0)
    try:
        # the peer that gets the tampered offer refuses it as such (the offerer merely times out)
        refused = await wait_for(
            lambda: any(r.startswith(TAMPERED) for p in peers for r in p.links.refused), 20
        )
        assert refused, f"the tampered offer was not refused: {[p.links.refused for p in peers]}"
        assert all(not p.links.neighbours for p in peers)
        assert all(not p.node.circuits for p in peers)
        with pytest.raises(PathError, match=r"guard|path"):
            await peers[0].circuits.build_circuit(hops=1, want_exit=False)
    finally:
        for p in peers:
            await p.stop()
        await bridge.stop()


async def test_links_form_and_the_bridge_sees_no_ice_candidate(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    bridge, log = recording_bridge
    peers = await start_peers(tmp_path, bridge.url, 3)
    try:
        assert await wait_for(lambda: all(len(p.links.neighbours) == 2 for p in peers), 30)
        circ, path = await build_when_ready(peers[0], hops=2)
        assert len(path) == 2 and circ in peers[0].node.circuits
        seen = [raw for _kind, raw in log]
        assert seen, "the recorder saw nothing"
        blob = b"".join(seen)
        assert b"candidate" not in blob and b"a=fingerprint" not in blob
        for i in range(3):  # a peer's address reaches the bridge in its signed record only
            address = f"127.{60 + i}.0.1".encode()
            assert any(address in raw for kind, raw in log if kind == "in:DB_REGISTER")
            where = {kind for kind, raw in log if address in raw}
            assert where <= RECORD_KINDS, f"127.{60 + i}.0.1 in {sorted(where - RECORD_KINDS)}"
    finally:
        for p in peers:
            await p.stop()


async def build_when_ready(peer: Peer, hops: int) -> tuple[int, list[object]]:
    """Records list neighbours only once peers republish after their links form: retry briefly."""
    for _ in range(100):
        try:
            circ, path = await peer.circuits.build_circuit(hops=hops, want_exit=False)
            return circ, list(path)
        except PathError:
            await asyncio.sleep(0.3)
    circ, path = await peer.circuits.build_circuit(hops=hops, want_exit=False)
    return circ, list(path)
