"""``peersm share`` and ``peersm get``: talk to the running peer through its local API."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from peer.app.apiclient import ApiClient, ApiError
from peer.errors import PeerError
from storage.sharelink import ShareLink


def _client(args: argparse.Namespace) -> ApiClient:
    from peer.app.paths import default_data_dir

    return ApiClient.from_data_dir(args.data or default_data_dir(), timeout=600)


def cmd_share(args: argparse.Namespace) -> int:
    path = Path(args.file).resolve()
    if not path.is_file():
        print(f"peersm share: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        res = _client(args).post(
            "/api/shares",
            {"path": str(path), "encrypt": bool(args.encrypt), "seed": not getattr(args, "no_seed", False)},
        )
    except PeerError as exc:
        print(f"peersm share: {exc}", file=sys.stderr)
        return 1
    print(
        f"shared {path.name} ({path.stat().st_size / 1e6:.1f} MB); anyone with this link can fetch it:",
        file=sys.stderr,
    )
    print(res["link"])
    return 0


#: what the line says before the first piece, by download state
WAITING = {
    "starting": "starting",
    "connecting": "building circuits to ORDBs",
    "searching": "searching: no ORDB has it yet (a share made a moment ago can take a few seconds)",
}


def _bar(s: dict[str, Any], t0: float) -> str:
    state = str(s.get("state") or "")
    if state in WAITING and not s.get("total"):
        return f"{WAITING[state]}  {time.monotonic() - t0:4.0f} s  {s.get('circuits') or 0} circuits"
    have, total = int(s.get("have") or 0), int(s.get("total") or 0)
    size, got = int(s.get("size") or 0), int(s.get("bytes") or 0)
    pct = 100.0 * have / total if total else 0.0
    filled = int(pct / 5)
    rate = got / max(time.monotonic() - t0, 1e-6)
    eta = f"ETA {(size - got) / rate:4.0f} s" if rate > 0 and size > got else "        "
    return (
        f"[{'#' * filled}{'.' * (20 - filled)}] {pct:5.1f}%  {got / 1e6:7.1f}/{size / 1e6:.1f} MB  "
        f"{rate / 1e6:5.2f} MB/s  {eta}  {s.get('circuits')} circuits"
    )


def cmd_get(args: argparse.Namespace) -> int:
    text = sys.stdin.readline().strip() if args.link == "-" else args.link
    try:
        ShareLink.parse(text)
    except PeerError as exc:
        print(f"peersm get: bad link: {exc}", file=sys.stderr)
        return 2
    out = str(Path(args.output).resolve()) if args.output else None
    try:
        client = _client(args)
        summary = client.post("/api/downloads", {"link": text, "output": out})
        t0 = time.monotonic()
        tty = sys.stderr.isatty()
        last = 0.0
        final: dict[str, Any] = dict(summary)
        for s in client.stream_events(f"/api/downloads/{summary['id']}/events"):
            final = s
            now = time.monotonic()
            if now - last >= (0.2 if tty else 1.0) or s.get("state") in ("complete", "failed"):
                last = now
                print(
                    ("\r" if tty else "") + _bar(s, t0), end="" if tty else "\n", file=sys.stderr, flush=True
                )
        if tty:
            print(file=sys.stderr)
    except ApiError as exc:
        print(f"\npeersm get: {exc}", file=sys.stderr)
        return 1
    except PeerError as exc:
        print(f"\npeersm get: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\npeersm get: interrupted; the peer keeps the download (run the same command to attach)",
            file=sys.stderr,
        )
        return 130
    if final.get("state") != "complete":
        print(f"peersm get: {final.get('error') or 'the download did not complete'}", file=sys.stderr)
        return 1
    where = final.get("exported") or "the peer's store"
    print(
        f"complete and verified: {final.get('size')} bytes in {where} "
        f"(over {final.get('ordbs')} ORDBs, {final.get('bad_pieces')} bad pieces refused)",
        file=sys.stderr,
    )
    return 0
