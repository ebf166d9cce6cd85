"""DHT RPC payloads: requests, replies and the admission proof (DESIGN §8).

Each RPC payload travels inside rpcudp's datagram framing (see :mod:`dht.protocol`).
Layouts (big-endian; docs/dht.md has the tables)::

    request = u8 version=1, u8 type, u8 flags, sender NodeID[20], [nonce[16] if WANT_PROOF],
              body, var16 padding (zero bytes)
    reply   = u8 version=1, u8 type|0x80, u8 flags, responder NodeID[20],
              [identity[32], signature[64] if HAS_PROOF], body

    PING       ->  PONG        (empty bodies)
    FIND_NODE  target[20]                     ->  NODES   u8 n, n x contact
    FIND_VALUE u8 kind, key[20], u16 offset   ->  VALUES  u8 n, n x contact, u16 next_offset,
                                                           u8 m, m x var16 record
    STORE      var16 record                   ->  STORE_ACK u8 status
    SAMPLE     target[20], u16 offset         ->  VALUES  (peer records stored near target)
    contact    = NodeID[20], IPv4[4], u16 port

The admission proof is an Ed25519 signature by the responder's identity key, context
``peersm/dht-admit/v1``, over challenger NodeID || nonce || responder NodeID; the
responder's NodeID must equal the first 160 bits of SHA-256 of the key.  Only a node
that receives at the address the challenge was sent to learns the nonce.
"""

from __future__ import annotations

import enum
import socket  # inet_pton/inet_ntop only: address conversion, no I/O
from dataclasses import dataclass, replace

from peer.crypto.identity import ED25519_KEY_LEN, ED25519_SIG_LEN, Identity, node_id_of, verify
from peer.errors import CryptoError, UnknownVersion, UsageError, WireError
from peer.wire.buffer import Reader, Writer

from .keys import ID_LEN
from .records import MAX_RECORD_SIZE, RecordKind

PROTOCOL_VERSION = 1
ADMIT_CONTEXT = "peersm/dht-admit/v1"
NONCE_LEN = 16
MAX_DATAGRAM = 1200  # DESIGN §8
MAX_PAYLOAD = 1150  # MAX_DATAGRAM less rpcudp framing (21) and msgpack envelope (<= 20)
CONTACT_LEN = ID_LEN + 4 + 2
REPLY_BIT = 0x80

F_FULL_NODE = 0x01  # request: the sender is a full node and asks to be admitted
F_WANT_PROOF = 0x02  # request: a nonce follows; answer with an admission proof
F_HAS_PROOF = 0x01  # reply: identity key and signature follow
F_VERIFIED_YOU = 0x02  # reply: the responder has verified the requester (no padding needed)
F_TRUNCATED = 0x04  # reply: cut to the request's size (requester unverified); ask again padded


class MsgType(enum.IntEnum):
    PING = 1
    FIND_NODE = 2
    FIND_VALUE = 3
    STORE = 4
    SAMPLE = 5


RPC_NAMES = {t: t.name.lower() for t in MsgType}


class StoreStatus(enum.IntEnum):
    STORED = 0
    INVALID = 1
    LIMITED = 2
    REFUSED = 3


@dataclass(frozen=True, slots=True)
class Contact:
    """A DHT node: NodeID and the UDP address it was observed at."""

    node_id: bytes
    host: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def encode(self, w: Writer) -> None:
        try:
            packed = socket.inet_pton(socket.AF_INET, self.host)
        except OSError as exc:
            raise UsageError("a DHT contact has an IPv4 address") from exc
        w.push_bytes(self.node_id).push_bytes(packed).push_u16(self.port)

    @classmethod
    def decode(cls, r: Reader) -> Contact:
        node_id = r.pull_bytes(ID_LEN)
        host = socket.inet_ntop(socket.AF_INET, r.pull_bytes(4))
        port = r.pull_u16()
        if port == 0:
            raise WireError("contact: port 0")
        return cls(node_id, host, port)


def _push_contacts(w: Writer, contacts: tuple[Contact, ...]) -> None:
    w.push_u8(len(contacts))
    for c in contacts:
        c.encode(w)


def _pull_contacts(r: Reader) -> tuple[Contact, ...]:
    return tuple(Contact.decode(r) for _ in range(r.pull_u8()))


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE = MsgType.PING

    def encode(self, w: Writer) -> None:
        pass

    @classmethod
    def decode(cls, r: Reader) -> Ping:
        return cls()


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes
    TYPE = MsgType.FIND_NODE

    def encode(self, w: Writer) -> None:
        w.push_bytes(self.target)

    @classmethod
    def decode(cls, r: Reader) -> FindNode:
        return cls(r.pull_bytes(ID_LEN))


@dataclass(frozen=True, slots=True)
class FindValue:
    kind: RecordKind
    key: bytes
    offset: int = 0
    TYPE = MsgType.FIND_VALUE

    def encode(self, w: Writer) -> None:
        w.push_u8(self.kind).push_bytes(self.key).push_u16(self.offset)

    @classmethod
    def decode(cls, r: Reader) -> FindValue:
        kind = r.pull_u8()
        if kind not in RecordKind.__members__.values():
            raise WireError(f"unknown record kind {kind}")
        return cls(RecordKind(kind), r.pull_bytes(ID_LEN), r.pull_u16())


@dataclass(frozen=True, slots=True)
class Store:
    record: bytes
    TYPE = MsgType.STORE

    def encode(self, w: Writer) -> None:
        w.push_var16(self.record)

    @classmethod
    def decode(cls, r: Reader) -> Store:
        record = r.pull_var16()
        if not record or len(record) > MAX_RECORD_SIZE:
            raise WireError("STORE: record size out of range")
        return cls(record)


@dataclass(frozen=True, slots=True)
class Sample:
    target: bytes
    offset: int = 0
    TYPE = MsgType.SAMPLE

    def encode(self, w: Writer) -> None:
        w.push_bytes(self.target).push_u16(self.offset)

    @classmethod
    def decode(cls, r: Reader) -> Sample:
        return cls(r.pull_bytes(ID_LEN), r.pull_u16())


RequestBody = Ping | FindNode | FindValue | Store | Sample
_REQUEST_BODIES: dict[int, type[RequestBody]] = {
    c.TYPE: c for c in (Ping, FindNode, FindValue, Store, Sample)
}


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE = MsgType.PING

    def encode(self, w: Writer) -> None:
        pass

    @classmethod
    def decode(cls, r: Reader) -> Pong:
        return cls()


@dataclass(frozen=True, slots=True)
class Nodes:
    contacts: tuple[Contact, ...]
    TYPE = MsgType.FIND_NODE

    def encode(self, w: Writer) -> None:
        _push_contacts(w, self.contacts)

    @classmethod
    def decode(cls, r: Reader) -> Nodes:
        return cls(_pull_contacts(r))


@dataclass(frozen=True, slots=True)
class Values:
    contacts: tuple[Contact, ...]
    records: tuple[bytes, ...]
    next_offset: int = 0  # 0: no more records; otherwise ask again from this offset
    TYPE = MsgType.FIND_VALUE

    def encode(self, w: Writer) -> None:
        _push_contacts(w, self.contacts)
        w.push_u16(self.next_offset).push_u8(len(self.records))
        for rec in self.records:
            w.push_var16(rec)

    @classmethod
    def decode(cls, r: Reader) -> Values:
        contacts = _pull_contacts(r)
        next_offset = r.pull_u16()
        records = []
        for _ in range(r.pull_u8()):
            rec = r.pull_var16()
            if not rec or len(rec) > MAX_RECORD_SIZE:
                raise WireError("VALUES: record size out of range")
            records.append(rec)
        return cls(contacts, tuple(records), next_offset)


@dataclass(frozen=True, slots=True)
class StoreAck:
    status: StoreStatus
    TYPE = MsgType.STORE

    def encode(self, w: Writer) -> None:
        w.push_u8(self.status)

    @classmethod
    def decode(cls, r: Reader) -> StoreAck:
        status = r.pull_u8()
        if status not in StoreStatus.__members__.values():
            raise WireError(f"unknown store status {status}")
        return cls(StoreStatus(status))


ReplyBody = Pong | Nodes | Values | StoreAck
_REPLY_BODIES: dict[int, type[ReplyBody]] = {
    MsgType.PING: Pong,
    MsgType.FIND_NODE: Nodes,
    MsgType.FIND_VALUE: Values,
    MsgType.STORE: StoreAck,
    MsgType.SAMPLE: Values,
}


@dataclass(frozen=True, slots=True)
class Proof:
    """Admission proof: the responder's identity key and its signature over the challenge."""

    identity_key: bytes
    signature: bytes


def proof_message(challenger: bytes, nonce: bytes, responder: bytes) -> bytes:
    return challenger + nonce + responder


def make_proof(identity: Identity, challenger: bytes, nonce: bytes, *, public: bytes | None = None) -> Proof:
    """Answer a challenge.  ``public`` is the identity's public key, if the caller has it at hand."""
    public = public or identity.public
    return Proof(public, identity.sign(ADMIT_CONTEXT, proof_message(challenger, nonce, node_id_of(public))))


def check_proof(proof: Proof, challenger: bytes, nonce: bytes, responder: bytes) -> None:
    """Raise CryptoError unless ``proof`` binds ``responder`` (a NodeID) to its key for this challenge."""
    if node_id_of(proof.identity_key) != responder:
        raise CryptoError("admission proof: NodeID does not match the identity key")
    verify(proof.identity_key, ADMIT_CONTEXT, proof_message(challenger, nonce, responder), proof.signature)


@dataclass(frozen=True, slots=True)
class Request:
    sender: bytes
    body: RequestBody
    full_node: bool = False
    nonce: bytes | None = None  # present: the sender wants an admission proof
    padding: int = 0

    @property
    def type(self) -> MsgType:
        return self.body.TYPE

    def encode(self) -> bytes:
        flags = (F_FULL_NODE if self.full_node else 0) | (F_WANT_PROOF if self.nonce is not None else 0)
        w = Writer().push_u8(PROTOCOL_VERSION).push_u8(self.type).push_u8(flags).push_bytes(self.sender)
        if self.nonce is not None:
            if len(self.nonce) != NONCE_LEN:
                raise UsageError("a nonce is 16 bytes")
            w.push_bytes(self.nonce)
        self.body.encode(w)
        w.push_var16(bytes(self.padding))
        return w.getvalue()

    def padded_to(self, size: int) -> Request:
        """The same request, padded so that its payload is at least ``size`` bytes."""
        missing = size - len(self.encode())
        return replace(self, padding=self.padding + missing) if missing > 0 else self

    @classmethod
    def decode(cls, data: bytes) -> Request:
        r = _start(data, expect_reply=False)
        type_, flags = r.pull_u8(), r.pull_u8()
        if type_ not in _REQUEST_BODIES:
            raise WireError(f"unknown DHT request type {type_}")
        if flags & ~(F_FULL_NODE | F_WANT_PROOF):
            raise WireError("DHT request: unknown flag bits")
        sender = r.pull_bytes(ID_LEN)
        nonce = r.pull_bytes(NONCE_LEN) if flags & F_WANT_PROOF else None
        body = _REQUEST_BODIES[type_].decode(r)
        padding = r.pull_var16()
        if padding.count(0) != len(padding):
            raise WireError("DHT request: padding is not zero")
        r.expect_end("DHT request")
        return cls(sender, body, bool(flags & F_FULL_NODE), nonce, len(padding))


@dataclass(frozen=True, slots=True)
class Reply:
    responder: bytes
    body: ReplyBody
    proof: Proof | None = None
    verified_you: bool = False
    truncated: bool = False

    def encode(self, type_: MsgType) -> bytes:
        if _REPLY_BODIES[type_] is not type(self.body):
            raise UsageError(f"{type(self.body).__name__} does not answer {type_.name}")
        flags = (
            (F_HAS_PROOF if self.proof else 0)
            | (F_VERIFIED_YOU if self.verified_you else 0)
            | (F_TRUNCATED if self.truncated else 0)
        )
        w = Writer().push_u8(PROTOCOL_VERSION).push_u8(type_ | REPLY_BIT).push_u8(flags)
        w.push_bytes(self.responder)
        if self.proof is not None:
            w.push_bytes(self.proof.identity_key).push_bytes(self.proof.signature)
        self.body.encode(w)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, expected: MsgType) -> Reply:
        r = _start(data, expect_reply=True)
        type_, flags = r.pull_u8(), r.pull_u8()
        if type_ != expected | REPLY_BIT:
            raise WireError(f"DHT reply type {type_:#x} does not answer {expected.name}")
        if flags & ~(F_HAS_PROOF | F_VERIFIED_YOU | F_TRUNCATED):
            raise WireError("DHT reply: unknown flag bits")
        responder = r.pull_bytes(ID_LEN)
        proof = None
        if flags & F_HAS_PROOF:
            proof = Proof(r.pull_bytes(ED25519_KEY_LEN), r.pull_bytes(ED25519_SIG_LEN))
        body = _REPLY_BODIES[expected].decode(r)
        r.expect_end("DHT reply")
        return cls(responder, body, proof, bool(flags & F_VERIFIED_YOU), bool(flags & F_TRUNCATED))


def _start(data: bytes, *, expect_reply: bool) -> Reader:
    if len(data) > MAX_PAYLOAD:
        raise WireError(f"DHT payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    r = Reader(data)
    version = r.pull_u8()
    if version != PROTOCOL_VERSION:
        raise UnknownVersion(f"DHT protocol version {version}")
    return r


def request_type(data: bytes) -> MsgType | None:
    """The type of a request payload, or None if it is not one (used to pick the reply decoder)."""
    if len(data) < 2 or data[1] not in _REQUEST_BODIES:
        return None
    return MsgType(data[1])


def fit_reply(reply: Reply, type_: MsgType, limit: int) -> Reply:
    """Shrink ``reply`` until its payload is at most ``limit`` bytes (anti-amplification).

    Contacts and records are dropped from the end, then the proof; a reply that had
    to shrink is flagged TRUNCATED so that the requester asks again, padded.  The
    bare header (23 bytes plus the body's counters) always fits a valid request.
    """
    if len(reply.encode(type_)) <= limit:
        return reply
    body = reply.body
    if isinstance(body, Nodes):
        body = Nodes(())
    elif isinstance(body, Values):
        body = Values((), (), 0)
    out = replace(reply, body=body, truncated=True)
    if len(out.encode(type_)) > limit:
        out = replace(out, proof=None)
    return out


def pack_values(contacts: tuple[Contact, ...], records: list[bytes], offset: int, budget: int) -> Values:
    """VALUES with ``contacts`` and as many of ``records[offset:]`` as fit in ``budget`` payload bytes.

    At least one record is always included when one is left (contacts are dropped
    from the end to make room), so ``next_offset`` always moves forward.
    """
    if offset < len(records):
        room = budget - 4 - 2 - len(records[offset])
        contacts = contacts[: max(0, min(len(contacts), room // CONTACT_LEN))]
    used = 1 + CONTACT_LEN * len(contacts) + 3
    page: list[bytes] = []
    i = offset
    while i < len(records) and len(page) < 255 and used + 2 + len(records[i]) <= budget:
        used += 2 + len(records[i])
        page.append(records[i])
        i += 1
    next_offset = i if i < len(records) else 0
    if next_offset > 0xFFFF:
        next_offset = 0
    return Values(contacts, tuple(page), next_offset)
