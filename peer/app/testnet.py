"""``peersm testnet up|down``: a bridge and N peers as separate processes on loopback.

Each peer has its own data dir and its own address 127.<i+1>.0.1 (distinct /16s, so the
path rules can hold), a stable identity by default, and K links (default 3, so that the
download path rules can hold in a small network).  ``D/testnet.json`` says where everything
is; ``down`` stops exactly the processes recorded there (checked by their command line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.app.apiclient import ApiClient
from peer.errors import PeerError, UsageError

TESTNET_FILE = "testnet.json"
LOOPBACK_EXIT = "accept 127.0.0.1:*"


@dataclass
class NetSpec:
    peers: int
    dir: Path
    links: int = 3
    exits: int = 1
    stable: bool = True
    ready_timeout: float = 60.0
    min_links: int = 1
    extra_args: tuple[str, ...] = ()
    #: extra arguments for some peers only (by index), e.g. a test-only lying holder
    peer_args: dict[int, tuple[str, ...]] | None = None
    #: test only (DESIGN §11): every process records what it saw into DIR/<name>.record
    record: bool = False
    #: every peer's upload cap as a holder, bytes/s (``--max-upload``); None: no cap.  One peer
    #: only: ``peer_args={i: ("--max-upload", "500K")}``
    max_upload: int | None = None


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115  (kept open by the child)
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
    )


def _first_line(p: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> str:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(p.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        chunk = p.stdout.read() or b""
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0].decode()
        if p.poll() is not None:
            raise UsageError(f"{what} exited with status {p.returncode} before it was ready (see its log)")
        time.sleep(0.05)
    raise UsageError(f"{what} did not start within {timeout:.0f} s")


def launch_testnet(spec: NetSpec) -> dict[str, Any]:
    if spec.peers < 2:
        raise UsageError("a testnet needs at least 2 peers")
    if spec.peers > 250:
        raise UsageError("at most 250 peers (one 127.N.0.1 address each)")
    d = spec.dir
    if (d / TESTNET_FILE).exists():
        raise UsageError(f"{d / TESTNET_FILE} exists: run `peersm testnet down --dir {d}` first")
    d.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "peer.app.cli"]
    bargs = [*exe, "bridge", "--listen", "127.0.0.1:0"]
    if spec.record:
        bargs += ["--test-record", str(d / "bridge.record")]
    bridge = _spawn(bargs, d / "bridge.log")
    state: dict[str, Any] = {"bridge": None, "bridge_pid": bridge.pid, "peers": []}
    try:
        url = _first_line(bridge, "the bridge")
        state["bridge"] = url
        peers: list[dict[str, Any]] = []
        for i in range(spec.peers):
            name = f"peer{i}"
            data = d / name
            args = [
                *exe,
                "up",
                "--data",
                str(data),
                "--listen",
                f"127.{i + 1}.0.1",
                "--bridge",
                url,
                "--links",
                str(spec.links),
                "--socks",
                "127.0.0.1:0",
                *spec.extra_args,
            ]
            if spec.stable:
                args.append("--stable")
            if i >= spec.peers - spec.exits:
                args += ["--exit-policy", LOOPBACK_EXIT]
            if spec.max_upload is not None:
                args += ["--max-upload", str(spec.max_upload)]
            if spec.peer_args and i in spec.peer_args:
                args += list(spec.peer_args[i])
            if spec.record:
                args += ["--test-record", str(d / f"{name}.record")]
            p = _spawn(args, d / f"{name}.log")
            info = json.loads(_first_line(p, name))
            peers.append(
                {
                    "name": name,
                    "data_dir": str(data),
                    "api": info["api"],
                    "pid": p.pid,
                    "args": args,
                    "node_id": info["node_id"],
                    "socks": info["socks"],
                    "exit": i >= spec.peers - spec.exits,
                }
            )
        state["peers"] = peers
        _write(d, state)
        wait_ready(d, spec.ready_timeout, max(spec.min_links, spec.links - 1))
        return state
    except BaseException:
        _write(d, state)
        stop_testnet(d)
        raise


def _write(d: Path, state: dict[str, Any]) -> None:
    tmp = d / (TESTNET_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, d / TESTNET_FILE)


def load(d: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((d / TESTNET_FILE).read_text()))
    except FileNotFoundError:
        raise UsageError(f"no testnet in {d} (no {TESTNET_FILE})") from None


def wait_ready(d: Path, timeout: float, min_links: int = 1) -> None:
    """Wait until every peer has ``min_links`` links and knows others, and the link graph is connected."""
    state = load(d)
    peers = list(state["peers"])
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        graph: dict[str, list[str]] = {}
        ok = True
        for p in peers:
            try:
                st = ApiClient.from_data_dir(Path(p["data_dir"]), timeout=5).get("/api/status")
            except PeerError as exc:
                last, ok = str(exc), False
                break
            links = [ln["peer"] for ln in st.get("links") or []]
            graph[str(st.get("node_id", ""))[:16]] = links
            if len(links) < min_links or not st.get("known_peers"):
                last, ok = f"{p['name']}: {len(links)} links, {st.get('known_peers')} known peers", False
        if ok and _connected(graph):
            return
        if ok:
            last = "the link graph is not connected yet"
        time.sleep(0.5)
    raise UsageError(f"the testnet was not ready within {timeout:.0f} s ({last})")


def _connected(graph: dict[str, list[str]]) -> bool:
    if not graph:
        return False
    start = next(iter(graph))
    seen = {start}
    todo = [start]
    while todo:
        for n in graph.get(todo.pop(), []):
            if n in graph and n not in seen:
                seen.add(n)
                todo.append(n)
    return len(seen) == len(graph)


def respawn(d: Path, name: str) -> dict[str, Any]:
    """Start a peer of the testnet again with its own arguments (after it died); returns its entry."""
    state = load(d)
    for p in state["peers"]:
        if p["name"] == name:
            if _ours(int(p["pid"]), str(p["data_dir"])):
                raise UsageError(f"{name} is still running")
            proc = _spawn(list(p["args"]), d / f"{name}.log")
            info = json.loads(_first_line(proc, name))
            p.update(pid=proc.pid, api=info["api"], socks=info["socks"])
            _write(d, state)
            return dict(p)
    raise UsageError(f"no peer {name} in this testnet")


def _ours(pid: int, marker: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "peer.app.cli" in cmd and marker in cmd


def stop_testnet(d: Path, timeout: float = 10.0) -> int:
    """Stop exactly the processes of this testnet; returns how many were stopped."""
    state = load(d)
    procs: list[tuple[int, str]] = []
    if state.get("bridge_pid"):
        procs.append((int(state["bridge_pid"]), "bridge"))
    for p in state.get("peers") or []:
        procs.append((int(p["pid"]), str(p["data_dir"])))
    live = [(pid, m) for pid, m in procs if _ours(pid, m)]
    for pid, _ in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid, m in live:
        while _ours(pid, m) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _ours(pid, m):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)
    (d / TESTNET_FILE).unlink(missing_ok=True)
    return len(live)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
