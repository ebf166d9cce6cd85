"""TLS links between our peers, and the slow rotation of links, in one process over real sockets.

- Peers that accept TLS (``tls_port``) list a ``tls`` endpoint in their records; the others link
  to them over TLS with no signalling at all, and a 3-hop circuit carries a stream intact.
- A man in the middle that terminates TLS with its own certificate is refused at the link
  handshake, with a clear reason, and no link or circuit uses it.
- Links rotate slowly: a non-guard link gives way to another peer; guard links stay.
- A full peer says so (DB_LINK_CLOSING) after the TLS handshake, and the dialer backs off; a
  stopping peer says so too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from dht.records import Route
from peer.errors import LinkClosed
from peer.net.neighbours import LinkRefused
from peer.node import Peer, PeerConfig
from peer.proto.exitpolicy import ExitPolicy
from peer.roles.bridge import Bridge
from peer.transport.tls import TlsLink, connect_tls, serve_tls
from tests.links.hosts import PassivePeer
from tests.links.support import Seen, wait_for

pytestmark = pytest.mark.e2e


async def start(
    tmp: Path,
    url: str,
    n: int,
    base: int,
    stable: tuple[int, ...] = (),
    per_peer: dict[int, dict[str, object]] | None = None,
    **kw: object,
) -> list[Peer]:
    peers = []
    for i in range(n):
        extra = dict(kw) | (per_peer or {}).get(i, {})
        if i in stable:
            extra["stable"] = True
        if i == n - 1 and "exit_policy" not in kw:
            extra["exit_policy"] = ExitPolicy.parse("accept 127.0.0.1:*")
        cfg = PeerConfig(data_dir=tmp / f"p{i}", host=f"127.{base + i}.0.1", bridges=[url], **extra)  # type: ignore[arg-type]
        peers.append(await Peer.start(cfg))
    return peers


async def stop(peers: list[Peer]) -> None:
    for p in peers:
        await p.stop()


async def echo_server() -> tuple[asyncio.Server, int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_tls_links_need_no_signalling_and_carry_a_circuit(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    b, seen = recording_bridge
    peers = await start(tmp_path, b.url, 4, 70, stable=(0, 1, 2, 3), tls_port=0)
    server, port = await echo_server()
    try:
        assert all(any(t == "tls" for t, _a in p.record().route.endpoints) for p in peers)
        assert await wait_for(lambda: all(len(p.links.neighbours) == 3 for p in peers), 40)
        transports = {n.transport for p in peers for n in p.links.neighbours.values()}
        assert transports == {"tls"}, transports
        assert not [k for k, _raw in seen if "INTRODUCE" in k], "TLS links went through bridge signalling"
        stream = None
        for _ in range(30):  # records list neighbours once peers republish after their links form
            try:
                stream = await peers[0].circuits.open_stream("127.0.0.1", port)
                break
            except Exception:
                await asyncio.sleep(0.5)
        assert stream is not None, "no stream through TLS links"
        path = peers[0].circuits.paths[stream.circ]
        assert len(path) == 3 and peers[0].keys.node_id not in path
        data = os.urandom(2_000_000)
        got = bytearray()

        async def reader() -> None:
            while len(got) < len(data):
                chunk = await stream.read(65536)
                assert chunk, "the stream ended early"
                got.extend(chunk)

        task = asyncio.create_task(reader())
        await stream.write(data)
        await asyncio.wait_for(task, 60)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        await stream.close()
        links = peers[0].status()["links"]
        assert isinstance(links, list) and links[0]["transport"] == "tls"
    finally:
        server.close()
        await stop(peers)


async def test_a_tls_man_in_the_middle_is_refused(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    b, _seen = recording_bridge
    peers = await start(tmp_path, b.url, 2, 80, max_links=1)
    a, target = peers
    await target.links.listen_tls("127.81.0.1", 0)
    real = target.links.tls_server
    assert real is not None
    spliced: list[int] = []

    async def splice(link: TlsLink) -> None:  # terminates TLS with its own certificate, forwards the rest
        inner = await connect_tls(*real.address, timeout=10)
        spliced.append(1)

        async def pump(src: TlsLink, dst: TlsLink) -> None:
            with contextlib.suppress(Exception):
                while True:
                    await dst.send(await src.recv())
            await dst.close()

        await asyncio.gather(pump(link, inner), pump(inner, link))

    mitm = await serve_tls("127.82.0.1", 0, splice)
    try:
        rec = target.record()
        forged = dataclasses.replace(rec, route=Route((("tls", f"127.82.0.1:{mitm.address[1]}"),), ()))
        with pytest.raises(LinkRefused, match="another link certificate"):
            await a.links.connect(forged, None)
        assert spliced, "the connection never went through the man in the middle"
        assert target.keys.node_id not in a.links.neighbours
        assert not a.node.circuits
        # the honest endpoint works
        await a.links.connect(rec, None)
        assert a.links.neighbours[target.keys.node_id].transport == "tls"
    finally:
        await mitm.close()
        await stop(peers)


async def test_links_rotate_slowly_and_guards_stay(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    b, _seen = recording_bridge
    peers = await start(
        tmp_path,
        b.url,
        6,
        90,
        stable=(1, 2),
        # the guards have room for every peer that picks them (stable peers serve many): each
        # keeps the links of the peers that told it it is their guard
        per_peer={1: {"max_links": 10}, 2: {"max_links": 10}},
        max_links=3,
        rotate_every=1.5,
        exit_policy=ExitPolicy.reject_all(),
    )
    try:
        p0 = peers[0]  # ephemeral; peers 1 and 2 are stable and become its guards
        assert await wait_for(lambda: len(p0.links.neighbours) >= 3 and len(p0.guards) == 2, 40)
        guard_links = {g: p0.links.neighbours[g].chan for g in p0.guards if g in p0.links.neighbours}
        assert guard_links, "p0 has no link to its guards"
        by_id = {p.keys.node_id: p for p in peers}
        me = p0.keys.node_id
        # each guard was told (DB_LINK_KEEP) that its link to p0 is a guard link: it keeps it too
        assert await wait_for(lambda: all(me in by_id[g].links.kept_ids() for g in guard_links), 10)

        def others() -> dict[bytes, object]:
            return {n: x.chan for n, x in p0.links.neighbours.items() if n not in guard_links}

        others_before = others()

        def moved() -> bool:
            # a non-guard link of before is gone (not merely reported dropped), and another link
            # took its place (a rotation may first drop a link made after the snapshot: wait on)
            now = others()
            return bool(others_before.items() - now.items()) and bool(now.items() - others_before.items())

        rotated = await wait_for(lambda: moved() and len(p0.links.neighbours) >= 3, 90)
        assert rotated, (others_before, others(), p0.links.dropped, p0.links.refused, p0.status()["links"])
        assert any(d.startswith("rotation") or "rotates" in d for d in p0.links.dropped), p0.links.dropped
        # the guard links are the same links as before (same channels); the others moved
        assert {
            g: p0.links.neighbours[g].chan for g in guard_links if g in p0.links.neighbours
        } == guard_links
        print(
            f"\nnon-guard neighbours before {len(others_before)}, after {len(others())}, drops {p0.links.dropped}"
        )
    finally:
        await stop(peers)


async def test_silent_tls_connections_neither_fill_k_nor_pile_up(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    b, _seen = recording_bridge
    peers = await start(tmp_path, b.url, 2, 84, max_links=1)
    a, target = peers
    await target.links.listen_tls("127.85.0.1", 0)
    assert target.links.tls_server is not None
    addr = target.links.tls_server.address
    silent = [await connect_tls(*addr, timeout=10) for _ in range(2)]  # TLS up, no link handshake
    try:
        assert await wait_for(lambda: target.links._accepting_tls == 2, 10)
        extra = await connect_tls(*addr, timeout=10)  # beyond 2K pending handshakes: closed at once
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(extra.recv(), 10)
        assert target.links.count == 0  # pending handshakes are not links: they do not fill K
        for s in silent:  # a peer that goes away mid-handshake frees its place at once
            await s.close()
        assert await wait_for(lambda: target.links._accepting_tls == 0, 10)
        await a.links.connect(target.record(), None)  # a real peer gets the one link K allows
        assert target.keys.node_id in a.links.neighbours
    finally:
        for s in silent:
            await s.close()
        await stop(peers)


async def test_a_full_tls_peer_says_so_and_the_dialer_backs_off(
    tmp_path: Path, recording_bridge: tuple[Bridge, Seen]
) -> None:
    b, _seen = recording_bridge
    configs = [
        PeerConfig(data_dir=tmp_path / f"f{i}", host=f"127.{88 + i}.0.1", bridges=[b.url], max_links=1)
        for i in range(3)
    ]
    a, c, target = [await PassivePeer.start(cfg) for cfg in configs]  # they open no links themselves
    try:
        await target.links.listen_tls("127.90.0.1", 0)
        await a.links.connect(target.record(), None)  # fills the target's one link
        assert await wait_for(lambda: target.links.count == 1, 10)
        target.links.guards = set()  # c is no guard of the target's (a guard is let in over K)
        await c.links.connect(target.record(), None)  # TLS and the handshake succeed; then: full
        tid = target.keys.node_id
        assert await wait_for(lambda: tid not in c.links.neighbours, 10)
        assert "the peer holds its maximum of links" in c.links.refused
        assert not c.links.may_try(tid)  # backed off because the target said it is full
        assert a.keys.node_id in target.links.neighbours and target.links.count == 1
        await target.stop()  # a stopping peer says so too: a backs off instead of redialling
        assert await wait_for(lambda: tid not in a.links.neighbours, 10)
        assert "the peer is stopping" in a.links.dropped and not a.links.may_try(tid)
    finally:
        for p in (a, c, target):
            await p.stop()
