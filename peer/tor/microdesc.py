"""Microdescriptors (dir-spec §3.3 "Creating microdescriptors") and exit policy summaries.

A microdescriptor starts with ``onion-key`` (the TAP key, unused since 0.4.9) and carries
``ntor-onion-key`` (base64 Curve25519 key, 32 bytes), ``id ed25519`` (the relay's Ed25519
identity), optionally ``family`` and ``p`` / ``p6`` policy summaries.  Its digest, named by the
consensus ``m`` line, is the SHA-256 of its exact text, from ``onion-key`` up to the next one.

Policy summary (dir-spec §3.8.2, "p"): ``accept|reject PORTLIST`` with PORTLIST =
``PORT|LOW-HIGH`` separated by commas; absent -> rejects everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from peer.tor.docparse import DocumentError, b64decode_loose, items, parse_int
from peer.tor.errors import MicrodescError


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """``accept`` (True) or ``reject`` (False) the given inclusive port ranges; others the opposite."""

    accept: bool
    ranges: tuple[tuple[int, int], ...]

    def allows(self, port: int) -> bool:
        inside = any(lo <= port <= hi for lo, hi in self.ranges)
        return inside if self.accept else not inside

    def encode(self) -> str:
        ports = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)
        return f"{'accept' if self.accept else 'reject'} {ports}"

    @classmethod
    def parse(cls, args: tuple[str, ...]) -> PolicySummary:
        if len(args) != 2 or args[0] not in ("accept", "reject"):
            raise MicrodescError("policy summary: expected accept|reject PORTLIST")
        ranges = []
        try:
            for part in args[1].split(","):
                lo_s, sep, hi_s = part.partition("-")
                lo = parse_int(lo_s, "port", 1, 65535)
                hi = parse_int(hi_s, "port", 1, 65535) if sep else lo
                if hi < lo:
                    raise MicrodescError("policy summary: empty port range")
                ranges.append((lo, hi))
        except DocumentError as exc:
            raise MicrodescError(f"policy summary: {exc}") from exc
        return cls(args[0] == "accept", tuple(ranges))


REJECT_ALL = PolicySummary(False, ((1, 65535),))


@dataclass(frozen=True, slots=True)
class Microdesc:
    digest: bytes  # SHA-256 of text
    ntor_key: bytes  # 32 bytes
    ed25519_id: bytes | None  # 32 bytes
    policy: PolicySummary
    family: tuple[str, ...]
    text: str
    family_ids: tuple[str, ...] = ()  # "family-ids" (proposal 321 "happy families"), e.g. ed25519:...


def _split(text: str) -> list[str]:
    """Microdescriptors start at each line beginning with ``onion-key``."""
    starts = [
        i
        for i in range(len(text))
        if (i == 0 or text[i - 1] == "\n")
        and text.startswith("onion-key", i)
        and text[i + 9 : i + 10] in ("\n", " ")
    ]
    if not text:
        return []
    if not starts or starts[0] != 0:
        raise MicrodescError("microdescriptors must start with onion-key")
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def parse_microdesc(text: str) -> Microdesc:
    ntor: bytes | None = None
    ed: bytes | None = None
    policy = REJECT_ALL
    family: tuple[str, ...] = ()
    family_ids: tuple[str, ...] = ()
    try:
        for it in items(text):
            if it.keyword == "ntor-onion-key":
                if ntor is not None:
                    raise MicrodescError("duplicate ntor-onion-key")
                ntor = b64decode_loose(it.arg(0), "ntor-onion-key")
            elif it.keyword == "id" and it.args[:1] == ("ed25519",):
                if ed is not None:
                    raise MicrodescError("duplicate id ed25519")
                ed = b64decode_loose(it.arg(1), "id ed25519")
            elif it.keyword == "p":
                policy = PolicySummary.parse(it.args)
            elif it.keyword == "family":
                family = it.args
            elif it.keyword == "family-ids":
                family_ids = it.args
    except DocumentError as exc:
        raise MicrodescError(f"microdescriptor: {exc}") from exc
    if ntor is None or len(ntor) != 32:
        raise MicrodescError("microdescriptor lacks a 32-byte ntor-onion-key")
    if ed is not None and len(ed) != 32:
        raise MicrodescError("microdescriptor: id ed25519 is not 32 bytes")
    return Microdesc(
        hashlib.sha256(text.encode("ascii")).digest(), ntor, ed, policy, family, text, family_ids
    )


def parse_microdescs(text: str, wanted: Iterable[bytes] | None = None) -> dict[bytes, Microdesc]:
    """Parse a ``/tor/micro/d/...`` response, keyed by digest.

    With ``wanted``, a microdescriptor whose digest was not asked for is an error (the server
    must not slip in other content); a missing one simply is not in the result.
    """
    if not text.isascii():
        raise MicrodescError("microdescriptors are not ASCII")
    want = set(wanted) if wanted is not None else None
    out: dict[bytes, Microdesc] = {}
    for part in _split(text):
        md = parse_microdesc(part)
        if want is not None and md.digest not in want:
            raise MicrodescError("a microdescriptor that the consensus does not name")
        out[md.digest] = md
    return out
