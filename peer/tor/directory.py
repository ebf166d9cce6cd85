"""Fetch, verify and cache the Tor directory from authorities' DirPorts (dir-spec §4, §5, §6.2).

Requests (plain HTTP/1.0 GET, one per connection, size-capped):

* ``/tor/status-vote/current/consensus-microdesc``      the microdesc consensus
* ``/tor/keys/fp/<v3ident>+<v3ident>...``               the trusted authorities' key certificates
* ``/tor/micro/d/<d1>-<d2>-...``                         microdescriptors by base64 SHA-256 digest

The consensus is accepted only with valid signatures from a majority of the trusted v3 identity
fingerprints the user gives, within its validity period at the injected ``now``; each
microdescriptor must hash to a digest the consensus names.  The result, a
:class:`NetworkDirectory` of :class:`Relay` values, is cached in ``<data_dir>/tor/`` (consensus,
key certificates, microdescriptors as served) and fully re-verified when loaded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peer.errors import UsageError
from peer.tor.authcert import parse_key_certs
from peer.tor.consensus import Consensus, RouterStatus, parse_consensus, verify_consensus
from peer.tor.errors import ConsensusError, DirectoryFetchError, MicrodescError
from peer.tor.microdesc import Microdesc, PolicySummary, parse_microdescs

log = logging.getLogger(__name__)

MAX_RESPONSE = 32 * 1024 * 1024
MICRODESCS_PER_REQUEST = 90  # keeps the URL well under tor's limits
CACHE_DIR = "tor"
CONSENSUS_FILE = "consensus-microdesc"
CERTS_FILE = "authority-certs"
MICRODESC_FILE = "microdescs"


@dataclass(frozen=True, slots=True)
class AuthoritySpec:
    """A trusted directory authority: where to fetch (``host:dirport``) and its v3 identity."""

    host: str
    dirport: int
    v3ident: bytes  # 20 bytes

    @classmethod
    def parse(cls, spec: str) -> AuthoritySpec:
        """``HOST:DIRPORT=V3IDENT`` (40 hex digits), as given to ``--authority``."""
        addr, sep, ident = spec.partition("=")
        host, colon, port = addr.rpartition(":")
        try:
            v3 = bytes.fromhex(ident)
            dirport = int(port)
        except ValueError as exc:
            raise UsageError(f"--authority wants HOST:DIRPORT=V3IDENT, got {spec!r}") from exc
        if not sep or not colon or not host or len(v3) != 20 or not 0 < dirport < 65536:
            raise UsageError(f"--authority wants HOST:DIRPORT=V3IDENT (40 hex digits), got {spec!r}")
        return cls(host.strip("[]"), dirport, v3)


@dataclass(frozen=True, slots=True)
class Relay:
    """A relay usable for paths: consensus entry joined with its microdescriptor."""

    nickname: str
    rsa_id: bytes  # 20 bytes (SHA-1 of the RSA identity key)
    ed25519_id: bytes | None  # 32 bytes
    address: str
    orport: int
    flags: frozenset[str]
    bandwidth: int
    ntor_key: bytes  # 32 bytes
    policy: PolicySummary
    #: RSA ids this relay declares as family ("$HEX" entries of its microdescriptor's family line)
    family: frozenset[bytes] = frozenset()
    #: family ids it declares ("family-ids", proposal 321): sharing one puts two relays in one family
    family_ids: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"Relay({self.nickname}, {self.rsa_id.hex()[:8]}…)"

    def same_family(self, other: Relay) -> bool:
        """path-spec §2.2: two relays that list each other in their family lines (or share a
        family id) are one operator's, and never go in one circuit."""
        if self.family_ids & other.family_ids:
            return True
        return other.rsa_id in self.family and self.rsa_id in other.family

    def is_exit_for(self, port: int) -> bool:
        return "Exit" in self.flags and "BadExit" not in self.flags and self.policy.allows(port)


@dataclass(frozen=True, slots=True)
class NetworkDirectory:
    consensus: Consensus
    relays: tuple[Relay, ...]
    signed_by: frozenset[bytes]  # trusted v3idents whose signature verified

    def by_rsa_id(self, rsa_id: bytes) -> Relay | None:
        return next((r for r in self.relays if r.rsa_id == rsa_id), None)


def join_relays(consensus: Consensus, microdescs: dict[bytes, Microdesc]) -> tuple[Relay, ...]:
    """Relays that have a microdescriptor (the others cannot be extended to: no ntor key)."""
    out = []
    for rs in consensus.routers:
        md = microdescs.get(rs.microdesc_digest)
        if md is None:
            continue
        out.append(
            Relay(
                rs.nickname,
                rs.rsa_id,
                md.ed25519_id,
                rs.address,
                rs.orport,
                rs.flags,
                rs.bandwidth,
                md.ntor_key,
                md.policy,
                family_rsa_ids(md.family),
                frozenset(md.family_ids),
            )
        )
    return tuple(out)


def family_rsa_ids(entries: Sequence[str]) -> frozenset[bytes]:
    """The RSA ids named in a family line: ``$`` + 40 hex digits, optionally ``=name``/``~name``.
    Bare nicknames name nobody verifiable and are ignored (as tor does since 0.3.x)."""
    out = set()
    for e in entries:
        if e.startswith("$") and len(e) >= 41:
            with contextlib.suppress(ValueError):
                out.add(bytes.fromhex(e[1:41]))
    return frozenset(out)


def build_directory(
    consensus_text: str,
    certs_text: str,
    microdesc_text: str,
    trusted: Sequence[bytes],
    now: float,
) -> NetworkDirectory:
    """Parse and verify everything (pure: no I/O); raise a :class:`ConsensusError` on any failure."""
    consensus = parse_consensus(consensus_text)
    certs = parse_key_certs(certs_text, now, trusted) if certs_text else []
    signed = verify_consensus(consensus, trusted, certs, now)
    wanted = {rs.microdesc_digest for rs in consensus.routers}
    mds = parse_microdescs(microdesc_text, wanted)
    return NetworkDirectory(consensus, join_relays(consensus, mds), frozenset(signed))


# ----- HTTP --------------------------------------------------------------------------------------
async def http_get(host: str, port: int, path: str, *, timeout: float = 30.0) -> bytes:
    """GET ``path`` over HTTP/1.0; the body of a 200 response, else :class:`DirectoryFetchError`."""

    async def run() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii"))
            await writer.drain()
            data = bytearray()
            while len(data) <= MAX_RESPONSE:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if len(data) > MAX_RESPONSE:
            raise DirectoryFetchError("directory response too large")
        head, sep, body = bytes(data).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if not sep or len(status) < 2 or status[1] != b"200":
            raise DirectoryFetchError(
                f"directory answered {b' '.join(status[1:3]).decode('ascii', 'replace')!r}"
            )
        return body

    try:
        return await asyncio.wait_for(run(), timeout)
    except (OSError, TimeoutError) as exc:
        raise DirectoryFetchError(f"directory request failed: {type(exc).__name__}") from exc


def _ascii(body: bytes, what: str) -> str:
    try:
        return body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DirectoryFetchError(f"{what} is not ASCII") from exc


def _b64(d: bytes) -> str:
    return base64.b64encode(d).decode("ascii").rstrip("=")


class DirectoryClient:
    """Fetches the directory from the trusted authorities, verifies it, and caches it."""

    def __init__(
        self, authorities: Sequence[AuthoritySpec], data_dir: Path | str | None, *, timeout: float = 30.0
    ) -> None:
        if not authorities:
            raise UsageError("at least one --authority is needed")
        self.authorities = tuple(authorities)
        self.trusted = tuple(a.v3ident for a in self.authorities)
        self.cache_dir = Path(data_dir) / CACHE_DIR if data_dir is not None else None
        self.timeout = timeout

    async def _get(self, path: str) -> bytes:
        errors = []
        for auth in self.authorities:
            try:
                return await http_get(auth.host, auth.dirport, path, timeout=self.timeout)
            except DirectoryFetchError as exc:
                errors.append(str(exc))
        raise DirectoryFetchError(f"no authority served {path.split('/')[2]}: {'; '.join(errors)}")

    async def fetch(self, now: float) -> NetworkDirectory:
        """Fetch a fresh directory from the network (no cache)."""
        consensus_text = _ascii(await self._get("/tor/status-vote/current/consensus-microdesc"), "consensus")
        consensus = parse_consensus(consensus_text)
        fps = "+".join(v.hex().upper() for v in self.trusted)
        certs_text = _ascii(await self._get(f"/tor/keys/fp/{fps}"), "key certificates")
        certs = parse_key_certs(certs_text, now, self.trusted)
        signed = verify_consensus(consensus, self.trusted, certs, now)
        digests = [rs.microdesc_digest for rs in consensus.routers]
        parts = []
        for i in range(0, len(digests), MICRODESCS_PER_REQUEST):
            batch = digests[i : i + MICRODESCS_PER_REQUEST]
            body = await self._get("/tor/micro/d/" + "-".join(_b64(d) for d in batch))
            parts.append(_ascii(body, "microdescriptors"))
        md_text = "".join(parts)
        mds = parse_microdescs(md_text, set(digests))
        directory = NetworkDirectory(consensus, join_relays(consensus, mds), frozenset(signed))
        self._save(consensus_text, certs_text, md_text)
        return directory

    async def get(self, now: float) -> NetworkDirectory:
        """The cached directory if it verifies and is still fresh, else a newly fetched one."""
        cached = self.load_cached(now)
        if cached is not None and cached.consensus.is_fresh(now):
            return cached
        try:
            return await self.fetch(now)
        except DirectoryFetchError:
            if cached is not None:  # still within valid-until: usable, though not fresh
                log.warning("directory fetch failed; using the cached consensus until it expires")
                return cached
            raise

    def load_cached(self, now: float) -> NetworkDirectory | None:
        """The cached directory, re-verified at ``now``; None if absent or no longer valid."""
        if self.cache_dir is None:
            return None
        try:
            texts = [
                (self.cache_dir / name).read_text("ascii")
                for name in (CONSENSUS_FILE, CERTS_FILE, MICRODESC_FILE)
            ]
        except (OSError, UnicodeDecodeError):
            return None
        try:
            return build_directory(texts[0], texts[1], texts[2], self.trusted, now)
        except ConsensusError as exc:
            log.info("cached consensus not used: %s", exc.kind)
            return None

    def _save(self, consensus: str, certs: str, microdescs: str) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, text in ((CONSENSUS_FILE, consensus), (CERTS_FILE, certs), (MICRODESC_FILE, microdescs)):
            tmp = self.cache_dir / (name + ".tmp")
            tmp.write_text(text, "ascii")
            os.replace(tmp, self.cache_dir / name)


def relays_with_flags(directory: NetworkDirectory, flags: Iterable[str]) -> list[Relay]:
    need = set(flags)
    return [r for r in directory.relays if need <= r.flags]


__all__ = [
    "AuthoritySpec",
    "DirectoryClient",
    "MicrodescError",
    "NetworkDirectory",
    "Relay",
    "RouterStatus",
    "build_directory",
    "http_get",
    "join_relays",
]
