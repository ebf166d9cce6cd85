"""Issue 4 "Memory" acceptance (DESIGN §4 "Links", §6 flow control).

1. A ``peersm up --links 50`` process whose 50 neighbours are hosted by 5 helper processes
   (``tests.links.hosts``, 10 identities each, one /16 per identity) stays <= 120 MiB RSS
   once idle after the handshakes.  The same test then moves data over 10 of its links
   (5 circuits through it) and prints the extra RSS per loaded link; that figure is
   reported, not asserted (speed and load figures belong to benchmarks/).
2. A neighbour that stops reading its link cannot make a peer's memory grow without
   bound: OP -> relay -> exit over real WebRTC links, the exit's reader paused (a test
   double around its link); the OP keeps writing, its SENDME windows run out, and the
   bytes queued at the OP and at the relay stop growing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.app.apiclient import ApiClient
from peer.errors import PeerError
from peer.net.driver import NodeDriver
from peer.net.handshake import PeerKeys, peer_handshake
from peer.proto.channel import LivenessConfig
from peer.proto.circuit import SEND_HIGH_WATER, HopSpec, OriginCircuit
from peer.proto.exitpolicy import ExitPolicy
from peer.proto.flow import STREAMWINDOW_START
from peer.proto.node import NodeConfig, OnionNode
from peer.transport.webrtc import WebRtcConfig, WebRtcLink, accept_offer, create_offer

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
RSS_LIMIT = 120 * MIB
LINKS = 50
HOST_PROCS = 5
PER_PROC = LINKS // HOST_PROCS
LOADED_CIRCUITS = 5  # each crosses two of the peer's links: 10 links moving data
RELAY_PAYLOAD = 498  # data bytes in one RELAY_DATA cell


# ---- helpers for the process test ----------------------------------------------------------------


def first_line(p: subprocess.Popen[bytes], what: str, timeout: float) -> str:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(p.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        buf += p.stdout.read() or b""
        if b"\n" in buf:
            os.set_blocking(p.stdout.fileno(), True)
            return buf.split(b"\n", 1)[0].decode()
        if p.poll() is not None:
            raise AssertionError(f"{what} exited with status {p.returncode} before it was ready")
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start within {timeout:.0f} s")


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class Sink:
    """A TCP sink on 127.0.0.1 that reads and drops everything, counting bytes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                with self._lock:
                    self.received += len(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):
        if p.stdin is not None:
            p.stdin.close()
        p.terminate()
    for p in reversed(started):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def spawn(procs: list[subprocess.Popen[bytes]], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        p = subprocess.Popen(
            [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    procs.append(p)
    return p


def wait_links(data: Path, want: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            st = ApiClient.from_data_dir(data, timeout=5).get("/api/status")
        except PeerError:
            st = {}
        if len(st.get("links") or []) >= want:
            return st
        time.sleep(0.5)
    raise AssertionError(f"the peer holds {len(st.get('links') or [])} links, not {want}: {st}")


def test_peer_with_50_links_stays_under_120_mib(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    bridge = spawn(
        procs, ["-m", "peer.app.cli", "bridge", "--listen", "127.0.0.1:0"], tmp_path / "bridge.log"
    )
    url = first_line(bridge, "the bridge", 30)
    hosts = []
    for i in range(HOST_PROCS):
        args = [
            "-m",
            "tests.links.hosts",
            "--bridge",
            url,
            "--count",
            str(PER_PROC),
            "--base",
            f"127.{101 + i * PER_PROC}.0.1",
            "--data",
            str(tmp_path / f"hosts{i}"),
            "--max-links",
            "1",
            "--exit-policy",
            "accept 127.0.0.1:*",
        ]
        hosts.append(spawn(procs, args, tmp_path / f"hosts{i}.log"))
    t0 = time.monotonic()
    node_ids = [json.loads(first_line(h, "a hosts process", 90))["node_ids"] for h in hosts]
    t_hosts = time.monotonic() - t0
    assert sum(len(ids) for ids in node_ids) == LINKS
    data = tmp_path / "put"
    put = spawn(
        procs,
        [
            "-m",
            "peer.app.cli",
            "up",
            "--links",
            str(LINKS),
            "--bridge",
            url,
            "--listen",
            "127.200.0.1",
            "--data",
            str(data),
        ],
        tmp_path / "put.log",
    )
    put_id = json.loads(first_line(put, "the peer under test", 60))["node_id"]
    base = rss(put.pid)  # up, no link yet (link maintenance starts a second later)
    st = wait_links(data, LINKS, 120)
    t_links = time.monotonic() - t0 - t_hosts
    linked = {str(n["peer"]) for n in st["links"]}
    assert linked == {i[:16] for ids in node_ids for i in ids}  # exactly the 50 hosted identities
    time.sleep(3.0)  # idle after the handshakes
    idle = rss(put.pid)
    print(
        f"\npeer with {LINKS} idle WebRTC links: VmRSS {idle / MIB:.1f} MiB (limit {RSS_LIMIT / MIB:.0f}); "
        f"{base / MIB:.1f} MiB before any link, {(idle - base) / LINKS / 1024:.0f} KiB per idle link "
        f"(hosts up in {t_hosts:.0f} s, {LINKS} links in {t_links:.0f} s)"
    )
    assert idle <= RSS_LIMIT

    # under load: hosted peers of process 0 push streams through the peer to exits of process 1
    sink = Sink()
    try:
        cmd = {
            "cmd": "load",
            "via": put_id,
            "exits": node_ids[1][:LOADED_CIRCUITS],
            "port": sink.port,
            "seconds": 6.0,
        }
        h0 = hosts[0]
        assert h0.stdin is not None and h0.stdout is not None
        h0.stdin.write((json.dumps(cmd) + "\n").encode())
        h0.stdin.flush()
        peak = idle
        os.set_blocking(h0.stdout.fileno(), False)
        buf = b""
        deadline = time.monotonic() + 60
        while b"\n" not in buf and time.monotonic() < deadline:
            peak = max(peak, rss(put.pid))
            buf += h0.stdout.read() or b""
            time.sleep(0.2)
        reply = json.loads(buf.split(b"\n", 1)[0])
        assert "sent" in reply, reply
        sent = sum(reply["sent"])
        assert sent > 0 and len(reply["sent"]) == LOADED_CIRCUITS
        for _ in range(50):  # the tail of the streams still in flight
            if sink.received >= sent:
                break
            time.sleep(0.1)
        assert sink.received == sent, (sink.received, sent)
    finally:
        sink.close()
    loaded_links = 2 * LOADED_CIRCUITS
    print(
        f"under load ({loaded_links} links moving {sent / 1e6:.1f} MB in 6 s): peak VmRSS "
        f"{peak / MIB:.1f} MiB, {(peak - idle) / loaded_links / 1024:.0f} KiB extra per loaded link"
    )


# ---- a neighbour that stops reading -----------------------------------------------------------


class StallingLink:
    """Test double: a Link whose reader can be paused (the neighbour stops reading)."""

    def __init__(self, inner: WebRtcLink) -> None:
        self.inner = inner
        self.framed = inner.framed
        self.server_cert_only = inner.server_cert_only
        self.initiator = inner.initiator
        self.reading = asyncio.Event()
        self.reading.set()

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        return self.inner.peer_cert_fingerprint

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        return self.inner.local_cert_fingerprint

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.inner.remote_address

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    async def recv(self) -> bytes:
        await self.reading.wait()
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()


@dataclass(eq=False)
class Node:
    keys: PeerKeys
    node: OnionNode
    driver: NodeDriver
    config: WebRtcConfig

    @property
    def hop(self) -> HopSpec:
        return HopSpec(self.keys.node_id, self.keys.ntor.public, self.keys.link_specs())


def make_node(host: str, exit_policy: ExitPolicy | None = None) -> Node:
    keys = PeerKeys.generate(os.urandom)
    node = OnionNode(
        node_id=keys.node_id,
        ntor_keys={keys.ntor.public: keys.ntor},
        randbytes=os.urandom,
        config=NodeConfig(exit_policy=exit_policy or ExitPolicy.reject_all(), auto_consume=False),
    )
    return Node(keys, node, NodeDriver(node), WebRtcConfig.loopback(host))


# long dead_after: the paused side must not declare the link dead during the test
LIVENESS = LivenessConfig(keepalive=1.0, dead_after=120.0)


async def link(
    a: Node, b: Node, *, stall_b: bool = False
) -> tuple[int, int, WebRtcLink, StallingLink | None]:
    pending, offer = await create_offer(a.config)
    lb, answer = await accept_offer(offer, b.config)
    la, _ = await asyncio.gather(pending.complete(answer, 20), lb.wait_open(20))
    end_b = StallingLink(lb) if stall_b else lb
    ca = a.driver.add_link(la, peer_handshake(a.keys, la, time.time), liveness=LIVENESS)
    cb = b.driver.add_link(end_b, peer_handshake(b.keys, end_b, time.time), liveness=LIVENESS)
    await asyncio.gather(a.driver.wait_open(ca, 20), b.driver.wait_open(cb, 20))
    return ca, cb, la, end_b if isinstance(end_b, StallingLink) else None


async def sink_server() -> tuple[asyncio.Server, list[int]]:
    got = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            got[0] += len(data)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), got


async def test_a_neighbour_that_stops_reading_cannot_grow_our_memory() -> None:
    server, got = await sink_server()
    port = server.sockets[0].getsockname()[1]
    op, relay, exit_ = (
        make_node("127.81.0.1"),
        make_node("127.82.0.1"),
        make_node("127.83.0.1", ExitPolicy.parse("accept 127.0.0.1:*")),
    )
    try:
        c_op, _c_relay_in, link_op, _ = await link(op, relay)
        c_relay_out, _c_exit, link_relay, stalling = await link(relay, exit_, stall_b=True)
        assert stalling is not None
        circ = await op.driver.build_circuit(c_op, [relay.hop, exit_.hop])
        stream = await op.driver.open_stream(circ, "127.0.0.1", port)
        warmup = 1_000_000
        await stream.write(bytes(warmup))
        for _ in range(200):  # the path works: the warm-up reaches the sink
            if got[0] >= warmup:
                break
            await asyncio.sleep(0.05)
        assert got[0] == warmup

        stalling.reading.clear()  # the exit stops reading its link from the relay
        accepted = [0]

        async def push() -> None:
            chunk = bytes(64 * 1024)
            while True:
                await stream.write(chunk)
                accepted[0] += len(chunk)

        pusher = asyncio.get_running_loop().create_task(push())

        origin = op.node.circuits[circ]
        assert isinstance(origin, OriginCircuit)
        op_stream = origin.hops[-1].streams[stream.stream_id]

        def queued() -> tuple[int, int, int]:
            """Bytes held at the OP (stream buffer, channel, WebRTC send buffer), at the relay
            (channel and send buffer toward the exit), and accepted from the writer."""
            at_op = (
                len(op_stream.sendbuf) + op.node.channels[c_op].pending_bytes + link_op.stats().send_buffered
            )
            at_relay = relay.node.channels[c_relay_out].pending_bytes + link_relay.stats().send_buffered
            return at_op, at_relay, accepted[0]

        samples = [queued()]
        stable = 0
        for _ in range(150):  # until nothing has moved for 1 s (or 15 s pass)
            await asyncio.sleep(0.1)
            samples.append(queued())
            stable = stable + 1 if samples[-1][2] == samples[-2][2] else 0
            if stable >= 10:
                break
        assert stable >= 10, f"the OP kept accepting data: {samples[-5:]}"
        assert not pusher.done()  # the writer is blocked, not failed
        await asyncio.sleep(1.5)  # pushing "for a while" longer changes nothing
        at_op, at_relay, total = queued()
        print(
            f"\nexit stopped reading: the OP accepted {total} bytes, then stopped; queued at the OP "
            f"{at_op} B, at the relay {at_relay} B, unread at the exit {stalling.inner.stats().recv_queued} B"
        )
        assert total == samples[-1][2]
        assert at_op <= samples[-1][0]  # nothing more piled up at the OP while it kept pushing
        assert op_stream.package_window == 0  # the SENDME window stopped the sender
        # what the OP took in and did not deliver is bounded by the stream window plus its
        # send buffer (SEND_HIGH_WATER) and one write: it does not grow with time
        bound = STREAMWINDOW_START * RELAY_PAYLOAD + SEND_HIGH_WATER + 64 * 1024
        assert total <= bound
        assert max(s[0] + s[1] for s in samples) <= bound and at_op + at_relay <= bound

        stalling.reading.set()  # it reads again: everything queued is delivered, nothing lost
        for _ in range(300):
            if got[0] >= warmup + total:
                break
            await asyncio.sleep(0.05)
        assert got[0] >= warmup + total
        pusher.cancel()
    finally:
        server.close()
        for n in (op, relay, exit_):
            await n.driver.close()
