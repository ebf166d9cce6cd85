"""``peersm demo``: a local network on this machine that shares and fetches a file anonymously.

It starts a throwaway testnet (a bridge and 8 peers as processes on 127.N.0.1, with the
anonymity recorder on for this testnet only), shares a generated sample file from one peer,
fetches it on another through ORDB circuits, verifies it, prints who saw what, stops every
process it started and deletes the records.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from peer.app.apiclient import ApiClient
from peer.app.testnet import NetSpec, launch_testnet, stop_testnet
from peer.errors import PeerError
from peer.testing.anonymity import Views

HOLDER, REQUESTER = 1, 6


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(*, peers: int = 8, megabytes: float = 4.0, hops: int = 3) -> int:
    if peers < 6:
        print("peersm demo: the path rules need at least 6 peers", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="peersm-demo-"))
    t0 = time.monotonic()
    try:
        _say(f"starting a bridge and {peers} peers on 127.1.0.1 … 127.{peers}.0.1 (3 links each)…")
        state = launch_testnet(NetSpec(peers=peers, dir=work / "net", links=3, exits=0, record=True))
        _say(f"  network ready in {time.monotonic() - t0:.1f} s")
        sample = work / "sample.bin"
        sample.write_bytes(os.urandom(int(megabytes * 1_000_000)))
        digest = hashlib.sha256(sample.read_bytes()).hexdigest()
        holder = ApiClient.from_data_dir(Path(state["peers"][HOLDER]["data_dir"]), timeout=60)
        requester = ApiClient.from_data_dir(Path(state["peers"][REQUESTER]["data_dir"]), timeout=60)
        link = holder.post("/api/shares", {"path": str(sample), "encrypt": False})["link"]
        _say(f"peer{HOLDER} shared {megabytes:.1f} MB: {link}")
        t1 = time.monotonic()
        s = requester.post("/api/downloads", {"link": link, "output": str(work / "fetched.bin")})
        last = 0.0
        while s["state"] not in ("complete", "failed"):
            time.sleep(0.3)
            s = requester.get(f"/api/downloads/{s['id']}")
            if time.monotonic() - last > 1.0 and s["total"]:
                last = time.monotonic()
                _say(f"  peer{REQUESTER}: {100 * s['have'] / s['total']:5.1f}%  {s['circuits']} circuits")
            if time.monotonic() - t1 > 150:
                _say("peersm demo: the download did not finish in time")
                return 1
        dt = time.monotonic() - t1
        if s["state"] != "complete":
            _say(f"peersm demo: the download failed: {s['error']}")
            return 1
        ok = hashlib.sha256((work / "fetched.bin").read_bytes()).hexdigest() == digest
        _say(
            f"peer{REQUESTER} fetched it in {dt:.1f} s ({megabytes / dt:.2f} MB/s), first byte after "
            f"{s['first_byte_s'] or 0:.2f} s, over {s['ordbs']} ORDBs; sha256 {'matches' if ok else 'DIFFERS'}"
        )
        _say(
            f"path: requester -> guard -> middle -> ORDB ({hops} hops) ... ORDB <- middle <- guard <- holder"
        )
        time.sleep(0.5)
        _report(Views(work / "net"), bytes.fromhex(s["id"]))
        return 0 if ok else 1
    except PeerError as exc:
        print(f"peersm demo: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            stop_testnet(work / "net")
        except PeerError:
            pass
        shutil.rmtree(work, ignore_errors=True)  # the records go with the throwaway testnet
        _say(f"stopped everything and deleted the records ({time.monotonic() - t0:.0f} s in all)")


def _report(v: Views, h: bytes) -> None:
    req, hol = f"peer{REQUESTER}", f"peer{HOLDER}"
    _say("who saw what:")
    for name in sorted(v.node_of, key=lambda n: int(n[4:]) if n[4:].isdigit() else 0):
        if name in (req, hol):
            role = "requester" if name == req else "holder"
            _say(f"  {name:7} {role}")
            continue
        knows_req = v.saw_identity(name, req)
        knows_hol = v.saw_identity(name, hol)
        content = v.saw_content(name, h)
        parts = []
        if knows_req:
            parts.append("the requester's address (linked to it)")
        if knows_hol:
            parts.append("the holder's address (linked to it)")
        if content:
            ends = v.ordb_for(name, h)
            of = " and ".join(role for end, role in ((req, "requester's"), (hol, "holder's")) if end in ends)
            parts.append(
                f"the hash_name (as an ORDB of the {of} circuits)" if of else "the hash_name (as an ORDB)"
            )
        else:
            parts.append("not the hash_name")
        _say(f"  {name:7} saw {', '.join(parts)}")
    leaks = v.leaks(req, h) + v.leaks(hol, h)
    _say(
        "  bridge  saw sealed offers and answers only"
        + ("" if not any(h.hex() in b for b in v.bridge) else " — and the hash_name (unexpected!)")
    )
    _say(
        "verdict: no peer linked the requester or the holder to the content"
        if not leaks
        else f"verdict: LEAK: {leaks}"
    )
