"""One error hierarchy for the whole project (layer 0, stdlib only).

Each error has a ``kind`` (what went wrong, for schedulers and messages) and a
``retry`` hint, in the manner of Arti's ``HasKind``/``RetryTime``, so callers do
not need ``isinstance`` ladders.  What a remote's broken rule closes inside the onion
core is decided there (docs/circuits.md, "Scoping").
"""

from __future__ import annotations

import enum


class Retry(enum.Enum):
    """When an operation that failed with this error may be tried again."""

    NEVER = "never"
    IMMEDIATE = "immediate"
    LATER = "later"


class PeerError(Exception):
    """Base of every error raised by peersm code."""

    kind = "internal"
    retry = Retry.NEVER


class WireError(PeerError, ValueError):
    """Bytes from the network that do not decode (truncated, bad length, bad value), or a
    message the protocol does not allow where it came."""

    kind = "wire"


class UnknownVersion(WireError):
    """A versioned format whose version byte we do not know: refused, never guessed."""

    kind = "unknown-version"


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
