"""One error hierarchy for the whole project (layer 0, stdlib only).

Each error has a ``kind`` (what went wrong, for schedulers and messages) and a
``retry`` hint, in the manner of Arti's ``HasKind``/``RetryTime``, so callers do
not need ``isinstance`` ladders.  Protocol errors that come from the remote side
carry the scope they close (a cell is dropped, a stream, a circuit or the whole
channel) and the reason code to send.
"""

from __future__ import annotations

import enum


class Retry(enum.Enum):
    """When an operation that failed with this error may be tried again."""

    NEVER = "never"
    IMMEDIATE = "immediate"
    LATER = "later"


class Scope(enum.IntEnum):
    """What a protocol violation closes; ordered from narrowest to widest."""

    CELL = 0  # the cell is dropped, nothing else happens
    STREAM = 1
    CIRCUIT = 2
    CHANNEL = 3


class PeerError(Exception):
    """Base of every error raised by peersm code."""

    kind = "internal"
    retry = Retry.NEVER


class WireError(PeerError, ValueError):
    """Bytes from the network that do not decode (truncated, bad length, bad value)."""

    kind = "wire"


class UnknownVersion(WireError):
    """A versioned format whose version byte we do not know: refused, never guessed."""

    kind = "unknown-version"


class ProtocolViolation(PeerError):
    """The remote side broke a protocol rule.

    ``scope`` says what must be closed; ``reason`` is the DESTROY/END reason to send.
    """

    kind = "protocol"

    def __init__(self, message: str, *, scope: Scope = Scope.CIRCUIT, reason: int = 1) -> None:
        super().__init__(message)
        self.scope = scope
        self.reason = reason


class HandshakeError(PeerError):
    """A link or circuit handshake failed (bad certificate, bad AUTH, wrong identity)."""

    kind = "handshake"
    retry = Retry.LATER


class CryptoError(PeerError):
    """A signature, MAC or key check failed."""

    kind = "crypto"


class UsageError(PeerError):
    """Local misuse of an API (a bug in the caller, not the remote's fault)."""

    kind = "usage"


class TransportError(PeerError):
    """A link's transport failed or was closed."""

    kind = "transport"
    retry = Retry.LATER


class LinkClosed(TransportError):
    """The link is closed: nothing more can be sent or received."""

    kind = "link-closed"


class PathError(PeerError):
    """No path satisfies the path rules; the message names the rule."""

    kind = "path"
    retry = Retry.LATER


class StorageError(PeerError):
    """The chunk store failed (I/O, disk full, corrupt database)."""

    kind = "storage"
    retry = Retry.LATER


class IntegrityError(PeerError):
    """Content that does not verify (bad piece, bad proof, bad signature)."""

    kind = "integrity"
