"""Our Tor client against C tor's own client on the private tor network (issue 3 "Benchmark").

One run starts the private network of ``tests/tornet.py`` (3 authorities, 2 middles, 1 exit
and one C tor client) in a temporary directory, a plain HTTP server on 127.0.0.1 serving one
random file, and measures, in the same run:

* **throughput**: our ``TorClient`` (the ``peersm tor get`` path: a 3-hop circuit, BEGIN, an
  HTTP/1.0 GET read with ``read_http_response``) against C tor's client fetching the same file
  through its SocksPort (SOCKS5 CONNECT with the host name, as ``curl --socks5-hostname``).
  Rounds alternate; each is timed from stream open (BEGIN / SOCKS request) to the last byte;
  our circuit is built before the clock starts, fresh each round (C tor uses its prebuilt one).
  Median MB/s and the ratio ours/tor;
* **circuit build time**: ``TorClient.build_circuit`` on a path from ``choose_path`` (a fresh
  circuit each round) against C tor building *the same path* with EXTENDCIRCUIT on its
  ControlPort (``TorNet.ctor_build_circuit``).  Median and p90 in ms and the ratio ours/tor.
  One warm-up build each opens the channels first (a TLS link handshake is not a circuit).

C tor's client negotiates congestion control (proposal 324, Vegas, on by default since 0.4.7;
the run checks it in the client's ``CIRC_BW`` events); ours uses the fixed windows of tor-spec
§7.3-7.4 (circuit 1000/100, stream 500/50 cells).  To show what limits ours, the run also
measures: the CPU share of this process and of the whole machine during each fetch; the idle
round trip (BEGIN -> CONNECTED); for every stream SENDME we send, whether every cell the window
allowed had already arrived (the window ran dry and the exit sat idle) and how long until the
last cell that SENDME releases arrives (the time one 500-cell window takes through the loaded
path); and two fetches at once on two circuits (twice the windows): if their aggregate is well
above one fetch, a single stream is window-bound.  ``--profile`` adds a cProfile of one fetch.

Run: ``python -m benchmarks.tor_vs_ctor [--quick] [--json] [--profile]`` (needs Debian's
``tor``; exits 2 when it is missing).  Everything listens on and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import cProfile
import hashlib
import io
import json
import math
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.errors import PeerError
from peer.proto import events as ev
from peer.proto.flow import STREAMWINDOW_INCREMENT, STREAMWINDOW_START
from peer.tor.client import TorClient, read_http_response
from peer.tor.directory import AuthoritySpec, DirectoryClient
from peer.tor.guards import GuardSet
from tests.tornet import TorNet, TorNetError, tor_available

HOST = "127.0.0.1"
CELL_DATA = 498  # RELAY_DATA payload bytes per cell
MIB = 1024 * 1024
NOTE_CC = (
    "C tor's client negotiates congestion control (prop 324, Vegas) with the exit; ours uses fixed "
    "windows (circuit 1000/100 cells, stream 500/50 cells)"
)


# ----- the HTTP server (a separate process: it must not share our event loop or GIL) --------------
def start_http_server(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m http.server`` on 127.0.0.1, port 0; returns the process and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", HOST, "--directory", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")  # "Serving HTTP on 127.0.0.1 port N (...)"
    words = line.split()
    if "port" not in words:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the HTTP server did not start: {line!r}")
    return proc, int(words[words.index("port") + 1])


# ----- one fetch -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Fetch:
    seconds: float
    nbytes: int
    cpu_share: float = 0.0  # this process's CPU seconds / wall seconds (ours only)
    begin_ms: float = 0.0  # BEGIN -> CONNECTED (ours) or SOCKS CONNECT reply (tor)
    cells: int = 0
    stream_sendmes: int = 0
    drained_sendmes: int = 0  # SENDMEs sent when every cell the stream window allowed had arrived
    drained_wait_s: float = 0.0  # from those SENDMEs to the next cell's arrival (the exit sat idle)
    backlog_cells_median: float = 0.0  # at our SENDMEs: cells the core decrypted that the app had not read
    unlock_ms_median: float = 0.0  # from stream SENDME j to the arrival of the last cell it allowed
    machine_busy: float = 0.0  # share of all cores busy (every process) during the fetch

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass(slots=True)
class _CellLog:
    """Arrival times (core) and consumption times (app) of one stream's DATA cells."""

    circ: int
    arrivals: list[float] = field(default_factory=list)
    consumed: list[float] = field(default_factory=list)

    def sendme_accounting(self) -> SendmeAccounting:
        """What the stream SENDMEs of one fetch show.

        Our core sends stream SENDME j when the application has consumed 50*j cells (auto_consume
        off).  Before it, the exit may have sent at most 500 + 50*(j-1) cells; if that many had
        already arrived, nothing was in flight and the exit waited for this SENDME."""
        sendmes = drained = 0
        idle = 0.0
        backlogs: list[int] = []
        unlock: list[float] = []
        arr = self.arrivals
        for j in range(1, len(self.consumed) // STREAMWINDOW_INCREMENT + 1):
            t = self.consumed[j * STREAMWINDOW_INCREMENT - 1]
            sendmes += 1
            allowed = STREAMWINDOW_START + STREAMWINDOW_INCREMENT * (j - 1)
            arrived = bisect.bisect_right(arr, t)  # cells that had arrived by then
            backlogs.append(arrived - j * STREAMWINDOW_INCREMENT)
            if arrived >= allowed and arrived < len(arr):
                drained += 1
                idle += arr[arrived] - t
            last_unlocked = allowed + STREAMWINDOW_INCREMENT  # the cell number this SENDME allows up to
            if last_unlocked <= len(arr):
                unlock.append(arr[last_unlocked - 1] - t)
        return SendmeAccounting(
            sendmes,
            drained,
            idle,
            statistics.median(backlogs) if backlogs else 0.0,
            statistics.median(unlock) * 1e3 if unlock else 0.0,
        )


@dataclass(frozen=True, slots=True)
class SendmeAccounting:
    sendmes: int
    drained: int
    idle: float
    backlog_median: float
    unlock_ms_median: float


class Recorder:
    """Installed as the driver's ``on_event``: logs the DATA cell arrivals of the circuits watched."""

    def __init__(self) -> None:
        self.logs: dict[int, _CellLog] = {}

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.StreamDataReceived):
            log = self.logs.get(e.circ)
            if log is not None:
                log.arrivals.append(time.perf_counter())


async def fetch_ours(client: TorClient, rec: Recorder, port: int, digest: bytes) -> Fetch:
    """Build a fresh 3-hop circuit (untimed), then time BEGIN + GET + the whole body."""
    circ = await client.build_circuit(client.choose_path(port, 3))
    try:
        return await fetch_on(client, rec, circ, port, digest)
    finally:
        client.driver.destroy_circuit(circ)


async def fetch_on(client: TorClient, rec: Recorder, circ: int, port: int, digest: bytes) -> Fetch:
    log = rec.logs[circ] = _CellLog(circ)
    chunks: list[bytes] = []
    try:
        cpu0, busy0, t0 = time.process_time(), machine_cpu(), time.perf_counter()
        stream = await client.driver.open_stream(circ, HOST, port)
        t_conn = time.perf_counter()
        await stream.write(f"GET /blob HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        status, _ = await read_http_response(
            stream, lambda _got, _total: log.consumed.append(time.perf_counter()), chunks.append
        )
        t1, cpu1, busy1 = time.perf_counter(), time.process_time(), machine_cpu()
    finally:
        del rec.logs[circ]
    body = b"".join(chunks)
    _check(status, body, digest, "ours")
    acc = log.sendme_accounting()
    return Fetch(
        t1 - t0,
        len(body),
        cpu_share=(cpu1 - cpu0) / (t1 - t0),
        machine_busy=_busy_share(busy0, busy1),
        begin_ms=(t_conn - t0) * 1e3,
        cells=len(log.arrivals),
        stream_sendmes=acc.sendmes,
        drained_sendmes=acc.drained,
        drained_wait_s=acc.idle,
        backlog_cells_median=acc.backlog_median,
        unlock_ms_median=acc.unlock_ms_median,
    )


async def fetch_ours_parallel(client: TorClient, rec: Recorder, port: int, digest: bytes, n: int) -> float:
    """``n`` fetches at once on ``n`` fresh circuits: their aggregate MB/s (n times the windows)."""
    circs = [await client.build_circuit(client.choose_path(port, 3)) for _ in range(n)]
    try:
        t0 = time.perf_counter()
        got = await asyncio.gather(*(fetch_on(client, rec, c, port, digest) for c in circs))
        return sum(f.nbytes for f in got) / (time.perf_counter() - t0) / 1e6
    finally:
        for c in circs:
            client.driver.destroy_circuit(c)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle, sum(fields))


def _busy_share(a: tuple[float, float], b: tuple[float, float]) -> float:
    total = b[1] - a[1]
    return (b[0] - a[0]) / total if total > 0 else 0.0


async def fetch_ctor(socks: tuple[str, int], port: int, digest: bytes) -> Fetch:
    """SOCKS5 CONNECT (host name, resolved by the exit) through C tor's SocksPort, then the GET."""
    busy0, t0 = machine_cpu(), time.perf_counter()
    reader, writer = await asyncio.open_connection(*socks)
    try:
        writer.write(b"\x05\x01\x00")
        if await reader.readexactly(2) != b"\x05\x00":
            raise RuntimeError("tor's SocksPort refused the no-authentication method")
        name = HOST.encode()
        writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        reply = await reader.readexactly(4)
        if reply[1] != 0:
            raise RuntimeError(f"tor's SocksPort answered CONNECT with error {reply[1]}")
        # BND.ADDR (IPv4, IPv6, or a domain name with its length byte first), then BND.PORT
        addr_len = {1: 4, 4: 16}.get(reply[3])
        if addr_len is None:
            addr_len = (await reader.readexactly(1))[0]
        await reader.readexactly(addr_len + 2)
        t_conn = time.perf_counter()
        writer.write(f"GET /blob HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        data = await reader.read()  # HTTP/1.0: the server closes after the body
        t1 = time.perf_counter()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    _check(status, body, digest, "tor")
    return Fetch(
        t1 - t0, len(body), begin_ms=(t_conn - t0) * 1e3, machine_busy=_busy_share(busy0, machine_cpu())
    )


def _check(status: int, body: bytes, digest: bytes, who: str) -> None:
    if status != 200 or hashlib.sha256(body).digest() != digest:
        raise RuntimeError(f"{who}: HTTP {status}, {len(body)} bytes, body does not match the file")


# ----- circuit builds ----------------------------------------------------------------------------
async def build_times(client: TorClient, net: TorNet, port: int, n: int) -> tuple[list[float], list[float]]:
    """``n`` timed builds each (after one warm-up each), alternating, the same path for both."""
    ours: list[float] = []
    ctor: list[float] = []
    for i in range(n + 1):
        path = client.choose_path(port, 3)
        t0 = time.perf_counter()
        circ = await client.build_circuit(path)
        dt = time.perf_counter() - t0
        client.driver.destroy_circuit(circ)
        ct = await asyncio.to_thread(net.ctor_build_circuit, ["$" + r.rsa_id.hex().upper() for r in path])
        if i > 0:  # the first round opens the links to the first hop (both clients)
            ours.append(dt)
            ctor.append(ct)
    return ours, ctor


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


class CircBwWatcher:
    """Collects C tor's ``650 CIRC_BW`` events (control-spec, "Bandwidth used on a circuit")
    while it fetches.  A circuit with congestion control adds ``SS``, ``CWND``, ``RTT`` and
    ``MIN_RTT`` to them: the proof that prop 324 was negotiated with the exit."""

    def __init__(self, control: tuple[str, int]) -> None:
        self.events: list[dict[str, str]] = []
        self._sock = socket.create_connection(control, timeout=10)
        self._file = self._sock.makefile("rwb")
        for cmd in ("AUTHENTICATE", "SETEVENTS CIRC_BW"):
            self._file.write(cmd.encode() + b"\r\n")
            self._file.flush()
            line = self._file.readline()
            if not line.startswith(b"250"):
                raise TorNetError(f"control port: {cmd} -> {line!r}")
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._run, name="circ-bw", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in self._file:
                words = raw.decode(errors="replace").split()
                if words[:2] == ["650", "CIRC_BW"]:
                    kv = dict(w.split("=", 1) for w in words[2:] if "=" in w)
                    if int(kv.get("READ", "0")) > 0:
                        self.events.append(kv)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        """Whether C tor's circuits carried congestion-control state.  The download window is the
        exit's and invisible here; the client's own CWND/RTT fields govern its upload direction."""
        cc = [e for e in self.events if "CWND" in e]
        return {"cc_negotiated": bool(cc), "circ_bw_events": len(self.events), "with_cc_fields": len(cc)}


async def profile_ours(
    client: TorClient, rec: Recorder, port: int, digest: bytes, top: int = 12
) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    await fetch_ours(client, rec, port, digest)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return lines[start:]


# ----- the run --------------------------------------------------------------------------------------
async def measure(
    net: TorNet, port: int, size: int, digest: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    specs = [AuthoritySpec.parse(a.spec) for a in net.authorities]
    directory = await DirectoryClient(specs, None).get(time.time())
    client = TorClient(directory, guards=GuardSet(None), allow_same_subnet=True)
    rec = Recorder()
    client.driver.on_event = rec.on_event
    watcher = CircBwWatcher(net.client_control)
    try:
        # warm-up (not counted): our link to the guard, C tor's first stream
        await fetch_ours(client, rec, port, digest)
        await fetch_ctor(net.client_socks, port, digest)
        ours: list[Fetch] = []
        ctor: list[Fetch] = []
        for i in range(args.rounds):
            if i % 2 == 0:
                ours.append(await fetch_ours(client, rec, port, digest))
                ctor.append(await fetch_ctor(net.client_socks, port, digest))
            else:
                ctor.append(await fetch_ctor(net.client_socks, port, digest))
                ours.append(await fetch_ours(client, rec, port, digest))
        cc = watcher.summary()
        # Diagnostic: two fetches at once on two circuits have twice the windows.  If the fixed
        # windows were what limits one stream, the aggregate would be near twice a single one.
        parallel = [await fetch_ours_parallel(client, rec, port, digest, 2) for _ in range(args.parallel)]
        b_ours, b_ctor = await build_times(client, net, port, args.builds)
        profile = await profile_ours(client, rec, port, digest) if args.profile else []
    finally:
        watcher.close()
        await client.close()
    r = summarize(size, ours, ctor, b_ours, b_ctor, args)
    r["tor_congestion_control"] = cc
    r["limits"]["ours_2_parallel_mb_s_median"] = round(statistics.median(parallel), 2)
    r["limits"]["parallel_speedup"] = round(statistics.median(parallel) / r["ours_mb_s_median"], 2)
    if profile:
        r["profile_ours_tottime"] = profile
    return r


def summarize(
    size: int,
    ours: list[Fetch],
    ctor: list[Fetch],
    b_ours: list[float],
    b_ctor: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    med = statistics.median
    ours_mb = med(f.mb_s for f in ours)
    ctor_mb = med(f.mb_s for f in ctor)
    rtt_ms = med(f.begin_ms for f in ours)
    idle = sum(f.drained_wait_s for f in ours)
    total = sum(f.seconds for f in ours)
    unlock_ms = med(f.unlock_ms_median for f in ours)
    return {
        "mode": "quick" if args.quick else "full",
        "file_bytes": size,
        "rounds": args.rounds,
        "builds": args.builds,
        "ours_mb_s_median": round(ours_mb, 2),
        "tor_mb_s_median": round(ctor_mb, 2),
        "throughput_ratio_ours_over_tor": round(ours_mb / ctor_mb, 3),
        "ours_mb_s_rounds": [round(f.mb_s, 2) for f in ours],
        "tor_mb_s_rounds": [round(f.mb_s, 2) for f in ctor],
        "ours_build_ms_median": round(med(b_ours) * 1e3, 1),
        "ours_build_ms_p90": round(p90(b_ours) * 1e3, 1),
        "tor_build_ms_median": round(med(b_ctor) * 1e3, 1),
        "tor_build_ms_p90": round(p90(b_ctor) * 1e3, 1),
        "build_ratio_ours_over_tor": round(med(b_ours) / med(b_ctor), 3),
        "ours_build_ms_all": [round(x * 1e3, 1) for x in b_ours],
        "tor_build_ms_all": [round(x * 1e3, 1) for x in b_ctor],
        "limits": {
            "ours_cpu_share_median": round(med(f.cpu_share for f in ours), 3),
            "machine_busy_during_ours_median": round(med(f.machine_busy for f in ours), 3),
            "machine_busy_during_tor_median": round(med(f.machine_busy for f in ctor), 3),
            "ours_begin_connected_ms_median": round(rtt_ms, 2),
            "tor_socks_connect_ms_median": round(med(f.begin_ms for f in ctor), 2),
            "idle_window_ceiling_mb_s": round(STREAMWINDOW_START * CELL_DATA / (rtt_ms / 1e3) / 1e6, 1),
            "window_transit_ms_median": round(unlock_ms, 2),
            "window_transit_rate_mb_s": round(STREAMWINDOW_START * CELL_DATA / (unlock_ms / 1e3) / 1e6, 1)
            if unlock_ms
            else None,
            "cells_per_fetch": med(f.cells for f in ours),
            "stream_sendmes_per_fetch": med(f.stream_sendmes for f in ours),
            "stream_sendmes_on_drained_window": sum(f.drained_sendmes for f in ours),
            "drained_window_wait_share": round(idle / total, 3) if total else 0.0,
            "app_backlog_cells_median": med(f.backlog_cells_median for f in ours),
        },
        "note": NOTE_CC,
    }


def verdict(r: dict[str, Any]) -> str:
    lim = r["limits"]
    speedup = lim["parallel_speedup"]
    parts = [
        f"two circuits at once reach {speedup:.2f}x one "
        + (
            "(one stream is bound by its fixed 500-cell window)"
            if speedup >= 1.4
            else "(one stream is partly bound by its fixed window)"
            if speedup >= 1.15
            else "(the fixed windows are not the main limit)"
        ),
        f"a stream SENDME releases its last cell {lim['window_transit_ms_median']} ms later, the time a whole "
        f"500-cell window takes to come through the loaded path ({lim['window_transit_rate_mb_s']} MB/s; "
        f"idle BEGIN->CONNECTED {lim['ours_begin_connected_ms_median']} ms would allow "
        f"{lim['idle_window_ceiling_mb_s']} MB/s)",
        f"the window ran dry before {lim['stream_sendmes_on_drained_window']} SENDMEs "
        f"({100 * lim['drained_window_wait_share']:.1f}% of the time)",
        f"CPU: this process {100 * lim['ours_cpu_share_median']:.0f}% of a core, the machine "
        f"{100 * lim['machine_busy_during_ours_median']:.0f}% busy (during tor's fetches: "
        f"{100 * lim['machine_busy_during_tor_median']:.0f}%)",
    ]
    return "; ".join(parts)


def print_table(r: dict[str, Any]) -> None:
    mib = r["file_bytes"] / MIB
    print(f"private tor network, {mib:.0f} MiB file over 3 hops, {r['rounds']} rounds ({r['mode']})")
    print(
        f"throughput  ours {r['ours_mb_s_median']:7.2f} MB/s   tor {r['tor_mb_s_median']:7.2f} MB/s   "
        f"ratio ours/tor {r['throughput_ratio_ours_over_tor']:.2f}   (median)"
    )
    print(f"            rounds ours {r['ours_mb_s_rounds']}  tor {r['tor_mb_s_rounds']}")
    print(
        f"circuit build, {r['builds']} each, same path: ours {r['ours_build_ms_median']} ms "
        f"(p90 {r['ours_build_ms_p90']})   tor {r['tor_build_ms_median']} ms (p90 {r['tor_build_ms_p90']})   "
        f"ratio ours/tor {r['build_ratio_ours_over_tor']:.2f}   (median)"
    )
    lim, cc = r["limits"], r["tor_congestion_control"]
    print(f"note: {r['note']}")
    print(
        "tor's circuits "
        + ("negotiated" if cc["cc_negotiated"] else "did NOT negotiate")
        + f" congestion control ({cc['with_cc_fields']} of {cc['circ_bw_events']} CIRC_BW events with CWND)"
    )
    print(
        f"ours: {lim['cells_per_fetch']:.0f} cells and {lim['stream_sendmes_per_fetch']:.0f} stream SENDMEs per "
        f"fetch; app backlog at SENDME time {lim['app_backlog_cells_median']} cells (median); "
        f"2 fetches in parallel: {lim['ours_2_parallel_mb_s_median']} MB/s in all"
    )
    print(f"what limits ours: {verdict(r)}")
    for line in r.get("profile_ours_tottime", []):
        print("  " + line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="4 MiB, 3 rounds, 3 builds (within 60 s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--profile", action="store_true", help="cProfile one extra fetch of ours")
    ap.add_argument("--rounds", type=int, help="fetch rounds each (default 3 quick, 7 full)")
    ap.add_argument("--builds", type=int, help="timed circuit builds each (default 3 quick, 25 full)")
    ap.add_argument(
        "--parallel", type=int, help="rounds of the 2-circuit diagnostic (default 1 quick, 3 full)"
    )
    ap.add_argument("--mib", type=int, help="file size in MiB (default 4 quick, 16 full)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.builds = args.builds or (3 if args.quick else 25)
    args.parallel = args.parallel or (1 if args.quick else 3)
    size = (args.mib or (4 if args.quick else 16)) * MIB
    if not tor_available():
        print(
            "tor_vs_ctor: Debian's tor is not installed (apt-get install -y tor); nothing measured",
            file=sys.stderr,
        )
        return 2
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peersm-torbench-") as tmp:
        root = Path(tmp) / "www"
        root.mkdir()
        blob = os.urandom(size)
        (root / "blob").write_bytes(blob)
        digest = hashlib.sha256(blob).digest()
        net = TorNet(Path(tmp) / "net")
        http, port = start_http_server(root)
        try:
            net.start()
            t_net = time.perf_counter() - t_start
            result = asyncio.run(measure(net, port, size, digest, args))
        except TorNetError as exc:
            print(f"tor_vs_ctor: the private tor network failed: {exc}", file=sys.stderr)
            return 1
        except (PeerError, RuntimeError, OSError) as exc:
            print(f"tor_vs_ctor: the measurement failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            net.stop()
            http.terminate()
            http.wait()
    result["network_start_s"] = round(t_net, 1)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
        print(f"(network start {result['network_start_s']} s, whole run {result['total_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
