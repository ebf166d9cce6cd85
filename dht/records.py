"""Signed, expiring DHT records: provider records and peer records (DESIGN §3, §4 "Route", §8).

Byte layouts (big-endian, every format starts with its version byte; docs/dht.md has the tables)::

    route    = u8 n, n x (u8 transport, var8 address), u8 m, m x var8 bridge-url
    provider = u8 version=1, u8 kind=1, key[20], identity[32], ntor[32], seal[32],
               u64 expiry, route, signature[64]
    peer     = u8 version=1, u8 kind=2, identity[32], ntor[32], seal[32], u8 flags (1 stable, 2 exit),
               u64 expiry, route, u8 n, n x neighbour NodeID[20], signature[64]

The signature is Ed25519 by the record's identity key over everything before it, with
the context ``peersm/dht-record/v1`` (the kind byte is inside, so a provider record can
never pass for a peer record).  The publisher's NodeID is never carried: it is derived
from the identity key, so a record cannot name one NodeID and be signed by another key.
A decoder accepts only the canonical encoding (re-encoding gives the same bytes) and
refuses unknown versions, kinds, transports and flag bits.  Pure code: callers pass ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TypeVar

from peer.crypto.identity import ED25519_KEY_LEN, ED25519_SIG_LEN, Identity, node_id_of, verify
from peer.errors import CryptoError, PeerError, UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer

from .keys import ID_LEN

RECORD_VERSION = 1
RECORD_CONTEXT = "peersm/dht-record/v1"
MAX_RECORD_SIZE = 900  # bytes, whole encoding; keeps a STORE inside one 1,200-byte datagram
MAX_ENDPOINTS = 6
MAX_ADDRESS_LEN = 64
MAX_BRIDGES = 3
MAX_BRIDGE_URL_LEN = 128
MAX_NEIGHBOURS = 16
MAX_TTL = 24 * 3600.0  # a record may not claim to live longer than this
CLOCK_SKEW = 300.0  # tolerated in the future-expiry check


class InvalidRecord(PeerError):
    """A record that decodes but must not be stored or returned (signature, expiry, key)."""

    kind = "dht-record"


class RecordKind(enum.IntEnum):
    PROVIDER = 1
    PEER = 2


class Transport(enum.IntEnum):
    """Transport codes in a route (DESIGN §4)."""

    WEBRTC = 1
    TLS = 2
    WS = 3
    UDP = 4


TRANSPORT_NAMES = {t: t.name.lower() for t in Transport}
TRANSPORT_BY_NAME = {name: t for t, name in TRANSPORT_NAMES.items()}
PEER_FLAG_STABLE = 0x01
PEER_FLAG_EXIT = 0x02


def _ascii(value: bytes, what: str) -> str:
    if not value or any(c < 0x21 or c > 0x7E for c in value):
        raise WireError(f"{what}: not printable ASCII")
    return value.decode("ascii")


@dataclass(frozen=True, slots=True)
class Route:
    """How a peer is reached: (transport, address) pairs plus the bridges it is registered with."""

    endpoints: tuple[tuple[str, str], ...] = ()
    bridges: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.endpoints) > MAX_ENDPOINTS or len(self.bridges) > MAX_BRIDGES:
            raise UsageError("route: too many endpoints or bridges")
        for transport, address in self.endpoints:
            if transport not in TRANSPORT_BY_NAME:
                raise UsageError(f"route: unknown transport {transport!r}")
            self._check(address, MAX_ADDRESS_LEN)
        for url in self.bridges:
            self._check(url, MAX_BRIDGE_URL_LEN)

    @staticmethod
    def _check(text: str, limit: int) -> None:
        if not 0 < len(text) <= limit or any(not 0x21 <= ord(c) <= 0x7E for c in text):
            raise UsageError(f"route: an address is 1..{limit} printable ASCII characters")

    def encode(self, w: Writer) -> None:
        w.push_u8(len(self.endpoints))
        for transport, address in self.endpoints:
            w.push_u8(TRANSPORT_BY_NAME[transport]).push_var8(address.encode("ascii"))
        w.push_u8(len(self.bridges))
        for url in self.bridges:
            w.push_var8(url.encode("ascii"))

    @classmethod
    def decode(cls, r: Reader) -> Route:
        n = r.pull_u8()
        if n > MAX_ENDPOINTS:
            raise WireError("route: too many endpoints")
        endpoints = []
        for _ in range(n):
            code = r.pull_u8()
            if code not in TRANSPORT_NAMES:
                raise WireError(f"route: unknown transport {code}")
            address = r.pull_var8()
            if len(address) > MAX_ADDRESS_LEN:
                raise WireError("route: address too long")
            endpoints.append((TRANSPORT_NAMES[Transport(code)], _ascii(address, "route address")))
        m = r.pull_u8()
        if m > MAX_BRIDGES:
            raise WireError("route: too many bridges")
        bridges = []
        for _ in range(m):
            url = r.pull_var8()
            if len(url) > MAX_BRIDGE_URL_LEN:
                raise WireError("route: bridge URL too long")
            bridges.append(_ascii(url, "bridge URL"))
        return cls(tuple(endpoints), tuple(bridges))


def _check_key(value: bytes, what: str) -> None:
    if len(value) != ED25519_KEY_LEN:
        raise UsageError(f"{what} is {ED25519_KEY_LEN} bytes")


@dataclass(frozen=True, slots=True)
class ProviderFields:
    """What an ORDB announces for a hash_name (the caller's half of a provider record)."""

    ntor_key: bytes
    seal_key: bytes
    route: Route


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """DHT key -> the ORDB that serves it: its identity, ntor and seal keys and route."""

    key: bytes
    identity_key: bytes
    ntor_key: bytes
    seal_key: bytes
    route: Route
    expiry: int  # Unix seconds
    signature: bytes = b""

    KIND = RecordKind.PROVIDER

    def __post_init__(self) -> None:
        if len(self.key) != ID_LEN:
            raise UsageError("a DHT key is 20 bytes")
        for value, what in (
            (self.identity_key, "identity"),
            (self.ntor_key, "ntor"),
            (self.seal_key, "seal"),
        ):
            _check_key(value, what)

    @property
    def node_id(self) -> bytes:
        """The ORDB's NodeID, derived from the identity key that signs the record."""
        return node_id_of(self.identity_key)

    @property
    def dht_key(self) -> bytes:
        return self.key

    def signed_part(self) -> bytes:
        w = Writer().push_u8(RECORD_VERSION).push_u8(self.KIND).push_bytes(self.key)
        w.push_bytes(self.identity_key).push_bytes(self.ntor_key).push_bytes(self.seal_key)
        w.push_u64(self.expiry)
        self.route.encode(w)
        return w.getvalue()

    def encode(self) -> bytes:
        return _finish(self.signed_part(), self.signature)

    @classmethod
    def _decode_body(cls, r: Reader) -> ProviderRecord:
        key = r.pull_bytes(ID_LEN)
        identity, ntor, seal = r.pull_bytes(32), r.pull_bytes(32), r.pull_bytes(32)
        expiry = r.pull_u64()
        route = Route.decode(r)
        return cls(key, identity, ntor, seal, route, expiry, r.pull_bytes(ED25519_SIG_LEN))

    def sign(self, identity: Identity) -> ProviderRecord:
        return _sign(self, identity)


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """NodeID -> identity, ntor and seal keys, route, current neighbours, stable or ephemeral."""

    identity_key: bytes
    ntor_key: bytes
    seal_key: bytes
    route: Route
    neighbours: tuple[bytes, ...]
    stable: bool
    expiry: int  # Unix seconds
    signature: bytes = b""
    exit: bool = False  # the peer relays streams out of the overlay (its exit policy is not empty)

    KIND = RecordKind.PEER

    def __post_init__(self) -> None:
        for value, what in (
            (self.identity_key, "identity"),
            (self.ntor_key, "ntor"),
            (self.seal_key, "seal"),
        ):
            _check_key(value, what)
        if len(self.neighbours) > MAX_NEIGHBOURS or len(set(self.neighbours)) != len(self.neighbours):
            raise UsageError(f"a peer record lists at most {MAX_NEIGHBOURS} distinct neighbours")
        if any(len(n) != ID_LEN for n in self.neighbours):
            raise UsageError("a neighbour is a 20-byte NodeID")

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.identity_key)

    @property
    def dht_key(self) -> bytes:
        """A peer record is stored under its own NodeID."""
        return self.node_id

    def signed_part(self) -> bytes:
        w = Writer().push_u8(RECORD_VERSION).push_u8(self.KIND)
        w.push_bytes(self.identity_key).push_bytes(self.ntor_key).push_bytes(self.seal_key)
        flags = (PEER_FLAG_STABLE if self.stable else 0) | (PEER_FLAG_EXIT if self.exit else 0)
        w.push_u8(flags).push_u64(self.expiry)
        self.route.encode(w)
        w.push_u8(len(self.neighbours))
        for n in self.neighbours:
            w.push_bytes(n)
        return w.getvalue()

    def encode(self) -> bytes:
        return _finish(self.signed_part(), self.signature)

    @classmethod
    def _decode_body(cls, r: Reader) -> PeerRecord:
        identity, ntor, seal = r.pull_bytes(32), r.pull_bytes(32), r.pull_bytes(32)
        flags = r.pull_u8()
        if flags & ~(PEER_FLAG_STABLE | PEER_FLAG_EXIT):
            raise WireError("peer record: unknown flag bits")
        expiry = r.pull_u64()
        route = Route.decode(r)
        n = r.pull_u8()
        if n > MAX_NEIGHBOURS:
            raise WireError("peer record: too many neighbours")
        neighbours = tuple(r.pull_bytes(ID_LEN) for _ in range(n))
        if len(set(neighbours)) != n:
            raise WireError("peer record: duplicate neighbour")
        sig = r.pull_bytes(ED25519_SIG_LEN)
        stable, exit_ = bool(flags & PEER_FLAG_STABLE), bool(flags & PEER_FLAG_EXIT)
        return cls(identity, ntor, seal, route, neighbours, stable, expiry, sig, exit_)

    def sign(self, identity: Identity) -> PeerRecord:
        return _sign(self, identity)


Record = ProviderRecord | PeerRecord
R = TypeVar("R", ProviderRecord, PeerRecord)


def _finish(signed: bytes, signature: bytes) -> bytes:
    if len(signature) != ED25519_SIG_LEN:
        raise UsageError("record is not signed")
    out = signed + signature
    if len(out) > MAX_RECORD_SIZE:
        raise UsageError(f"record of {len(out)} bytes exceeds {MAX_RECORD_SIZE}")
    return out


def _sign(record: R, identity: Identity) -> R:
    if identity.public != record.identity_key:
        raise UsageError("a record is signed by the identity key it carries")
    unsigned = replace(record, signature=b"")
    signed_part = unsigned.signed_part()
    if len(signed_part) + ED25519_SIG_LEN > MAX_RECORD_SIZE:
        raise UsageError("record too large")
    return replace(record, signature=identity.sign(RECORD_CONTEXT, signed_part))


def decode_record(data: bytes) -> Record:
    """Decode one record (either kind); raise WireError/UnknownVersion on anything non-canonical."""
    if len(data) > MAX_RECORD_SIZE:
        raise WireError(f"record of {len(data)} bytes exceeds {MAX_RECORD_SIZE}")
    r = Reader(data)
    version = r.pull_u8()
    if version != RECORD_VERSION:
        raise UnknownVersion(f"DHT record version {version}")
    kind = r.pull_u8()
    record: Record
    try:
        if kind == RecordKind.PROVIDER:
            record = ProviderRecord._decode_body(r)
        elif kind == RecordKind.PEER:
            record = PeerRecord._decode_body(r)
        else:
            raise WireError(f"unknown DHT record kind {kind}")
    except UsageError as exc:  # a field the dataclass refuses is a wire error here
        raise WireError(str(exc)) from exc
    r.expect_end("DHT record")
    if record.encode() != data:
        raise WireError("DHT record: not canonical")
    return record


def validate(record: Record, now: float, *, key: bytes | None = None, max_ttl: float = MAX_TTL) -> None:
    """Check a record before storing or returning it: key, expiry window, signature.

    Raises :class:`InvalidRecord`.  ``key`` is the DHT key it was stored or found under.
    """
    if key is not None and record.dht_key != key:
        raise InvalidRecord("record does not belong to this key")
    if record.expiry <= now:
        raise InvalidRecord("record expired")
    if record.expiry > now + max_ttl + CLOCK_SKEW:
        raise InvalidRecord("record expiry too far in the future")
    try:
        verify(record.identity_key, RECORD_CONTEXT, record.signed_part(), record.signature)
    except CryptoError as exc:
        raise InvalidRecord("bad record signature") from exc


def decode_valid(data: bytes, now: float, *, key: bytes | None = None, max_ttl: float = MAX_TTL) -> Record:
    """Decode and validate; raise WireError or InvalidRecord."""
    record = decode_record(data)
    validate(record, now, key=key, max_ttl=max_ttl)
    return record
