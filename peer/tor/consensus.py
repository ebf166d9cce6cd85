"""The microdescriptor-flavoured consensus: parsing and signature checks (dir-spec §3.4.1, §3.9.2).

Parsed fields: validity times, known flags, authorities (dir-source), bandwidth weights, and for
each relay its ``r`` line (nickname, RSA identity, address, ORPort, DirPort), ``m`` (SHA-256 digest
of its microdescriptor), ``s`` (flags), ``w`` (bandwidth) and ``pr`` (protocols).

Signatures: each ``directory-signature [ALG] IDENTITY SIGNING-KEY-DIGEST`` signs the digest (ALG
"sha256", or SHA-1 when absent) of the text from the start of the document through the space after
the first ``directory-signature`` keyword.  :func:`verify_consensus` needs valid signatures, made
with keys certified by :mod:`peer.tor.authcert`, from a majority of the authorities the user
trusts; signatures by anyone else are ignored.  Validity times are checked against an injected
``now``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peer.tor.authcert import AuthorityKeyCert
from peer.tor.certs import rsa_verify_tor
from peer.tor.docparse import (
    DocumentError,
    Item,
    b64decode_loose,
    hex_decode,
    items,
    parse_int,
    parse_time,
)
from peer.tor.errors import ConsensusNotYetValid, MalformedConsensus, StaleConsensus, UnsignedConsensus

SIG_KEYWORD = "directory-signature"
# Tolerated clock skew when checking valid-after (dir-spec leaves it to the client; tor uses 60 s+).
CLOCK_SKEW = 60.0


@dataclass(frozen=True, slots=True)
class RouterStatus:
    """One relay as the consensus describes it."""

    nickname: str
    rsa_id: bytes  # 20 bytes
    address: str
    orport: int
    dirport: int
    flags: frozenset[str]
    bandwidth: int  # kilobytes/s as voted (``w Bandwidth=``)
    microdesc_digest: bytes  # 32 bytes (SHA-256 of the microdescriptor)
    protocols: str = ""

    def __repr__(self) -> str:
        return f"RouterStatus({self.nickname}, {self.rsa_id.hex()[:8]}…)"


@dataclass(frozen=True, slots=True)
class Signature:
    algorithm: str  # "sha1" or "sha256"
    identity: bytes  # v3ident, 20 bytes
    signing_key_digest: bytes  # 20 bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Consensus:
    valid_after: float
    fresh_until: float
    valid_until: float
    known_flags: frozenset[str]
    authorities: tuple[bytes, ...]  # v3idents from the dir-source lines
    routers: tuple[RouterStatus, ...]
    bandwidth_weights: dict[str, int]
    params: dict[str, int]
    signatures: tuple[Signature, ...]
    signed_digests: dict[str, bytes]  # algorithm -> digest of the signed part
    text: str

    def is_fresh(self, now: float) -> bool:
        return self.valid_after - CLOCK_SKEW <= now < self.fresh_until

    def check_time(self, now: float) -> None:
        """Raise unless ``now`` lies within [valid-after - skew, valid-until)."""
        if now < self.valid_after - CLOCK_SKEW:
            raise ConsensusNotYetValid(
                f"consensus is valid only from {self.valid_after:.0f} (now {now:.0f}): check the clock"
            )
        if now >= self.valid_until:
            raise StaleConsensus(f"consensus expired at {self.valid_until:.0f} (now {now:.0f})")


def _signed_digests(text: str) -> dict[str, bytes]:
    at = text.find("\n" + SIG_KEYWORD + " ")
    if at < 0:
        raise MalformedConsensus("consensus has no directory-signature")
    signed = text[: at + 1 + len(SIG_KEYWORD) + 1].encode("ascii")
    return {"sha1": hashlib.sha1(signed).digest(), "sha256": hashlib.sha256(signed).digest()}


class _RouterBuilder:
    __slots__ = ("bandwidth", "digest", "flags", "protocols", "r")

    def __init__(self, r: Item) -> None:
        self.r = r
        self.digest: bytes | None = None
        self.flags: frozenset[str] | None = None
        self.bandwidth = 0
        self.protocols = ""

    def build(self) -> RouterStatus:
        a = self.r.args
        if len(a) < 7:
            raise MalformedConsensus("r line: too few fields")
        if self.digest is None or self.flags is None:
            raise MalformedConsensus(f"router {a[0]}: missing m or s line")
        rsa_id = b64decode_loose(a[1], "r identity")
        if len(rsa_id) != 20:
            raise MalformedConsensus("r line: identity is not 20 bytes")
        return RouterStatus(
            nickname=a[0],
            rsa_id=rsa_id,
            address=a[4],
            orport=parse_int(a[5], "ORPort", 1, 65535),
            dirport=parse_int(a[6], "DirPort", 0, 65535),
            flags=self.flags,
            bandwidth=self.bandwidth,
            microdesc_digest=self.digest,
            protocols=self.protocols,
        )


def _kv_ints(args: Sequence[str], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in args:
        k, sep, v = a.partition("=")
        if not sep:
            raise MalformedConsensus(f"{what}: {a!r} is not K=V")
        neg = v.startswith("-")
        out[k] = (-1 if neg else 1) * parse_int(v[1:] if neg else v, what)
    return out


def parse_consensus(text: str) -> Consensus:
    """Parse a microdesc consensus (no signature or time check: see :func:`verify_consensus`)."""
    try:
        if not text.isascii():
            raise MalformedConsensus("consensus is not ASCII")
        its = list(items(text))
        if not its or its[0].keyword != "network-status-version" or its[0].args[:2] != ("3", "microdesc"):
            raise MalformedConsensus("not a version 3 microdesc consensus")
        times: dict[str, float] = {}
        known: frozenset[str] = frozenset()
        auths: list[bytes] = []
        routers: list[RouterStatus] = []
        weights: dict[str, int] = {}
        params: dict[str, int] = {}
        sigs: list[Signature] = []
        current: _RouterBuilder | None = None
        vote_status = ""
        for it in its:
            kw = it.keyword
            if kw == "r":
                if current is not None:
                    routers.append(current.build())
                current = _RouterBuilder(it)
                continue
            if current is not None and kw in ("m", "s", "w", "pr", "v", "a"):
                if kw == "m":
                    current.digest = b64decode_loose(it.arg(0), "m digest")
                    if len(current.digest) != 32:
                        raise MalformedConsensus("m line: digest is not 32 bytes")
                elif kw == "s":
                    current.flags = frozenset(it.args)
                elif kw == "w":
                    current.bandwidth = _kv_ints(it.args, "w").get("Bandwidth", 0)
                elif kw == "pr":
                    current.protocols = " ".join(it.args)
                continue
            if current is not None:
                routers.append(current.build())
                current = None
            if kw == "vote-status":
                vote_status = it.arg(0)
            elif kw in ("valid-after", "fresh-until", "valid-until"):
                times[kw] = parse_time(it.arg(0), it.arg(1), kw)
            elif kw == "known-flags":
                known = frozenset(it.args)
            elif kw == "dir-source":
                auths.append(hex_decode(it.arg(1), 20, "dir-source identity"))
            elif kw == "bandwidth-weights":
                weights = _kv_ints(it.args, kw)
            elif kw == "params":
                params = _kv_ints(it.args, kw)
            elif kw == SIG_KEYWORD:
                args = it.args if len(it.args) == 3 else ("sha1", *it.args)
                if len(args) != 3 or it.obj_tag != "SIGNATURE" or it.obj is None:
                    raise MalformedConsensus("malformed directory-signature")
                sigs.append(
                    Signature(
                        args[0],
                        hex_decode(args[1], 20, "signature identity"),
                        hex_decode(args[2], 20, "signing key digest"),
                        it.obj,
                    )
                )
            elif sigs:
                raise MalformedConsensus(f"{kw} after the signatures")
        if current is not None:
            routers.append(current.build())
        if vote_status != "consensus":
            raise MalformedConsensus("vote-status is not 'consensus'")
        for needed in ("valid-after", "fresh-until", "valid-until"):
            if needed not in times:
                raise MalformedConsensus(f"consensus lacks {needed}")
        if not times["valid-after"] < times["fresh-until"] <= times["valid-until"]:
            raise MalformedConsensus("validity times out of order")
        return Consensus(
            valid_after=times["valid-after"],
            fresh_until=times["fresh-until"],
            valid_until=times["valid-until"],
            known_flags=known,
            authorities=tuple(auths),
            routers=tuple(routers),
            bandwidth_weights=weights,
            params=params,
            signatures=tuple(sigs),
            signed_digests=_signed_digests(text),
            text=text,
        )
    except MalformedConsensus:
        raise
    except DocumentError as exc:
        raise MalformedConsensus(f"consensus: {exc}") from exc


def verify_consensus(
    consensus: Consensus, trusted: Iterable[bytes], certs: Iterable[AuthorityKeyCert], now: float
) -> set[bytes]:
    """Check signatures (a majority of ``trusted`` v3idents) and validity times at ``now``.

    Returns the set of trusted authorities whose signature verified.  Raises
    :class:`UnsignedConsensus`, :class:`StaleConsensus` or :class:`ConsensusNotYetValid`.
    """
    trusted_set = set(trusted)
    if not trusted_set:
        raise UnsignedConsensus("no trusted authority given")
    keys = {
        (c.v3ident, c.signing_key_digest): c for c in certs if c.v3ident in trusted_set and now < c.expires
    }
    good: set[bytes] = set()
    unknown = 0
    for sig in consensus.signatures:
        if sig.identity not in trusted_set:
            unknown += 1
            continue
        cert = keys.get((sig.identity, sig.signing_key_digest))
        digest = consensus.signed_digests.get(sig.algorithm)
        if cert is None or digest is None:
            continue
        if rsa_verify_tor(cert.signing_key, digest, sig.signature):
            good.add(sig.identity)
    need = len(trusted_set) // 2 + 1
    if len(good) < need:
        raise UnsignedConsensus(
            f"consensus has valid signatures from {len(good)} of the {len(trusted_set)} trusted "
            f"authorities (need {need}); {unknown} signature(s) by unknown authorities ignored"
        )
    consensus.check_time(now)
    return good
