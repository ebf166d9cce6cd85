"""Acceptance for issue 3 on the private tor network: ``peersm tor get`` fetches a 16 MiB file
through a 3-hop circuit of distinct relays from the validated consensus; ``peersm tor socks``
serves curl; a relay whose CERTS do not match its consensus identity is refused at link level.

The subprocesses run the ``peersm`` parser (``peer.app.cli.build_parser``) and the tor command
(``peer.app.tor.cmd_tor``); :func:`test_peersm_dispatches_tor` checks the two are joined."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.net.driver import CircuitError
from peer.tor.client import TorClient, read_http_response
from peer.tor.directory import AuthoritySpec, DirectoryClient, NetworkDirectory
from peer.tor.guards import GuardSet
from peer.tor.path import check_path
from tests.tornet import TorNet

pytestmark = pytest.mark.e2e
BODY = os.urandom(16 * 1024 * 1024)
ROOT = Path(__file__).resolve().parents[2]
RUN_TOR = (
    "import sys; from peer.app.cli import build_parser; from peer.app.tor import cmd_tor; "
    "sys.exit(cmd_tor(build_parser().parse_args(sys.argv[1:])))"
)


@pytest.fixture
async def web() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split()[1] != b"/blob":
            writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY))
            writer.write(BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def tor_cmd(net: TorNet, action: str, data: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-c", RUN_TOR, "tor", action, *extra]
    for a in net.authorities:
        args += ["--authority", a.spec]
    return [*args, "--allow-same-subnet", "--data", str(data)]


async def directory_of(net: TorNet) -> NetworkDirectory:
    return await DirectoryClient([AuthoritySpec.parse(a.spec) for a in net.authorities], None).get(
        time.time()
    )


def test_peersm_dispatches_tor() -> None:
    from peer.app.cli import build_parser

    args = build_parser().parse_args(["tor", "get", "http://127.0.0.1/"])
    assert "not built" not in repr(args.run), "peer/app/cli.py still maps 'tor' to _not_built: use _cmd_tor"


async def test_tor_get_16mib(tornet: TorNet, web: int, tmp_path: Path) -> None:
    out = tmp_path / "blob"
    proc = await asyncio.create_subprocess_exec(
        *tor_cmd(
            tornet, "get", tmp_path / "data", f"http://127.0.0.1:{web}/blob", "-o", str(out), "--hops", "3"
        ),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(BODY).digest()
    guards = GuardSet.in_data_dir(tmp_path / "data").entries
    d = await directory_of(tornet)
    assert len(guards) == 1 and d.by_rsa_id(guards[0].rsa_id) is not None


async def test_3_distinct_consensus_relays_carry_the_file(tornet: TorNet, web: int, tmp_path: Path) -> None:
    d = await directory_of(tornet)
    client = TorClient(d, guards=GuardSet.in_data_dir(tmp_path), allow_same_subnet=True)
    try:
        path = client.choose_path(web, 3)
        check_path(path, web, allow_same_subnet=True)
        assert len({r.rsa_id for r in path}) == 3 and all(r in d.relays for r in path)
        circ = await client.build_circuit(path)
        stream = await client.driver.open_stream(circ, "127.0.0.1", web)
        await stream.write(b"GET /blob HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        got = hashlib.sha256()
        status, _ = await read_http_response(stream, lambda _g, _t: None, got.update)
        assert status == 200 and got.digest() == hashlib.sha256(BODY).digest()
    finally:
        await client.close()


async def test_tor_get_failures_are_clear(tornet: TorNet, web: int, tmp_path: Path) -> None:
    for url, expect in (
        (f"http://127.0.0.1:{web}/missing", "HTTP 404"),
        ("https://127.0.0.1/", "only http://"),
    ):
        proc = await asyncio.create_subprocess_exec(
            *tor_cmd(tornet, "get", tmp_path / "data", url, "-o", str(tmp_path / "x")),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode != 0 and expect in err.decode()
        assert not (tmp_path / "x").exists()


@pytest.mark.needs_tool("curl")
async def test_curl_through_tor_socks(tornet: TorNet, web: int, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *tor_cmd(tornet, "socks", tmp_path / "data", "--listen", "127.0.0.1:0"),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "the SOCKS proxy exited"
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "120", "--socks5-hostname", f"127.0.0.1:{port}",
            f"http://127.0.0.1:{web}/blob",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        body, err = await curl.communicate()
        assert curl.returncode == 0, err
        assert hashlib.sha256(body).digest() == hashlib.sha256(BODY).digest()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_relay_with_other_identity_is_refused(tornet: TorNet, tmp_path: Path) -> None:
    d = await directory_of(tornet)
    client = TorClient(d, guards=GuardSet(None), allow_same_subnet=True)
    try:
        a, b = d.relays[:2]
        impostor = dataclasses.replace(a, rsa_id=b.rsa_id)  # a's address, b's identity
        with pytest.raises(CircuitError, match="handshake failed"):
            await client.channel_to(impostor)
        wrong_ed = dataclasses.replace(a, ed25519_id=b.ed25519_id)
        with pytest.raises(CircuitError, match="handshake failed"):
            await client.channel_to(wrong_ed)
        assert await client.channel_to(a) > 0  # the genuine identity opens
    finally:
        await client.close()
