"""A private Tor network on 127.0.0.1 for tests and benchmarks (Debian's ``tor`` package).

Three directory authorities (keys made with ``tor-gencert`` and ``tor --list-fingerprint``),
two middle relays, one exit and one tor *client* with a SocksPort and a ControlPort, all with
``TestingTorNetwork 1`` and every address 127.0.0.1.  The exit publishes a broad exit policy (tor
0.4.9 clients only pick exits whose consensus summary accepts the port) and is confined to
loopback by ``OutboundBindAddressExit 127.0.0.1`` and a resolver file that points at 127.0.0.1.
Each process carries ``__OwningControllerProcess`` so that it exits if the test process dies.

:class:`TorNet` starts exactly its own processes and stops exactly those (by their Popen
handles, never by name).  See docs/tor.md.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

LOOPBACK = "127.0.0.1"
N_AUTHORITIES = 3
N_MIDDLES = 2
N_EXITS = 1
# Voting cadence: the first consensus after ~20 s, then one every 30 s (each valid 3 intervals:
# a real-clock freshness check must happen within 90 s of the fetch).
# 10 s: the first consensus comes about twice as soon as with 20 (network up in 27-33 s, not 58-64)
INITIAL_VOTING_INTERVAL = 10
VOTING_INTERVAL = 30


class _LineReader(Protocol):
    def readline(self) -> bytes: ...


class TorNetError(RuntimeError):
    """The private network could not be set up (tor missing, a process died, timeout)."""


@dataclass(frozen=True, slots=True)
class Authority:
    nickname: str
    host: str
    orport: int
    dirport: int
    v3ident: str  # hex SHA-1 of the authority's v3 identity key (its key certificate's fingerprint)
    fingerprint: str  # hex SHA-1 of its relay RSA identity key

    @property
    def spec(self) -> str:
        """The ``HOST:DIRPORT=V3IDENT`` form taken by ``peersm tor --authority``."""
        return f"{self.host}:{self.dirport}={self.v3ident}"


@dataclass(frozen=True, slots=True)
class Relay:
    nickname: str
    host: str
    orport: int
    fingerprint: str  # hex RSA identity
    ed25519_id: bytes  # 32 bytes, from keys/ed25519_master_id_public_key
    role: str  # "authority", "middle" or "exit"


@dataclass(slots=True)
class _Node:
    nickname: str
    role: str
    datadir: Path
    orport: int = 0
    dirport: int = 0
    socksport: int = 0
    controlport: int = 0
    v3ident: str = ""
    fingerprint: str = ""
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tor_available() -> bool:
    return shutil.which("tor") is not None and shutil.which("tor-gencert") is not None


class TorNet:
    """A private tor network in ``workdir``.  Use as ``with TorNet(tmp) as net:`` or start()/stop()."""

    def __init__(self, workdir: Path | str, *, timeout: float = 150.0, info_logs: bool = False) -> None:
        self.workdir = Path(workdir)
        self.info_logs = info_logs or os.environ.get("PEERSM_TORNET_INFO_LOGS") == "1"
        self.timeout = timeout
        self._nodes: list[_Node] = []
        self._started = False

    # ----- public view -------------------------------------------------------------------------
    @property
    def authorities(self) -> list[Authority]:
        return [
            Authority(n.nickname, LOOPBACK, n.orport, n.dirport, n.v3ident, n.fingerprint)
            for n in self._nodes
            if n.role == "authority"
        ]

    @property
    def relays(self) -> list[Relay]:
        """Every relay of the network (authorities included: they relay too)."""
        return [
            Relay(n.nickname, LOOPBACK, n.orport, n.fingerprint, self._ed25519_id(n), n.role)
            for n in self._nodes
            if n.role != "client"
        ]

    @property
    def client_socks(self) -> tuple[str, int]:
        return (LOOPBACK, self._client.socksport)

    @property
    def client_control(self) -> tuple[str, int]:
        return (LOOPBACK, self._client.controlport)

    @property
    def _client(self) -> _Node:
        return next(n for n in self._nodes if n.role == "client")

    def log_of(self, nickname: str) -> str:
        """The notice log of one node (for failure messages)."""
        path = next(n.datadir for n in self._nodes if n.nickname == nickname) / "notice.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ----- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> TorNet:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if not tor_available():
            raise TorNetError("tor is not installed (apt-get install -y tor)")
        if self._started:
            return
        self._started = True
        try:
            self._plan()
            for node in self._nodes:
                if node.role == "authority":
                    self._make_authority_keys(node)
            for node in self._nodes:
                if node.role in ("middle", "exit"):
                    self._write_torrc(node)
                    node.fingerprint = self._list_fingerprint(node)
            for node in self._nodes:  # authorities last known the exit fingerprints to vote Exit for
                self._write_torrc(node)
            # The client starts once a consensus lists every relay as Running: a client that saw an
            # incomplete first consensus can take minutes to fetch the next one.
            deadline = time.monotonic() + self.timeout
            for node in self._nodes:
                if node.role != "client":
                    self._launch(node)
            self._wait(deadline, self._consensus_ready, "a consensus listing every relay")
            self._launch(self._client)
            self._wait(deadline, self._client_bootstrapped, "the client bootstrapped to 100%")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop exactly the processes this object started (SIGTERM, then SIGKILL after 10 s)."""
        for node in self._nodes:
            proc = node.process
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node in self._nodes:
            proc = node.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            node.process = None

    # ----- setup -------------------------------------------------------------------------------
    def _plan(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        roles = ["authority"] * N_AUTHORITIES + ["middle"] * N_MIDDLES + ["exit"] * N_EXITS
        ports = free_ports(2 * N_AUTHORITIES + N_MIDDLES + N_EXITS + 2)
        for i, role in enumerate(roles):
            nick = f"{role[:4]}{i}"
            node = _Node(nick, role, self.workdir / nick, orport=ports.pop())
            if role == "authority":
                node.dirport = ports.pop()
            self._nodes.append(node)
        self._nodes.append(
            _Node("client", "client", self.workdir / "client", socksport=ports.pop(), controlport=ports.pop())
        )
        for node in self._nodes:
            (node.datadir / "keys").mkdir(parents=True, exist_ok=True)
            node.datadir.chmod(0o700)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {LOOPBACK}\n")

    def _make_authority_keys(self, node: _Node) -> None:
        keys = node.datadir / "keys"
        subprocess.run(
            [
                "tor-gencert",
                "--create-identity-key",
                "--passphrase-fd",
                "0",
                "-m",
                "24",
                "-a",
                f"{LOOPBACK}:{node.dirport}",
                "-i",
                str(keys / "authority_identity_key"),
                "-s",
                str(keys / "authority_signing_key"),
                "-c",
                str(keys / "authority_certificate"),
            ],
            input=b"\n",
            check=True,
            capture_output=True,
            timeout=60,
        )
        for line in (keys / "authority_certificate").read_text().splitlines():
            if line.startswith("fingerprint "):
                node.v3ident = line.split()[1].upper()
        if not node.v3ident:
            raise TorNetError("tor-gencert produced no fingerprint")
        # The relay identity key (separate from the v3 identity) comes from --list-fingerprint.
        self._write_torrc(node, with_authorities=False)
        node.fingerprint = self._list_fingerprint(node)

    def _list_fingerprint(self, node: _Node) -> str:
        out = subprocess.run(
            ["tor", "--list-fingerprint", "-f", str(node.datadir / "torrc"), "--quiet"],
            check=True,
            capture_output=True,
            timeout=60,
            text=True,
        ).stdout
        words = out.split()
        if len(words) < 2:
            raise TorNetError(f"tor --list-fingerprint printed {out!r}")
        return "".join(words[1:]).upper()

    def _dirauthority_lines(self) -> list[str]:
        return [
            f"DirAuthority {n.nickname} orport={n.orport} no-v2 v3ident={n.v3ident} "
            f"{LOOPBACK}:{n.dirport} {n.fingerprint}"
            for n in self._nodes
            if n.role == "authority"
        ]

    def _exit_fingerprints(self) -> str:
        return ",".join(n.fingerprint for n in self._nodes if n.role == "exit" and n.fingerprint)

    def _write_torrc(self, node: _Node, *, with_authorities: bool = True) -> None:
        lines = [
            "TestingTorNetwork 1",
            f"DataDirectory {node.datadir}",
            f"Nickname {node.nickname}",
            "RunAsDaemon 0",
            f"PidFile {node.datadir / 'pid'}",
            f"Log notice file {node.datadir / 'notice.log'}",
            *([f"Log info file {node.datadir / 'info.log'}"] if self.info_logs else []),
            "SafeLogging 0",
            "ShutdownWaitLength 0",
            "AssumeReachable 1",
            "ConnLimit 64",
            f"__OwningControllerProcess {os.getpid()}",
            f"ContactInfo {node.nickname}@test.invalid",
            "DisableDebuggerAttachment 0",
            f"OutboundBindAddress {LOOPBACK}",
        ]
        if node.role == "client":
            lines += [
                f"SocksPort {LOOPBACK}:{node.socksport}",
                f"ControlPort {LOOPBACK}:{node.controlport}",
                "CookieAuthentication 0",
                "ConfluxEnabled 0",
            ]
        else:
            lines += [
                "SocksPort 0",
                f"Address {LOOPBACK}",
                f"ORPort {LOOPBACK}:{node.orport}",
                "ExitRelay 0" if node.role != "exit" else "ExitRelay 1",
            ]
        if node.role == "authority":
            lines += [
                f"DirPort {LOOPBACK}:{node.dirport}",
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                f"V3AuthVotingInterval {VOTING_INTERVAL}",
                "V3AuthVoteDelay 4",
                "V3AuthDistDelay 4",
                f"TestingV3AuthInitialVotingInterval {INITIAL_VOTING_INTERVAL}",
                "TestingV3AuthInitialVoteDelay 4",
                "TestingV3AuthInitialDistDelay 4",
                f"TestingDirAuthVoteExit {self._exit_fingerprints()}",
                "TestingDirAuthVoteGuard *",
                "TestingDirAuthVoteHSDir *",
                "TestingMinExitFlagThreshold 0",
                "ExitPolicy reject *:*",
            ]
        elif node.role == "middle":
            lines += ["ExitPolicy reject *:*"]
        elif node.role == "exit":
            # A broad published policy (clients check the summary), confined by binding every exit
            # connection to 127.0.0.1 (the kernel refuses to route a loopback source elsewhere) and by a
            # resolver on 127.0.0.1.
            lines += [
                "ExitPolicy accept *:*",
                "ExitPolicyRejectPrivate 0",
                "ExitPolicyRejectLocalInterfaces 0",
                "IPv6Exit 0",
                f"OutboundBindAddressExit {LOOPBACK}",
                f"ServerDNSResolvConfFile {self.workdir / 'resolv.conf'}",
                "ServerDNSDetectHijacking 0",
                "ServerDNSAllowBrokenConfig 1",
                # An exit refuses BEGIN from a previous hop missing in *its* consensus ("unknown
                # relay", END MISC); its first consensus may predate some relays' descriptors.
                "RefuseUnknownExits 0",
            ]
        if with_authorities:
            lines += self._dirauthority_lines()
        else:  # only for --list-fingerprint: TestingTorNetwork insists on a non-default authority set
            lines += [f"DirAuthority placeholder orport=1 v3ident={'F' * 40} {LOOPBACK}:1 {'F' * 40}"]
        (node.datadir / "torrc").write_text("\n".join(lines) + "\n")

    def _launch(self, node: _Node) -> None:
        out = (node.datadir / "stdout.log").open("wb")
        node.process = subprocess.Popen(
            ["tor", "-f", str(node.datadir / "torrc")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()

    # ----- readiness ---------------------------------------------------------------------------
    def _check_alive(self) -> None:
        for node in self._nodes:
            if node.process is not None and node.process.poll() is not None:
                tail = (node.datadir / "stdout.log").read_text(errors="replace")[-2000:]
                raise TorNetError(f"tor {node.nickname} exited with {node.process.returncode}:\n{tail}")

    def fetch_consensus_text(self) -> str | None:
        """The current microdesc consensus from the first authority, or None if none yet."""
        auth = self.authorities[0]
        url = f"http://{auth.host}:{auth.dirport}/tor/status-vote/current/consensus-microdesc"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(resp.read().decode("utf-8", "replace"))
        except OSError:
            return None

    def _consensus_ready(self) -> bool:
        text = self.fetch_consensus_text()
        if text is None:
            return False
        wanted = {bytes.fromhex(n.fingerprint) for n in self._nodes if n.role != "client"}
        running: set[bytes] = set()
        exit_ok = False
        ident = b""
        for line in text.splitlines():
            if line.startswith("r "):
                parts = line.split()
                ident = base64.b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            elif line.startswith("s ") and ident in wanted:
                flags = line.split()[1:]
                if "Running" in flags and "Valid" in flags:
                    running.add(ident)
                    if "Exit" in flags and "BadExit" not in flags:
                        exit_ok = True
        if running != wanted or not exit_ok:
            return False
        # Every relay must hold a consensus itself (to extend circuits and accept BEGIN).
        return all(
            (n.datadir / "cached-microdesc-consensus").exists() for n in self._nodes if n.role != "client"
        )

    def control(self, *commands: str) -> list[str]:
        """Send commands to the client's ControlPort (no authentication configured); return replies."""
        with socket.create_connection(self.client_control, timeout=10) as s:
            f = s.makefile("rwb")
            replies: list[str] = []
            for cmd in ("AUTHENTICATE", *commands):
                f.write(cmd.encode() + b"\r\n")
                f.flush()
                lines: list[str] = []
                while True:
                    raw = f.readline()
                    if not raw:
                        raise TorNetError("control connection closed")
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    lines.append(line)
                    if len(line) >= 4 and line[3] == " ":
                        break
                replies.append("\n".join(lines))
            return replies[1:]

    def ctor_build_circuit(self, path: list[str] | None = None, timeout: float = 60.0) -> float:
        """Build a circuit with the tor client (EXTENDCIRCUIT 0 on its ControlPort) and return the
        seconds until tor reports it BUILT.  ``path`` is a list of hex fingerprints (tor picks one
        when None).  For benchmarks: C tor's circuit build time against ours.  The circuit is closed."""
        with socket.create_connection(self.client_control, timeout=timeout) as s:
            f = s.makefile("rwb")

            def send(cmd: str) -> str:
                f.write(cmd.encode() + b"\r\n")
                f.flush()
                return self._read_reply(f)

            send("AUTHENTICATE")
            send("SETEVENTS CIRC")
            start = time.perf_counter()
            reply = send("EXTENDCIRCUIT 0" + (" " + ",".join(path) if path else ""))
            if not reply.startswith("250 EXTENDED"):
                raise TorNetError(f"EXTENDCIRCUIT refused: {reply}")
            circ_id = reply.split()[2]
            while True:
                line = f.readline().decode(errors="replace").rstrip("\r\n")
                if not line:
                    raise TorNetError("control connection closed")
                words = line.split()
                if len(words) >= 4 and words[:3] == ["650", "CIRC", circ_id]:
                    if words[3] == "BUILT":
                        elapsed = time.perf_counter() - start
                        send(f"CLOSECIRCUIT {circ_id}")
                        return elapsed
                    if words[3] in ("FAILED", "CLOSED"):
                        raise TorNetError(f"tor could not build the circuit: {line}")

    @staticmethod
    def _read_reply(f: _LineReader) -> str:
        lines: list[str] = []
        while True:
            raw = f.readline()
            if not raw:
                raise TorNetError("control connection closed")
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith("650"):
                continue  # an asynchronous event between replies
            lines.append(line)
            if len(line) >= 4 and line[3] == " ":
                return "\n".join(lines)

    def _client_bootstrapped(self) -> bool:
        try:
            reply = self.control("GETINFO status/bootstrap-phase")[0]
        except (OSError, TorNetError):
            return False
        return "PROGRESS=100" in reply

    def _wait(self, deadline: float, ready: Callable[[], bool], what: str) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.5)
        raise TorNetError(
            f"private tor network: no {what} after {self.timeout:.0f} s; client log:\n"
            + self.log_of("client")[-3000:]
        )

    def _ed25519_id(self, node: _Node) -> bytes:
        path = node.datadir / "keys" / "ed25519_master_id_public_key"
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            return data[-32:]
        return b""
