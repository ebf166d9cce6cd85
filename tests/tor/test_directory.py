"""Directory verification (dir-spec §3.1, §3.4.1, §3.3) on documents captured from the private
tor network (tests/tor/data/, see directory.json), tampered variants, parser fuzzing and the cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import PeerError, UsageError
from peer.tor.authcert import parse_key_certs
from peer.tor.consensus import parse_consensus, verify_consensus
from peer.tor.directory import AuthoritySpec, DirectoryClient, build_directory, http_get
from peer.tor.docparse import DocumentError, items
from peer.tor.errors import (
    AuthorityCertError,
    ConsensusError,
    ConsensusNotYetValid,
    DirectoryFetchError,
    MalformedConsensus,
    MicrodescError,
    StaleConsensus,
    UnsignedConsensus,
)
from peer.tor.microdesc import PolicySummary, parse_microdesc, parse_microdescs

DATA = Path(__file__).parent / "data"
CONSENSUS = (DATA / "consensus-microdesc.txt").read_text("ascii")
CERTS = (DATA / "authority-certs.txt").read_text("ascii")
MICRODESCS = (DATA / "microdescs.txt").read_text("ascii")
TRUSTED = [bytes.fromhex(x) for x in json.loads((DATA / "directory.json").read_text())["trusted_v3idents"]]
PARSED = parse_consensus(CONSENSUS)
NOW = PARSED.valid_after + 1


def test_captured_directory_verifies() -> None:
    d = build_directory(CONSENSUS, CERTS, MICRODESCS, TRUSTED, NOW)
    assert d.signed_by == frozenset(TRUSTED)
    assert len(d.relays) == 6
    for r in d.relays:
        assert len(r.ntor_key) == 32 and r.ed25519_id is not None and len(r.ed25519_id) == 32
        assert "Running" in r.flags and r.orport > 0 and r.address == "127.0.0.1"
    exits = [r for r in d.relays if r.is_exit_for(80)]
    assert [r.nickname for r in exits] == ["exit5"]
    assert exits[0].policy == PolicySummary(True, ((1, 65535),))


def test_one_byte_changed_is_refused() -> None:
    i = CONSENSUS.index("\nr ") + 5  # inside the first relay's nickname
    tampered = CONSENSUS[:i] + chr(ord(CONSENSUS[i]) ^ 1) + CONSENSUS[i + 1 :]
    with pytest.raises(UnsignedConsensus, match="0 of the 3"):
        build_directory(tampered, CERTS, MICRODESCS, TRUSTED, NOW)


@given(st.integers(0, len(CONSENSUS) - 1), st.integers(1, 127))
def test_any_changed_byte_in_signed_part_is_refused(pos: int, xor: int) -> None:
    end = CONSENSUS.index("\ndirectory-signature ") + len("\ndirectory-signature ")
    pos = pos % end
    tampered = CONSENSUS[:pos] + chr(ord(CONSENSUS[pos]) ^ xor) + CONSENSUS[pos + 1 :]
    with pytest.raises(ConsensusError):
        c = parse_consensus(tampered)
        certs = parse_key_certs(CERTS, NOW, TRUSTED)
        verify_consensus(c, TRUSTED, certs, NOW)


def test_unknown_authorities_are_refused() -> None:
    strangers = [bytes([i]) * 20 for i in range(1, 4)]
    with pytest.raises(UnsignedConsensus, match="3 signature\\(s\\) by unknown authorities"):
        build_directory(CONSENSUS, CERTS, MICRODESCS, strangers, NOW)


def test_majority_needed() -> None:
    # Trust 3 known + 2 strangers: 3 of 5 is a majority; with 3 strangers (3 of 6) it is not.
    build_directory(CONSENSUS, CERTS, MICRODESCS, [*TRUSTED, bytes(20), b"\x01" * 20], NOW)
    with pytest.raises(UnsignedConsensus):
        build_directory(CONSENSUS, CERTS, MICRODESCS, [*TRUSTED, bytes(20), b"\x01" * 20, b"\x02" * 20], NOW)


def test_signature_without_certificate_does_not_count() -> None:
    one_cert = CERTS[: CERTS.index("dir-key-certificate-version", 10)]
    with pytest.raises(UnsignedConsensus, match="1 of the 3"):
        build_directory(CONSENSUS, one_cert, MICRODESCS, TRUSTED, NOW)


def test_stale_and_future_consensus_are_refused() -> None:
    with pytest.raises(StaleConsensus):
        build_directory(CONSENSUS, CERTS, MICRODESCS, TRUSTED, PARSED.valid_until)
    with pytest.raises(ConsensusNotYetValid):
        build_directory(CONSENSUS, CERTS, MICRODESCS, TRUSTED, PARSED.valid_after - 3600)
    assert PARSED.is_fresh(NOW) and not PARSED.is_fresh(PARSED.fresh_until)


def test_tampered_authority_certificate_is_refused() -> None:
    i = CERTS.index("dir-key-published") + len("dir-key-published 2")
    tampered = CERTS[:i] + "1" + CERTS[i + 1 :]
    with pytest.raises(AuthorityCertError, match="dir-key-certification"):
        parse_key_certs(tampered, NOW)


def test_expired_authority_certificate_is_refused() -> None:
    with pytest.raises(AuthorityCertError, match="expired"):
        parse_key_certs(CERTS, NOW + 10 * 365 * 86400)


def test_microdesc_not_named_by_consensus_is_refused() -> None:
    changed = MICRODESCS.replace("\nid ed25519 ", "\nfamily $AA\nid ed25519 ", 1)
    with pytest.raises(MicrodescError, match="does not name"):
        build_directory(CONSENSUS, CERTS, changed, TRUSTED, NOW)


def test_policy_summary() -> None:
    p = PolicySummary.parse(("accept", "80,443,1000-2000"))
    assert p.allows(80) and p.allows(1500) and not p.allows(81) and p.encode() == "accept 80,443,1000-2000"
    r = PolicySummary.parse(("reject", "25"))
    assert not r.allows(25) and r.allows(80)
    for bad in (("accept", "0"), ("accept", "5-1"), ("allow", "80"), ("accept", "80,"), ("accept", "x")):
        with pytest.raises(MicrodescError):
            PolicySummary.parse(bad)


@given(st.booleans(), st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 100)), min_size=1, max_size=5))
def test_policy_summary_roundtrip(accept: bool, spans: list[tuple[int, int]]) -> None:
    p = PolicySummary(accept, tuple((lo, min(lo + w, 65535)) for lo, w in spans))
    assert PolicySummary.parse(tuple(p.encode().split(" "))) == p


# ----- "garbage never raises anything but our errors" -------------------------------------------
PARSERS = [
    lambda t: parse_consensus(t),
    lambda t: parse_key_certs(t, NOW),
    lambda t: parse_microdescs(t),
    lambda t: list(items(t)),
]
ALPHABET = st.sampled_from(
    [*"abcdefr sm-=+/0123456789\n\n\n", "-----BEGIN SIGNATURE-----\n", "-----END SIGNATURE-----\n"]
)


@pytest.mark.parametrize("parser", range(len(PARSERS)))
@given(text=st.text(max_size=400))
def test_parsers_on_garbage(parser: int, text: str) -> None:
    try:
        PARSERS[parser](text)
    except (ConsensusError, DocumentError):
        pass


@pytest.mark.parametrize("parser", range(len(PARSERS)))
@given(text=st.lists(ALPHABET, max_size=200).map("".join))
def test_parsers_on_document_like_garbage(parser: int, text: str) -> None:
    try:
        PARSERS[parser](text)
    except (ConsensusError, DocumentError):
        pass


@given(st.data())
def test_parsers_on_mutated_real_documents(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, 2))
    doc = (CONSENSUS, CERTS, MICRODESCS)[which]
    start = data.draw(st.integers(0, len(doc)))
    end = data.draw(st.integers(start, min(len(doc), start + 40)))
    insert = data.draw(st.text(alphabet="ab 01=\n-", max_size=20))
    mutated = doc[:start] + insert + doc[end:]
    try:
        PARSERS[which](mutated)
    except (ConsensusError, DocumentError):
        pass


def test_malformed_consensus_errors_are_typed() -> None:
    with pytest.raises(MalformedConsensus):
        parse_consensus("network-status-version 3\n")
    with pytest.raises(MalformedConsensus):
        parse_consensus(CONSENSUS.replace("valid-until", "valid-untilX"))


# ----- authority specs, HTTP, cache --------------------------------------------------------------
def test_authority_spec() -> None:
    a = AuthoritySpec.parse("127.0.0.1:7000=" + "AB" * 20)
    assert (a.host, a.dirport, a.v3ident) == ("127.0.0.1", 7000, b"\xab" * 20)
    for bad in (
        "127.0.0.1:7000",
        "127.0.0.1=" + "AB" * 20,
        "h:0=" + "AB" * 20,
        "h:1=ABC",
        "h:x=" + "AB" * 20,
    ):
        with pytest.raises(UsageError):
            AuthoritySpec.parse(bad)


class FakeDirServer:
    """Serves the captured documents like a DirPort (HTTP/1.0), on 127.0.0.1 port 0."""

    def __init__(self, consensus: str = CONSENSUS) -> None:
        self.consensus = consensus
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split()[1].decode()
        self.requests.append(path)
        if path.endswith("consensus-microdesc"):
            body, status = self.consensus, "200 OK"
        elif path.startswith("/tor/keys/"):
            body, status = CERTS, "200 OK"
        elif path.startswith("/tor/micro/d/"):
            body, status = MICRODESCS, "200 OK"
        else:
            body, status = "", "404 Not found"
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_fetch_then_cache(tmp_path: Path) -> None:
    server = FakeDirServer()
    port = await server.start()
    try:
        auths = [AuthoritySpec("127.0.0.1", port, t) for t in TRUSTED]
        client = DirectoryClient(auths, tmp_path)
        d = await client.get(NOW)
        assert len(d.relays) == 6 and len(server.requests) == 3
        assert any(p.startswith("/tor/micro/d/") for p in server.requests)
        again = await client.get(NOW + 1)  # fresh cache: no new request
        assert again.relays == d.relays and len(server.requests) == 3
        assert DirectoryClient(auths, tmp_path).load_cached(NOW) is not None
        assert DirectoryClient(auths, tmp_path).load_cached(PARSED.valid_until) is None  # stale: not used
    finally:
        await server.close()


async def test_tampered_cache_is_not_used(tmp_path: Path) -> None:
    server = FakeDirServer()
    port = await server.start()
    try:
        auths = [AuthoritySpec("127.0.0.1", port, t) for t in TRUSTED]
        await DirectoryClient(auths, tmp_path).fetch(NOW)
        cached = tmp_path / "tor" / "consensus-microdesc"
        cached.write_text(cached.read_text().replace("exit5", "exit6"))
        assert DirectoryClient(auths, tmp_path).load_cached(NOW) is None
    finally:
        await server.close()


async def test_fetch_refuses_tampered_consensus(tmp_path: Path) -> None:
    server = FakeDirServer(CONSENSUS.replace("exit5", "exit6"))
    port = await server.start()
    try:
        client = DirectoryClient([AuthoritySpec("127.0.0.1", port, t) for t in TRUSTED], tmp_path)
        with pytest.raises(UnsignedConsensus):
            await client.get(NOW)
        assert not (tmp_path / "tor" / "consensus-microdesc").exists()
    finally:
        await server.close()


async def test_http_errors_are_typed() -> None:
    server = FakeDirServer()
    port = await server.start()
    try:
        with pytest.raises(DirectoryFetchError, match="404"):
            await http_get("127.0.0.1", port, "/nothing")
    finally:
        await server.close()
    with pytest.raises(DirectoryFetchError):
        await http_get("127.0.0.1", port, "/tor/keys/all", timeout=5)


def test_errors_are_peer_errors() -> None:
    assert issubclass(ConsensusError, PeerError) and issubclass(DocumentError, PeerError)


def test_microdesc_family_lines_are_parsed() -> None:
    first = MICRODESCS[: MICRODESCS.index("\nonion-key", 1) + 1]
    text = first.replace(
        "\nid ed25519 ", f"\nfamily ${'AB' * 20} nick\nfamily-ids ed25519:abc\nid ed25519 ", 1
    )
    md = parse_microdesc(text)
    assert md.family == (f"${'AB' * 20}", "nick") and md.family_ids == ("ed25519:abc",)
    assert parse_microdesc(first).family == () and parse_microdesc(first).family_ids == ()
