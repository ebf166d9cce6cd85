"""Streaming start and seek latency in Chromium (issue 11 "Benchmark"): peersm against a plain server.

    python -m benchmarks.stream [--quick] [--json] [--seconds S] [--runs N] [--limit S]

For each MP4 variant of a test video made with PyAV (``tests/webui/media.py``: index at the front,
index at the end; 320x180, 2.5 Mbit/s of video and 64 kbit/s of audio), Debian's Chromium
(``tests/webui/browser.py``) measures, per run, on a fresh page:

* **start**: from ``play()`` on a ``<video>`` whose ``src`` was just set (nothing loaded yet) to
  ``currentTime > 0``;
* **seek**: once playing past 1 s, from setting ``currentTime`` to 80 % of the duration to
  ``currentTime`` passing that point (playing again).

Figures are medians over the runs (milliseconds).  The goal of the issue is <= 1 s for each.  Each
measurement gives up after ``--limit`` seconds (the same for both sides): a run over it counts
as longer than the limit in the median (printed ``> LIMIT``).  The seek's wait for 1 s of playback
runs on its own first (with its own limit), so that the seek's limit counts from the seek; a start
over the limit, or a video that then does not play 1 s within it, leaves that run's seek not
measured (counted apart).

**Reference**: the file served by a plain local HTTP server (aiohttp static files on 127.0.0.1,
with Range, ``Cache-Control: no-store`` so no run is served from the browser's cache), in its own
Chromium, before the testnet starts.

**peersm**: a testnet of 8 ``peersm up`` peers on 127.N.0.1 (``peer.app.testnet``: 3 links each,
no exit, stable identities), the holder's upload capped at :data:`CAP` bytes/s (a little above the
video's own rate) so that every download is still running while it is measured.  Per run and
variant, a **fresh download in progress**: the holder shares a new hard link of the file,
encrypted (a new path is a new import: a new key, so a new ``hash_name``; sharing the same path
again gives the same share back), the requester starts the download (``POST /api/downloads``) and
waits until its manifest is known (``total > 0``: the moment its Downloads page shows Play; that
wait is reported as **link -> Play**); then the same start and seek scripts run on a fresh tab of
the requester's web UI (``/ui/share``, a page that polls nothing; the tab's session cookie
authenticates the media GETs) against ``/stream/<hash_name>``.  As the measurement ends,
``GET /api/downloads/{id}`` says whether the download was still in progress (a complete one would
mean a local read was measured: reported per run) and how it went (rate, circuits, circuits
replaced, time to its first byte); the ``/stream/`` GETs Chromium made are kept too (where each
starts, and how long it waited for its response headers, which the stream sends once it holds
the first bytes).  Then the download is cancelled (its pieces deleted), so that it does not share
the holder's cap with the next run.

Playwright's ``evaluate`` (which adds the ``<video>`` to the UI page) is not subject to the page's
CSP; the page's CSP is in force all the same (checked once: an inline script added to the page is
refused) and no CSP violation may occur during a measurement (``media-src 'self'`` admits the
same-origin stream).

The output also gives, per file, how many bytes from its start a player reads before it has the
first packet of every stream (it has to hold those before it can start), and the machine's load
average at the start and at the end (the figures depend on it: 8 peers and Chromium share the CPUs).

``--quick`` (a 20 s video, 3 runs per variant, a 5 s limit) takes about 2 minutes on 2 cores,
testnet start included; the default is a 60 s video, 5 runs and a 30 s limit.  CI runs it inside
``unshare -n`` (only loopback) from .ci/run.  The testnet is stopped on every way out (errors,
Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import av
from aiohttp import web

from peer.app.apiclient import ApiError
from peer.app.testnet import NetSpec
from tests.webui.media import MediaSpec, Variant, write_media

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page, Request, Response

    from tests.webui.uikit import Peer

PAGE = b"<!doctype html><title>bench</title><video id=v preload=none muted></video>"
VARIANTS = (Variant.MP4_FASTSTART, Variant.MP4_INDEX_END)
GOAL_MS = 1000.0
PEERS, HOLDER, REQUESTER = 8, 2, 5
CAP = 400_000  # the holder's upload cap, bytes/s: the video needs about 320 000
UI_PAGE = "/ui/share"  # a page of the requester's UI that polls nothing
MANIFEST_TIMEOUT = 60.0  # seconds for a download's manifest to arrive

START = """async (src) => {
  const v = document.getElementById('v');
  v.src = src;
  const t0 = performance.now();
  const playing = v.play();
  await new Promise((resolve, reject) => {
    const check = () => v.error ? reject(new Error('media error ' + v.error.code))
      : v.currentTime > 0 ? resolve() : setTimeout(check, 2);
    check();
  });
  await playing;
  return performance.now() - t0;
}"""
SEEK = """async (fraction) => {
  const v = document.getElementById('v');
  while (v.currentTime <= 1) await new Promise((r) => setTimeout(r, 10));
  const target = v.duration * fraction;
  const t0 = performance.now();
  v.currentTime = target;
  await new Promise((resolve, reject) => {
    const check = () => v.error ? reject(new Error('media error ' + v.error.code))
      : (!v.seeking && v.currentTime > target) ? resolve() : setTimeout(check, 2);
    check();
  });
  return performance.now() - t0;
}"""
# the wait SEEK begins with, on its own
PLAYED_1S = """async () => {
  const v = document.getElementById('v');
  while (v.currentTime <= 1) await new Promise((r) => setTimeout(r, 10));
  return true;
}"""
# on a page of the peer's UI: the same element as PAGE's, and a record of CSP violations
ADD_VIDEO = """() => {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation',
    (e) => window.__cspViolations.push(e.effectiveDirective + ' ' + e.blockedURI));
  const v = document.createElement('video');
  v.id = 'v'; v.preload = 'none'; v.muted = true;
  document.body.append(v);
}"""
# the page's CSP holds for the page's own content: an inline script added to it must not run
INLINE_REFUSED = """async () => {
  window.__inlineRan = false;
  const s = document.createElement('script');
  s.textContent = 'window.__inlineRan = true;';
  document.body.append(s);
  await new Promise((r) => setTimeout(r, 50));
  const refused = !window.__inlineRan && window.__cspViolations.some((v) => v.startsWith('script-src'));
  window.__cspViolations = [];
  return refused;
}"""


def limited(script: str, limit_s: float) -> str:
    """``script`` (a one-argument async function) answering null after ``limit_s`` seconds."""
    return (
        f"async (arg) => Promise.race([({script})(arg), "
        f"new Promise((r) => setTimeout(() => r(null), {round(limit_s * 1000)}))])"
    )


@dataclass
class Series:
    """One source and variant: the start and seek times of every run, in ms (None: over the limit;
    a seek is not measured when the video did not play 1 s within the limit); for peersm, what
    each run's download did."""

    source: str
    variant: str
    limit_s: float
    start_ms: list[float | None] = field(default_factory=list)
    seek_ms: list[float | None] = field(default_factory=list)
    seek_not_measured: int = 0
    link_ms: list[float] = field(default_factory=list)
    downloads: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "variant": self.variant, "runs": len(self.start_ms)}
        out["start_ms"] = _stats(self.start_ms, self.limit_s)
        out["seek_ms"] = _stats(self.seek_ms, self.limit_s) | {"not_measured": self.seek_not_measured}
        if self.link_ms:
            out["link_to_play_ms"] = {
                "median": round(statistics.median(self.link_ms), 1),
                "min": round(min(self.link_ms), 1),
                "max": round(max(self.link_ms), 1),
            }
            out["in_progress"] = [bool(d["in_progress"]) for d in self.downloads]
            out["downloads"] = self.downloads
        return out


def _stats(values: list[float | None], limit_s: float) -> dict[str, Any]:
    """Median, min and max (a None counts as over the limit); ``median`` None: over the limit (or
    no value at all)."""
    done = [v for v in values if v is not None]
    median = statistics.median([math.inf if v is None else v for v in values]) if values else math.inf
    return {
        "median": round(median, 1) if math.isfinite(median) else None,
        "min": round(min(done), 1) if done else None,
        "max": round(max(done), 1) if done and len(done) == len(values) else None,
        "over_limit": len(values) - len(done),
        "limit_ms": round(limit_s * 1000),
        "goal_met": median <= GOAL_MS,
    }


@asynccontextmanager
async def plain_server(directory: Path) -> AsyncIterator[str]:
    """aiohttp static files on 127.0.0.1 (Range answered), never cached by the browser."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    @web.middleware
    async def no_store(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resp = await handler(request)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    app = web.Application(middlewares=[no_store])
    app.router.add_get("/", page)
    app.router.add_static("/media/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def start_and_seek(page: Page, src: str, series: Series) -> None:
    """On ``page`` (holding the ``<video id=v>``): the start, then, once the video played 1 s (what
    SEEK waits for first: waited for here, so that SEEK's limit counts from the seek), the seek."""
    limit = series.limit_s
    started = await page.evaluate(limited(START, limit), src)
    series.start_ms.append(started)
    if started is None or not await page.evaluate(limited(PLAYED_1S, limit), None):
        series.seek_not_measured += 1
        return
    series.seek_ms.append(await page.evaluate(limited(SEEK, limit), 0.8))


async def measure(ctx: BrowserContext, page_url: str, media_url: str, series: Series, runs: int) -> None:
    """``runs`` start+seek measurements, each on a fresh page, appended to ``series``."""
    for run in range(runs):
        page = await ctx.new_page()
        try:
            await page.goto(page_url)
            await start_and_seek(page, f"{media_url}?run={run}", series)
        finally:
            await page.close()


async def measure_reference(files: dict[Variant, Path], runs: int, limit_s: float) -> list[Series]:
    from tests.webui.browser import chromium

    out = []
    async with chromium() as ctx, plain_server(next(iter(files.values())).parent) as base:
        for variant, path in files.items():
            s = Series("plain-http", variant.value, limit_s)
            await measure(ctx, base + "/", f"{base}/media/{path.name}", s, runs)
            out.append(s)
    return out


# ---- the peersm side -------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """The peersm side could not be measured (a download failed, a CSP violation, ...)."""


def _media_log(page: Page) -> list[dict[str, Any]]:
    """The ``/stream/`` requests ``page`` makes, in order: ``range`` (the start of its Range, -1: none),
    ``sent_ms`` (when it was sent, from the log's start) and ``headers_ms`` (from sending it to its
    response headers, which the stream sends once it holds the first bytes; None: none came)."""
    log: list[dict[str, Any]] = []
    t0 = time.monotonic()
    sent: dict[Request, tuple[dict[str, Any], float]] = {}

    def on_request(request: Request) -> None:
        if "/stream/" in request.url:
            start = request.headers.get("range", "").removeprefix("bytes=").split("-")[0]
            now = time.monotonic()
            entry: dict[str, Any] = {
                "range": int(start) if start.isdigit() else -1,
                "sent_ms": round((now - t0) * 1000),
                "headers_ms": None,
            }
            log.append(entry)
            sent[request] = (entry, now)

    def on_response(response: Response) -> None:
        if response.request in sent:
            entry, at = sent.pop(response.request)
            entry["headers_ms"] = round((time.monotonic() - at) * 1000)
            entry["status"] = response.status

    page.on("request", on_request)
    page.on("response", on_response)
    return log


async def _wait_manifest(requester: Peer, id_: str) -> None:
    deadline = time.monotonic() + MANIFEST_TIMEOUT
    while True:
        d = await requester.get(f"/api/downloads/{id_}")
        if int(d["total"]) > 0:
            return
        if d["state"] == "failed":
            raise BenchError(f"the download failed before its manifest came: {d.get('error')}")
        if time.monotonic() > deadline:
            raise BenchError(f"no manifest within {MANIFEST_TIMEOUT:.0f} s (state {d['state']})")
        await asyncio.sleep(0.02)


async def _peersm_run(
    ctx: BrowserContext, holder: Peer, requester: Peer, origin: str, path: Path, run: int, s: Series
) -> None:
    """One fresh download in progress: share, fetch, measure on a fresh logged-in tab, cancel."""
    fresh = path.with_name(f"{path.stem}-run{run}{path.suffix}")
    os.link(path, fresh)  # a new path: a new import, a new key, a new hash_name
    share = await holder.post("/api/shares", {"path": str(fresh), "encrypt": True})
    t0 = time.monotonic()
    id_ = str((await requester.post("/api/downloads", {"link": share["link"]}))["id"])
    try:
        await _wait_manifest(requester, id_)
        s.link_ms.append((time.monotonic() - t0) * 1000)
        page = await ctx.new_page()
        try:
            log = _media_log(page)
            await page.goto(origin + UI_PAGE)
            await page.evaluate(ADD_VIDEO)
            await start_and_seek(page, f"/stream/{share['hash_name']}", s)
            d = await requester.get(f"/api/downloads/{id_}")  # as the measurement ends
            violations = await page.evaluate("() => window.__cspViolations")
            if violations:
                raise BenchError(f"CSP violations during the measurement: {violations}")
        finally:
            await page.close()
        s.downloads.append(
            {
                "in_progress": d["state"] != "complete" and int(d["have"]) < int(d["total"]),
                "held": round(int(d["have"]) / int(d["total"]), 3),
                "rate_bytes_s": d["rate"],
                "circuits": d["circuits"],
                "replaced": d["replaced"],
                "replace_reasons": d["replace_reasons"],
                "preempted": d["preempted"],
                "first_byte_s": None if d["first_byte_s"] is None else round(d["first_byte_s"], 2),
                "media_requests": log,
            }
        )
    finally:
        with contextlib.suppress(ApiError):  # 409: it completed (then reported as not in progress)
            await requester.post(f"/api/downloads/{id_}/cancel", {})


async def measure_peersm(
    state: dict[str, Any], files: dict[Variant, Path], runs: int, limit_s: float
) -> dict[str, Any]:
    """The peersm half on the started testnet ``state``: per variant, ``runs`` fresh downloads in
    progress measured on the requester's ``/stream/<hash_name>``; also the page's CSP check."""
    from tests.webui.browser import chromium
    from tests.webui.uikit import login, peer

    holder, requester = peer(state, HOLDER), peer(state, REQUESTER)
    out = []
    async with chromium() as ctx:
        page, origin = await login(ctx, requester)  # the session cookie, for every tab of ctx
        response = await page.goto(origin + UI_PAGE)
        csp = (response.headers.get("content-security-policy", "") if response else "") or ""
        await page.evaluate(ADD_VIDEO)
        if "media-src 'self'" not in csp or not await page.evaluate(INLINE_REFUSED):
            raise BenchError(f"the UI page's CSP is not in force as expected: {csp!r}")
        await page.close()
        for variant, path in files.items():
            s = Series("peersm", variant.value, limit_s)
            for run in range(runs):
                await _peersm_run(ctx, holder, requester, origin, path, run, s)
            out.append(s)
    return {"series": out, "page_csp": csp}


# ---- the whole ----------------------------------------------------------------------------------


def startup_bytes(path: Path) -> int:
    """How many bytes from the file's start a player reads before it has the first packet of every
    stream (for an index-at-end MP4, on top of the index it fetches from the end)."""
    ends: dict[int, int] = {}
    with av.open(str(path)) as f:
        for packet in f.demux():
            if packet.pos is not None and packet.pos >= 0 and packet.stream.index not in ends:
                ends[packet.stream.index] = packet.pos + packet.size
                if len(ends) == len(f.streams):
                    break
    return max(ends.values())


def _ratios(reference: list[Series], peersm: list[Series]) -> list[dict[str, Any]]:
    """peersm's median over the reference's, per variant (None: peersm's is over the limit)."""
    ref = {s.variant: s.summary() for s in reference}
    out = []
    for p in (s.summary() for s in peersm):
        r = ref[p["variant"]]
        row: dict[str, Any] = {"variant": p["variant"]}
        for key in ("start_ms", "seek_ms"):
            a, b = p[key]["median"], r[key]["median"]
            row[key.removesuffix("_ms")] = round(a / b, 1) if a is not None and b else None
        out.append(row)
    return out


class _Terminated(SystemExit):
    """SIGTERM (``timeout``, CI): unwinds like an error, so the testnet and the browsers are stopped."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(128 + signum)


T = TypeVar("T")


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, a SIGTERM meanwhile cancelling ``coro`` alone (its ``finally`` blocks
    close the browser while Playwright's connection still works), then raising :class:`_Terminated`."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        terminated: list[bool] = []

        def on_term() -> None:
            terminated.append(True)
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
        try:
            return await coro
        except asyncio.CancelledError:
            if terminated:
                raise _Terminated(128 + signal.SIGTERM) from None
            raise

    try:
        return asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, _on_sigterm)  # the loop's handler is gone with the loop


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.webui.uikit import running_testnet

    t0, load0 = time.monotonic(), os.getloadavg()[0]
    spec = MediaSpec(seconds=args.seconds, width=320, height=180, bitrate=2_500_000)
    with tempfile.TemporaryDirectory(prefix="peersm-bench-stream-") as tmp:
        d = Path(tmp)
        (d / "media").mkdir()
        files = {v: write_media(d / "media" / f"clip-{v.value}{v.suffix}", v, spec) for v in VARIANTS}
        made = time.monotonic() - t0
        files_info = {
            v.value: {"bytes": p.stat().st_size, "startup_bytes": startup_bytes(p)} for v, p in files.items()
        }
        reference = _run_async(measure_reference(files, args.runs, args.limit))
        t1 = time.monotonic()
        net = NetSpec(
            peers=PEERS,
            dir=d / "net",
            links=3,
            exits=0,
            stable=True,
            peer_args={HOLDER: ("--max-upload", str(CAP))},
        )
        with running_testnet(net) as state:
            started = time.monotonic() - t1
            peersm = _run_async(measure_peersm(state, files, args.runs, args.limit))
    series: list[Series] = peersm["series"]
    return {
        "media": {
            "seconds": spec.seconds,
            "video_bitrate": spec.bitrate,
            "files": files_info,
            "made_in_s": round(made, 1),
        },
        "runs": args.runs,
        "goal_ms": GOAL_MS,
        "limit_ms": round(args.limit * 1000),
        "reference": [s.summary() for s in reference],
        "peersm": [s.summary() for s in series],
        "ratio_peersm_to_reference": _ratios(reference, series),
        "testnet": {
            "peers": PEERS,
            "holder_cap_bytes_s": CAP,
            "started_in_s": round(started, 1),
            "ui_page": UI_PAGE,
            "page_csp": peersm["page_csp"],
        },
        "wall_s": round(time.monotonic() - t0, 1),
        "load_avg_1min": {
            "start": round(load0, 2),
            "end": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        },
    }


def _ms(x: dict[str, Any]) -> str:
    if x["median"] is not None:
        figure = f"{x['median']:7.1f} ms"
    elif x["over_limit"]:
        figure = f"> {x['limit_ms']:5d} ms"
    else:
        figure = "not measured"
    missing = x.get("not_measured", 0)
    return (
        figure + (" ok  " if x["goal_met"] else " MISS") + (f" ({missing} not measured)" if missing else "")
    )


def _print(result: dict[str, Any]) -> None:
    m, net = result["media"], result["testnet"]
    print(
        f"stream benchmark: {m['seconds']:.0f} s test video ({m['video_bitrate'] / 1e6:.1f} Mbit/s of video), "
        f"{result['runs']} runs each, medians (goal <= {result['goal_ms']:.0f} ms, "
        f"limit {result['limit_ms'] / 1000:.0f} s)"
    )
    for name, f in m["files"].items():
        print(
            f"  {name}: {f['bytes'] / 1e6:.2f} MB; a player reads its first {f['startup_bytes'] / 1e6:.2f} MB "
            "before it has a packet of every stream"
        )
    ratios = {r["variant"]: r for r in result["ratio_peersm_to_reference"]}
    for side in ("reference", "peersm"):
        for s in result[side]:
            print(
                f"  {side:<9} {s['variant']:<14} play->currentTime>0 {_ms(s['start_ms'])}   "
                f"seek 80% -> playing {_ms(s['seek_ms'])}"
            )
            if side != "peersm":
                continue
            r = ratios[s["variant"]]
            running = sum(s["in_progress"])

            def times(x: float | None) -> str:
                return f"x{x}" if x is not None else "over the limit"

            print(
                f"      peersm/reference: start {times(r['start'])}, seek {times(r['seek'])}; "
                f"link->Play {s['link_to_play_ms']['median']:.0f} ms; download still running at the end "
                f"of {running}/{s['runs']} runs"
                + ("" if running == s["runs"] else " - NOT ALL: the others read local pieces")
            )
            for i, dl in enumerate(s["downloads"]):
                gets = " ".join(
                    f"{q['range']}@{q['headers_ms']}ms" if q["headers_ms"] is not None else f"{q['range']}@-"
                    for q in dl["media_requests"]
                )
                print(
                    f"      run {i + 1}: held {dl['held']:.0%}, {dl['rate_bytes_s'] / 1000:.0f} kB/s over "
                    f"{dl['circuits']} circuit(s) ({dl['replaced']} replaced), first byte after "
                    f"{dl['first_byte_s']} s; GETs (range start@wait for headers): {gets}"
                )
    print(
        f"  peersm: {net['peers']} peers, holder's upload capped at {net['holder_cap_bytes_s']} B/s, "
        f"testnet started in {net['started_in_s']} s; wall time {result['wall_s']} s"
    )
    load = result["load_avg_1min"]
    print(
        f"  machine: load average {load['start']} at the start, {load['end']} at the end, {load['cpus']} CPUs"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stream",
        description="Time from play() to currentTime > 0 and from a seek to 80% to playing again, "
        "in Debian's Chromium, median of several runs: from a plain local HTTP server (the reference) "
        "and from peersm (a requester's /stream/ URL while its download from a capped holder runs).",
        epilog=f"peersm: a testnet of {PEERS} peers, the holder's upload capped at {CAP} B/s; per run a "
        "fresh encrypted share, fetched and measured while in progress, then cancelled. Also "
        "reported: the time from the link to the Play button (the manifest known), whether each "
        "download was still running when measured, and how it went.",
    )
    p.add_argument(
        "--quick", action="store_true", help="a 20 s video, 3 runs, a 5 s limit (about 2 minutes in all)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--seconds", type=float, default=None, help="length of the test video (default 60)")
    p.add_argument("--runs", type=int, default=None, help="runs per variant and side (default 5)")
    p.add_argument(
        "--limit", type=float, default=None, help="seconds a start or a seek may take at most (default 30)"
    )
    args = p.parse_args(argv)
    args.seconds = args.seconds or (20.0 if args.quick else 60.0)
    args.runs = args.runs or (3 if args.quick else 5)
    args.limit = args.limit or (5.0 if args.quick else 30.0)
    if args.seconds < 5 or args.runs < 1 or args.limit < 1:
        p.error("--seconds is at least 5, --runs and --limit at least 1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
