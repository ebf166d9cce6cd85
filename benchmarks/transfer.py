"""Anonymous transfer benchmark (issue 7 "Benchmark"; DESIGN §1, §5, §6).

One run measures, on loopback:

* **the reference**: one raw aiortc link with 16 KiB messages (``benchmarks.links``: the
  receiving end in a child process, flow control on ``bufferedAmount`` only), measured right
  before each anonymous round while the testnet idles, so that both see the same machine load
  (other work on a shared machine moves it a lot);
* **end-to-end anonymous throughput**: a testnet (``peer.app.testnet``, 8 peers with 3 links each
  by default) in a temporary directory; a holder shares one fresh random file per round
  through its local API, another peer gets it with the link (``POST /api/downloads``), and the
  file is checked (SHA-256).  MB/s is the file size over the wall time from the POST to the
  exported file ("user"), and over the time from the first byte to the end ("data phase");
* **time to first byte**: the download summary's ``first_byte_s`` (from the start of the
  download: ORDB circuits, manifest, first piece);
* **WebRTC links on the path**, counted from the peers' status during each round: the
  requester's ORDB circuits (``circuit_paths``: guard, middle, ORDB = 3 links), the holder's
  announce circuits (likewise), plus one link per ORDB-to-ORDB forward (1-hop circuits on an
  ORDB link): every ORDB counts the DB_QUERYs it receives (``ordb.queries``) and the ones it
  forwards (``ordb.forwarded``), so the requester sent ``queries - forwarded`` and each crossed
  ``forwarded / (queries - forwarded)`` forward links on average (a query can be forwarded
  twice).  That mean over the round's queries is the figure used;
* **efficiency** = end-to-end MB/s x links on the path / raw link MB/s, per round, median
  (every link of the path shares the same 2 cores);
* **context**: C tor's 3-hop throughput through its client's SocksPort on the private tor
  network of ``tests/tornet.py`` (same size, via ``benchmarks.tor_vs_ctor.fetch_ctor``), when
  tor is installed and not ``--quick``.

Run: ``python -m benchmarks.transfer [--quick] [--json] [--size-mb N] [--rounds N] [--peers N]``.
``--quick`` (4 MB, 1 round, no C tor) finishes within 60 s: on a loaded machine its get is cut
short after 50 s in all and the figures come from the bytes verified so far (the report says
so).  The testnet is always stopped, also on error.  No figure is hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.links import RAW, make_process_transfer, sink_main
from peer.app.apiclient import ApiClient
from peer.app.testnet import NetSpec, launch_testnet, stop_testnet
from peer.errors import PeerError

MB = 1_000_000
QUICK_BUDGET = 50.0  # seconds of --quick before its get is cut short (60 s in all, teardown included)
COUNTERS = ("queries", "answered", "forwarded", "unavailable")
POLL = 0.1  # seconds between download polls
STATUS_EVERY = 5  # poll the requester's full status every this many download polls


# ----- the raw reference ------------------------------------------------------------------------
class RawLink:
    """One raw aiortc link at a time (16 KiB messages), the receiving end in a child process.

    ``benchmarks.links``'s own reference measurement; kept open so that a raw figure can be taken
    next to each anonymous round, under the same machine load."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._child = ctx.Process(target=sink_main, args=(child_conn,), daemon=True)
        self._child.start()
        self._transfer = make_process_transfer(self._conn)

    def measure(self, total: int) -> float:
        """MB/s of one fresh raw link carrying ``total`` bytes."""

        async def go() -> float:
            return await self._transfer("raw", RAW, total)

        return asyncio.run(go())

    def close(self) -> None:
        self._conn.send(("quit",))
        self._child.join(10)
        if self._child.is_alive():
            self._child.terminate()
            self._child.join(5)


# ----- one anonymous download -------------------------------------------------------------------
@dataclass
class Round:
    size: int
    seconds: float  # POST -> exported file
    first_byte_s: float | None
    data_seconds: float | None  # first byte -> exported file
    circuits: int
    ordbs: int
    replaced: int
    bad_pieces: int
    requester_hops: list[int]  # per ORDB circuit the requester built for the download
    holder_hops: list[int]  # per announce circuit of the holder
    queries: int  # DB_QUERYs the requester sent to its ORDBs this round
    forwarded: int  # forwards ORDB -> ORDB (a query may be forwarded twice: see forwards_per_query)
    links_on_path: float
    sha256_ok: bool | None  # None: a partial round, not checked
    requester_ordbs: list[str]  # the ORDBs at the end of the requester's circuits during the round
    holder_ordbs: list[str]  # the ORDBs the holder announces to
    ordb_deltas: dict[str, dict[str, int]]  # per peer, the ORDB counters that moved this round
    delivering: float | None = None  # mean circuits bringing data at once (sampled every 0.5 s)
    replace_reasons: dict[str, int] = field(default_factory=dict)  # replacements by reason
    raw_mb_s: float = 0.0  # the raw link measured just before this round
    complete: bool = True  # False: --quick ran out of time, figures from the bytes verified so far

    @property
    def mb_s(self) -> float:
        return self.size / self.seconds / MB

    @property
    def data_mb_s(self) -> float | None:
        return self.size / self.data_seconds / MB if self.data_seconds else None


@dataclass
class Net:
    dir: Path
    peers: list[dict[str, Any]]
    clients: list[ApiClient] = field(default_factory=list)

    def ordb_stats(self) -> dict[str, dict[str, int]]:
        """Every peer's ORDB counters (``queries``, ``answered``, ``forwarded``, ``unavailable``)."""
        out: dict[str, dict[str, int]] = {}
        for p, c in zip(self.peers, self.clients, strict=True):
            st = c.get("/api/status").get("ordb") or {}
            out[str(p["name"])] = {k: int(st.get(k, 0)) for k in COUNTERS}
        return out

    def name_of(self, prefix: str) -> str:
        return next((str(p["name"]) for p in self.peers if str(p["node_id"]).startswith(prefix)), prefix)


def _paths(status: dict[str, Any]) -> list[tuple[str, ...]]:
    return [tuple(p) for p in status.get("circuit_paths") or []]


def wait_announced(net: Net, hash_names: list[str], want: int, timeout: float) -> float:
    """Wait until ``want`` ORDBs index as many hash_names as we shared; returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        counts = [int((c.get("/api/status").get("ordb") or {}).get("hash_names", 0)) for c in net.clients]
        if sum(1 for n in counts if n >= len(hash_names)) >= want or sum(counts) >= want * len(hash_names):
            return time.monotonic() - t0
        time.sleep(0.2)
    holder = net.clients[0].get("/api/status").get("announce")
    raise TimeoutError(
        f"the holder's DB_INFO did not reach {want} ORDBs within {timeout:.0f} s (holder: {holder})"
    )


def one_round(
    net: Net,
    holder: int,
    requester: int,
    link: str,
    digest: bytes,
    size: int,
    out: Path,
    timeout: float,
    partial_ok: bool = False,
) -> Round:
    hc, rc = net.clients[holder], net.clients[requester]
    holder_paths = _paths(hc.get("/api/status"))
    s0 = net.ordb_stats()
    seen: set[tuple[str, ...]] = set()
    t0 = time.monotonic()
    summary = rc.post("/api/downloads", {"link": link, "output": str(out)})
    did = str(summary["id"])
    t_first: float | None = None
    polls = 0
    deadline = t0 + timeout
    while True:
        now = time.monotonic()
        summary = rc.get(f"/api/downloads/{did}")
        if t_first is None and summary.get("first_byte_s") is not None:
            t_first = now
        if summary.get("state") == "failed":
            raise PeerError(f"the download failed: {summary.get('error')}")
        if summary.get("state") == "complete" and summary.get("exported"):
            break
        if polls % STATUS_EVERY == 0:
            seen.update(_paths(rc.get("/api/status")))
        if now > deadline:
            if partial_ok and int(summary.get("bytes") or 0) > 0:
                break  # --quick: measure what arrived within the time budget
            raise TimeoutError(f"the download did not finish within {timeout:.0f} s ({summary})")
        polls += 1
        time.sleep(POLL)
    seconds = time.monotonic() - t0
    complete = summary.get("state") == "complete" and bool(summary.get("exported"))
    if not complete:
        size = int(summary.get("bytes") or 0)
    s1 = net.ordb_stats()
    deltas = {n: {k: s1[n][k] - s0[n][k] for k in COUNTERS if s1[n][k] != s0[n][k]} for n in s1}
    deltas = {n: d for n, d in deltas.items() if d}
    ok: bool | None = None
    if complete:
        with out.open("rb") as fh:
            ok = hashlib.file_digest(fh, "sha256").digest() == digest
    out.unlink(missing_ok=True)
    # The requester's circuits during the round end at ORDBs: its download circuits (and, since it
    # seeds from 25 %, its announce circuits: also guard, middle, ORDB).
    req_hops = sorted(len(p) for p in seen) or [3]
    hold_hops = sorted(len(p) for p in holder_paths) or [3]
    # Every DB_QUERY that reaches an ORDB is counted there ("queries"); it came either from the
    # requester or from a forwarding ORDB ("forwarded"; an ORDB with no local holder that can
    # serve the range forwards again, e.g. one that indexes only the requester's own partial
    # seeding).  So the requester sent (queries - forwarded), and each of those crossed
    # forwarded / (queries - forwarded) ORDB-to-ORDB links on average, one link each.
    forwarded = sum(d.get("forwarded", 0) for d in deltas.values())
    queries = max(sum(d.get("queries", 0) for d in deltas.values()) - forwarded, 1)
    req_ordbs = {net.name_of(p[-1]) for p in seen}
    links = statistics.median(req_hops) + statistics.median(hold_hops) + forwarded / queries
    fb = summary.get("first_byte_s")
    return Round(
        size=size,
        seconds=seconds,
        first_byte_s=float(fb) if fb is not None else None,
        data_seconds=(t0 + seconds - t_first) if t_first is not None else None,
        circuits=int(summary.get("circuits") or 0),
        ordbs=int(summary.get("ordbs") or 0),
        replaced=int(summary.get("replaced") or 0),
        bad_pieces=int(summary.get("bad_pieces") or 0),
        requester_hops=req_hops,
        holder_hops=hold_hops,
        queries=queries,
        forwarded=forwarded,
        links_on_path=links,
        sha256_ok=ok,
        requester_ordbs=sorted(req_ordbs),
        holder_ordbs=sorted({net.name_of(p[-1]) for p in holder_paths}),
        ordb_deltas=deltas,
        complete=complete,
        delivering=float(summary["delivering"]) if summary.get("delivering") is not None else None,
        replace_reasons={str(k): int(v) for k, v in (summary.get("replace_reasons") or {}).items()},
    )


def measure_testnet(
    args: argparse.Namespace, work: Path, raw: RawLink
) -> tuple[list[Round], dict[str, float]]:
    size = int(args.size_mb * MB)
    netdir = work / "net"
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    state = launch_testnet(NetSpec(peers=args.peers, dir=netdir, links=args.links))
    timings["testnet_up_s"] = time.monotonic() - t0
    try:
        peers = list(state["peers"])
        net = Net(netdir, peers, [ApiClient.from_data_dir(Path(p["data_dir"]), timeout=30) for p in peers])
        holder, requester = 0, len(peers) // 2
        files: list[tuple[str, bytes]] = []
        hash_names: list[str] = []
        for i in range(args.rounds):
            f = work / f"share{i}.bin"
            data = os.urandom(size)
            f.write_bytes(data)
            shared = net.clients[holder].post("/api/shares", {"path": str(f), "encrypt": False})
            files.append((str(shared["link"]), hashlib.sha256(data).digest()))
            hash_names.append(str(shared["hash_name"]))
        timings["announce_s"] = wait_announced(net, hash_names, 1, 60.0)
        rounds = []
        for i, (link, digest) in enumerate(files):
            raw_mb_s = raw.measure(args.raw_mb * MB)  # the reference, under the same load
            rounds.append(
                one_round(
                    net,
                    holder,
                    requester,
                    link,
                    digest,
                    size,
                    work / f"got{i}.bin",
                    timeout=args.timeout if not args.quick else max(5.0, args.budget_end - time.monotonic()),
                    partial_ok=args.quick,
                )
            )
            rounds[-1].raw_mb_s = raw_mb_s
        return rounds, timings
    finally:
        stop_testnet(netdir)


# ----- C tor, for context -------------------------------------------------------------------------
def measure_ctor(size: int, rounds: int, work: Path) -> dict[str, Any]:
    """C tor's 3-hop throughput through its client's SocksPort on the private tor network."""
    try:
        from benchmarks.tor_vs_ctor import fetch_ctor, start_http_server
        from tests.tornet import TorNet, TorNetError, tor_available
    except ImportError as exc:
        return {"skipped": f"the tor harness is not importable ({exc})"}
    if not tor_available():
        return {"skipped": "tor is not installed (apt-get install -y tor)"}
    root = work / "www"
    root.mkdir()
    data = os.urandom(size)
    (root / "blob").write_bytes(data)
    digest = hashlib.sha256(data).digest()
    http, port = start_http_server(root)
    t0 = time.monotonic()
    try:
        with TorNet(work / "tornet") as net:
            up = time.monotonic() - t0

            async def go() -> list[float]:
                await fetch_ctor(net.client_socks, port, digest)  # warm-up: C tor's first stream
                return [(await fetch_ctor(net.client_socks, port, digest)).mb_s for _ in range(rounds)]

            figures = asyncio.run(go())
    except (TorNetError, OSError, RuntimeError) as exc:
        return {"skipped": f"the private tor network failed: {exc}"}
    finally:
        http.kill()
        http.wait()
    return {"mb_s_median": statistics.median(figures), "mb_s": figures, "tornet_up_s": up, "links": 3}


def run_ctor(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.quick:
        return {"skipped": "--quick (the private tor network alone takes 25-35 s to start)"}
    if args.no_ctor:
        return {"skipped": "--no-ctor"}
    return measure_ctor(int(args.size_mb * MB), args.rounds, work)


# ----- report -------------------------------------------------------------------------------------
def summarize(
    rounds: list[Round],
    timings: dict[str, float],
    ctor: dict[str, Any],
    args: argparse.Namespace,
    total_s: float,
) -> dict[str, Any]:
    raw = [r.raw_mb_s for r in rounds]
    raw_med = statistics.median(raw)
    e2e = statistics.median(r.mb_s for r in rounds)
    # efficiency per round against the raw link measured next to it, then the median
    eff = statistics.median(r.mb_s * r.links_on_path / r.raw_mb_s for r in rounds)
    eff_data = [d * r.links_on_path / r.raw_mb_s for r in rounds if (d := r.data_mb_s)]
    data = [r.data_mb_s for r in rounds if r.data_mb_s]
    data_med = statistics.median(data) if data else None
    links = statistics.median(r.links_on_path for r in rounds)
    fbs = [r.first_byte_s for r in rounds if r.first_byte_s is not None]
    speeds = [r.mb_s for r in rounds]
    out: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "peers": args.peers,
        "links_per_peer": args.links,
        "size_mb": args.size_mb,
        "rounds": len(rounds),
        "partial_rounds": sum(1 for r in rounds if not r.complete),
        "raw_16k_mb_s": round(raw_med, 2),
        "raw_16k_mb_s_rounds": [round(x, 2) for x in raw],
        "e2e_mb_s": round(e2e, 3),
        "e2e_data_phase_mb_s": round(data_med, 3) if data_med else None,
        "first_byte_s": round(statistics.median(fbs), 3) if fbs else None,
        "slowest_over_fastest": round(min(speeds) / max(speeds), 3) if max(speeds) > 0 else None,
        "links_on_path": round(links, 2),
        "efficiency": round(eff, 3),
        "efficiency_data_phase": round(statistics.median(eff_data), 3) if eff_data else None,
        "goal": {"efficiency": 0.5, "first_byte_s": 1.0},
        "ctor_3hop": ctor,
        "timings_s": {k: round(v, 1) for k, v in {**timings, "total": total_s}.items()},
        "per_round": [
            {
                **asdict(r),
                "mb_s": round(r.mb_s, 3),
                "data_mb_s": round(r.data_mb_s, 3) if r.data_mb_s else None,
            }
            for r in rounds
        ],
        "links_counted_as": "requester circuit hops (guard, middle, ORDB) + holder announce circuit hops "
        "+ ORDB->ORDB forwards per requester query (1 link each), from the peers' status",
    }
    if "mb_s_median" in ctor:
        out["ctor_ratio_e2e_over_ctor"] = round(e2e / ctor["mb_s_median"], 3)
    return out


def _check_word(ok: bool | None) -> str:
    return (
        "not checked (partial: the --quick time budget ran out)" if ok is None else "ok" if ok else "MISMATCH"
    )


def _diagnostics(p: dict[str, Any]) -> str:
    """One round's fetch diagnostics: circuits delivering at once, replacements by reason, and per
    ORDB the queries it saw, forwarded and answered UNAVAILABLE."""
    d = p.get("delivering")
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(p.get("replace_reasons", {}).items())) or "none"
    ordbs = "; ".join(
        f"{name} {c.get('queries', 0)}q/{c.get('forwarded', 0)}fwd/{c.get('unavailable', 0)}unavail"
        for name, c in sorted(p.get("ordb_deltas", {}).items())
        if c.get("queries") or c.get("forwarded") or c.get("unavailable")
    )
    return (
        f"delivering at once {'n/a' if d is None else f'{d:.2f}'}, {p['replaced']} replaced ({reasons}); "
        f"ORDBs: {ordbs or 'none'}"
    )


def print_report(r: dict[str, Any]) -> None:
    print(
        f"Anonymous transfer on a testnet of {r['peers']} peers ({r['links_per_peer']} links each), "
        f"{r['size_mb']:g} MB per get, median of {r['rounds']} round(s) [{r['mode']}]"
        + (f", {r['partial_rounds']} cut short by the time budget" if r["partial_rounds"] else "")
    )
    print(
        f"  raw aiortc link, 16 KiB messages   {r['raw_16k_mb_s']:7.2f} MB/s   (reference: median, one next to each round)"
    )
    print(f"  end to end (POST -> file)          {r['e2e_mb_s']:7.3f} MB/s")
    if r["e2e_data_phase_mb_s"] is not None:
        print(f"  end to end, data phase only        {r['e2e_data_phase_mb_s']:7.3f} MB/s")
    print(f"  time to first byte                 {r['first_byte_s']} s   (goal <= 1 s)")
    if r.get("slowest_over_fastest") is not None and r["rounds"] > 1:
        print(f"  slowest / fastest round            {r['slowest_over_fastest']:7.3f}   (goal >= 0.5)")
    print(f"  WebRTC links on the path           {r['links_on_path']:7.2f}   ({r['links_counted_as']})")
    print(f"  efficiency = e2e x links / raw     {r['efficiency']:7.3f}   (goal >= 0.5)")
    if r["efficiency_data_phase"] is not None:
        print(f"  efficiency, data phase             {r['efficiency_data_phase']:7.3f}")
    c = r["ctor_3hop"]
    if "mb_s_median" in c:
        print(
            f"  C tor 3-hop (SocksPort), context   {c['mb_s_median']:7.2f} MB/s   "
            f"ours/ctor {r['ctor_ratio_e2e_over_ctor']:.3f}"
        )
    else:
        print(f"  C tor 3-hop: skipped ({c['skipped']})")
    for i, p in enumerate(r["per_round"]):
        print(
            f"    round {i + 1}: {p['mb_s']:.3f} MB/s, data phase {p['data_mb_s']}, first byte {p['first_byte_s']} s, "
            f"{p['circuits']} circuits / {p['ordbs']} ORDBs, requester hops {p['requester_hops']}, "
            f"holder hops {p['holder_hops']}, {p['forwarded']} forwards for {p['queries']} queries, "
            f"links {p['links_on_path']:.2f}, raw {p['raw_mb_s']:.2f} MB/s, "
            f"sha256 {_check_word(p['sha256_ok'])}"
        )
        print(f"      {_diagnostics(p)}")
    print(f"  timings: {r['timings_s']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 MB, 1 round, no C tor: under 60 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size-mb", type=float, default=None, help="file size (default 4 quick, 30 full)")
    parser.add_argument("--rounds", type=int, default=None, help="gets (default 1 quick, 3 full)")
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--links", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per get")
    parser.add_argument("--no-ctor", action="store_true", help="skip the C tor context figure")
    args = parser.parse_args(argv)
    args.size_mb = args.size_mb or (4.0 if args.quick else 30.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.timeout = args.timeout or (35.0 if args.quick else 300.0)
    t0 = time.monotonic()
    args.budget_end = t0 + QUICK_BUDGET  # --quick: the get stops here (testnet teardown follows)
    args.raw_mb = 4 if args.quick else 16
    raw = RawLink()
    try:
        with tempfile.TemporaryDirectory(prefix="peersm-transfer-") as tmp:
            work = Path(tmp)
            rounds, timings = measure_testnet(args, work, raw)
            ctor = run_ctor(args, work)
    finally:
        raw.close()
    r = summarize(rounds, timings, ctor, args, time.monotonic() - t0)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_report(r)
    return 0 if all(x.sha256_ok is not False for x in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
