"""Against the private tor network (tests/tornet.py): the directory code fetches and verifies a real
consensus from an authority, refuses tampered or foreign ones, and real relays' CERTS validate and
match the consensus identities."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from peer.tor.certs import IdentityMismatch, check_expected_identity, validate_relay_certs
from peer.tor.consensus import parse_consensus
from peer.tor.directory import AuthoritySpec, DirectoryClient, build_directory, http_get
from peer.tor.errors import UnsignedConsensus
from peer.transport.tls import connect_tls
from peer.wire.cells import Certs, decode_message, encode_versions_cell, pull_cell
from tests.tornet import TorNet

pytestmark = pytest.mark.e2e


def specs(net: TorNet) -> list[AuthoritySpec]:
    return [AuthoritySpec.parse(a.spec) for a in net.authorities]


def test_harness_is_up(tornet: TorNet) -> None:
    assert len(tornet.authorities) == 3 and len(tornet.relays) == 6
    assert {r.role for r in tornet.relays} == {"authority", "middle", "exit"}
    assert all(r.host == "127.0.0.1" for r in tornet.relays)
    assert "PROGRESS=100" in tornet.control("GETINFO status/bootstrap-phase")[0]


async def test_directory_fetch_and_verify(tornet: TorNet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = DirectoryClient(specs(tornet), tmp_path)
    d = await client.get(time.time())
    assert d.signed_by == frozenset(s.v3ident for s in specs(tornet))
    assert len(d.relays) >= 3
    by_id = {r.rsa_id.hex().upper(): r for r in d.relays}
    for relay in tornet.relays:
        got = by_id[relay.fingerprint]
        assert got.orport == relay.orport and got.ed25519_id == relay.ed25519_id
        assert len(got.ntor_key) == 32
    assert [r.nickname for r in d.relays if r.is_exit_for(80)] == [
        r.nickname for r in tornet.relays if r.role == "exit"
    ]
    assert client.load_cached(time.time()) is not None


async def test_tampered_and_foreign_consensus_refused(tornet: TorNet) -> None:
    auth = tornet.authorities[0]
    text = (await http_get(auth.host, auth.dirport, "/tor/status-vote/current/consensus-microdesc")).decode()
    fps = "+".join(a.v3ident for a in tornet.authorities)
    certs = (await http_get(auth.host, auth.dirport, f"/tor/keys/fp/{fps}")).decode()
    trusted = [s.v3ident for s in specs(tornet)]
    now = time.time()
    build_directory(text, certs, "", trusted, now)  # the genuine one verifies
    i = text.index("\nr ") + 3
    tampered = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1 :]
    with pytest.raises(UnsignedConsensus):
        build_directory(tampered, certs, "", trusted, now)
    with pytest.raises(UnsignedConsensus, match="unknown authorities"):
        build_directory(text, certs, "", [hashlib.sha1(b"stranger%d" % i).digest() for i in range(3)], now)
    assert len(parse_consensus(text).routers) == 6


async def fetch_certs(host: str, port: int) -> tuple[Certs, bytes]:
    link = await connect_tls(host, port, timeout=10)
    try:
        await link.send(encode_versions_cell([4, 5]))
        buf = b""
        circid_len = 2
        while True:
            buf += await link.recv()
            while (got := pull_cell(buf, circid_len)) is not None:
                cell, used = got
                buf = buf[used:]
                circid_len = 4
                msg = decode_message(cell)
                if isinstance(msg, Certs):
                    fp = link.peer_cert_fingerprint
                    assert fp is not None
                    return msg, fp
    finally:
        await link.close()


async def test_real_relay_certs_match_consensus(tornet: TorNet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = await DirectoryClient(specs(tornet), tmp_path).get(time.time())
    relays = list(d.relays)
    for relay in relays:
        certs, tls_fp = await fetch_certs(relay.address, relay.orport)
        proved = validate_relay_certs(certs, tls_fp, time.time())
        check_expected_identity(proved, relay.rsa_id, relay.ed25519_id)
    # A relay reached at another relay's consensus entry: the link is refused.
    certs, tls_fp = await fetch_certs(relays[0].address, relays[0].orport)
    proved = validate_relay_certs(certs, tls_fp, time.time())
    with pytest.raises(IdentityMismatch):
        check_expected_identity(proved, relays[1].rsa_id, relays[1].ed25519_id)


@pytest.mark.needs_tool("curl")
async def test_tor_client_reaches_a_local_server(tornet: TorNet) -> None:
    """The harness's tor client can fetch from 127.0.0.1 through the exit (what the benchmark uses)."""
    body = b"hello through tor\n" * 1000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    host, socks_port = tornet.client_socks
    try:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--retry",
            "3",
            "--socks5-hostname",
            f"{host}:{socks_port}",
            f"http://127.0.0.1:{port}/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out == body
    finally:
        server.close()
        await server.wait_closed()


def test_ctor_circuit_build_time_is_measurable(tornet: TorNet) -> None:
    """The benchmark's reference: C tor builds a circuit on our network through its ControlPort."""
    path = [r.fingerprint for r in tornet.relays if r.role != "exit"][:2]
    path.append(next(r.fingerprint for r in tornet.relays if r.role == "exit"))
    seconds = tornet.ctor_build_circuit(path)
    assert seconds > 0
    assert tornet.ctor_build_circuit() > 0  # tor's own choice of path
