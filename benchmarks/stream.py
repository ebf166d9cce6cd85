"""Streaming start and seek latency in Chromium (issue 11 "Benchmark"): the reference half.

    python -m benchmarks.stream [--quick] [--json] [--seconds S] [--runs N]

For each MP4 variant of a test video made with PyAV (``tests/webui/media.py``: index at the front,
index at the end; about 3 Mbit/s), Debian's Chromium (``tests/webui/browser.py``) measures, per run,
on a fresh page:

* **start**: from ``play()`` on a ``<video>`` whose ``src`` was just set (nothing loaded yet) to
  ``currentTime > 0``;
* **seek**: once playing past 1 s, from setting ``currentTime`` to 80 % of the duration to
  ``currentTime`` passing that point (playing again).

Figures are medians over the runs (milliseconds).  The goal of the issue is <= 1 s for each.

**Reference**: the file served by a plain local HTTP server (aiohttp static files on 127.0.0.1,
with Range, ``Cache-Control: no-store`` so no run is served from the browser's cache).

**peersm side: not yet measured.**  It comes when the stream endpoint (``/stream/<hash_name>``)
and the player page land: a testnet with the holder's upload capped (``NetSpec.max_upload``) so
the download is still in progress, the same measurements against the requester's stream URL
(see :func:`measure_peersm`, the hook that stays to be filled).  The output says so.

``--quick`` (a 20 s video, 3 runs per variant) finishes well within 60 s.  CI runs it inside
``unshare -n`` (only loopback) from .ci/run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.webui.media import MediaSpec, Variant, write_media

PAGE = b"<!doctype html><title>bench</title><video id=v preload=none muted></video>"
VARIANTS = (Variant.MP4_FASTSTART, Variant.MP4_INDEX_END)
GOAL_MS = 1000.0
NOT_YET = "not yet measured (needs the stream endpoint and the player page of issue 11)"

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


@dataclass
class Series:
    """One source and variant: the start and seek times of every run, in ms."""

    source: str
    variant: str
    start_ms: list[float] = field(default_factory=list)
    seek_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "variant": self.variant, "runs": len(self.start_ms)}
        for key, values in (("start_ms", self.start_ms), ("seek_ms", self.seek_ms)):
            out[key] = {
                "median": round(statistics.median(values), 1),
                "min": round(min(values), 1),
                "max": round(max(values), 1),
                "goal_met": statistics.median(values) <= GOAL_MS,
            }
        return out


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


async def measure(ctx: Any, page_url: str, media_url: str, series: Series, runs: int) -> None:
    """``runs`` start+seek measurements, each on a fresh page, appended to ``series``."""
    for run in range(runs):
        page = await ctx.new_page()
        try:
            await page.goto(page_url)
            series.start_ms.append(await page.evaluate(START, f"{media_url}?run={run}"))
            series.seek_ms.append(await page.evaluate(SEEK, 0.8))
        finally:
            await page.close()


async def measure_reference(ctx: Any, files: dict[Variant, Path], runs: int) -> list[Series]:
    out = []
    async with plain_server(next(iter(files.values())).parent) as base:
        for variant, path in files.items():
            s = Series("plain-http", variant.value)
            await measure(ctx, base + "/", f"{base}/media/{path.name}", s, runs)
            out.append(s)
    return out


async def measure_peersm(ctx: Any, files: dict[Variant, Path], runs: int) -> list[Series] | None:
    """The peersm half (hook): a testnet (``peer.app.testnet.launch_testnet`` with
    ``NetSpec(max_upload=...)`` so the download lasts), the file shared on one peer and fetched
    on another, then :func:`measure` against the requester's ``/stream/<hash_name>`` while the
    download is in progress (a logged-in page: the stream cookie).  None until the stream
    endpoint and the player page exist."""
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.webui.browser import chromium

    t0 = time.monotonic()
    spec = MediaSpec(seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="peersm-bench-stream-") as tmp:
        d = Path(tmp)
        files = {v: write_media(d / f"clip-{v.value}{v.suffix}", v, spec) for v in VARIANTS}
        made = time.monotonic() - t0
        async with chromium() as ctx:
            reference = await measure_reference(ctx, files, args.runs)
            peersm = await measure_peersm(ctx, files, args.runs)
    return {
        "media": {"seconds": spec.seconds, "bitrate": spec.bitrate, "made_in_s": round(made, 1)},
        "runs": args.runs,
        "goal_ms": GOAL_MS,
        "reference": [s.summary() for s in reference],
        "peersm": [s.summary() for s in peersm] if peersm is not None else NOT_YET,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def _print(result: dict[str, Any]) -> None:
    m = result["media"]
    print(
        f"stream benchmark: {m['seconds']:.0f} s test video at {m['bitrate'] / 1e6:.1f} Mbit/s, "
        f"{result['runs']} runs each, medians (goal <= {result['goal_ms']:.0f} ms)"
    )
    for s in result["reference"]:
        print(
            f"  reference {s['source']:<10} {s['variant']:<14} "
            f"play->currentTime>0 {s['start_ms']['median']:7.1f} ms   "
            f"seek 80% -> playing {s['seek_ms']['median']:7.1f} ms"
        )
    if isinstance(result["peersm"], str):
        print(f"  peersm side: {result['peersm']}")
    else:
        for s in result["peersm"]:
            print(
                f"  peersm    {s['source']:<10} {s['variant']:<14} "
                f"play->currentTime>0 {s['start_ms']['median']:7.1f} ms   "
                f"seek 80% -> playing {s['seek_ms']['median']:7.1f} ms"
            )
    print(f"  wall time {result['wall_s']} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stream",
        description="Time from play() to currentTime > 0 and from a seek to 80%% to playing again, "
        "in Debian's Chromium, median of several runs.",
        epilog="Reference: the file from a plain local HTTP server. peersm side: not yet measured "
        "(it comes with the stream endpoint and the player page).",
    )
    p.add_argument("--quick", action="store_true", help="a 20 s video and 3 runs (well within 60 s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--seconds", type=float, default=None, help="length of the test video (default 60)")
    p.add_argument("--runs", type=int, default=None, help="runs per variant (default 9)")
    args = p.parse_args(argv)
    args.seconds = args.seconds or (20.0 if args.quick else 60.0)
    args.runs = args.runs or (3 if args.quick else 9)
    if args.seconds < 5 or args.runs < 1:
        p.error("--seconds is at least 5 and --runs at least 1")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
