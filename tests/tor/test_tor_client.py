"""Acceptance for issue 3 on the private tor network: ``peersm tor get`` fetches a 16 MiB file
through a 3-hop circuit of distinct relays from the validated consensus; ``peersm tor socks``
serves curl; a relay whose CERTS do not match its consensus identity is refused at link level."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.driver import CircuitError
from peer.tor.client import TorClient
from peer.tor.directory import AuthoritySpec, DirectoryClient
from tests.tornet import TorNet

pytestmark = pytest.mark.e2e
BODY = os.urandom(16 * 1024 * 1024)
ROOT = Path(__file__).resolve().parents[2]


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


def cli_args(net: TorNet, data: Path) -> list[str]:
    args = [sys.executable, "-m", "peer.tor.cli"]
    for a in net.authorities:
        args += ["--authority", a.spec]
    return [*args, "--allow-same-subnet", "--data", str(data)]


async def test_tor_get_16mib_through_3_distinct_relays(tornet: TorNet, web: int, tmp_path: Path) -> None:
    out = tmp_path / "blob"
    proc = await asyncio.create_subprocess_exec(
        *cli_args(tornet, tmp_path / "data"),
        "get",
        f"http://127.0.0.1:{web}/blob",
        "-o",
        str(out),
        "--hops",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 180)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(BODY).digest()
    path_line = next(line for line in stderr.splitlines() if "path:" in line)
    prefixes = re.findall(r"\(([0-9a-f]{16})\)", path_line)
    assert len(prefixes) == 3 and len(set(prefixes)) == 3
    d = await DirectoryClient([AuthoritySpec.parse(a.spec) for a in tornet.authorities], None).get(
        time.time()
    )
    ids = {r.rsa_id.hex()[:16]: r for r in d.relays}
    assert all(p in ids for p in prefixes)
    assert ids[prefixes[-1]].is_exit_for(web) and "Guard" in ids[prefixes[0]].flags


async def test_tor_get_failures_are_clear(tornet: TorNet, web: int, tmp_path: Path) -> None:
    for url, expect in (
        (f"http://127.0.0.1:{web}/missing", "HTTP 404"),
        ("https://127.0.0.1/", "only http://"),
    ):
        proc = await asyncio.create_subprocess_exec(
            *cli_args(tornet, tmp_path / "data"),
            "get",
            url,
            "-o",
            str(tmp_path / "x"),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode != 0 and expect in err.decode()
        assert not (tmp_path / "x").exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_through_tor_socks(tornet: TorNet, web: int, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cli_args(tornet, tmp_path / "data"),
        "socks",
        "--listen",
        "127.0.0.1:0",
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
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "120",
            "--socks5-hostname",
            f"127.0.0.1:{port}",
            f"http://127.0.0.1:{web}/blob",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        body, err = await curl.communicate()
        assert curl.returncode == 0, err
        assert hashlib.sha256(body).digest() == hashlib.sha256(BODY).digest()
    finally:
        proc.terminate()
        await proc.wait()


async def test_relay_with_other_identity_is_refused(tornet: TorNet, tmp_path: Path) -> None:
    auths = [AuthoritySpec.parse(a.spec) for a in tornet.authorities]
    async with TorClient(auths, tmp_path, allow_same_subnet=True) as client:
        assert client.directory is not None
        a, b = client.directory.relays[:2]
        impostor = dataclasses.replace(a, rsa_id=b.rsa_id)  # a's address, b's identity
        with pytest.raises(CircuitError, match="handshake failed"):
            await client._channel_to(impostor)
        wrong_ed = dataclasses.replace(a, ed25519_id=b.ed25519_id)
        with pytest.raises(CircuitError, match="handshake failed"):
            await client._channel_to(wrong_ed)
        chan = await client._channel_to(a)  # the genuine identity opens
        assert chan > 0
