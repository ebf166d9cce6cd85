"""Errors of the Tor-network client (directory, path selection); all are :class:`PeerError`.

Directory errors (dir-spec §3.4.1, §3.8): a consensus that does not parse, is not signed by a
majority of the trusted authorities, or is outside its validity period is refused with one of
these, never used.
"""

from __future__ import annotations

from peer.errors import PathError, PeerError, Retry
from peer.tor.docparse import DocumentError


class ConsensusError(PeerError):
    """A consensus (or a document it depends on) that cannot be used."""

    kind = "consensus"
    retry = Retry.LATER


class MalformedConsensus(ConsensusError, DocumentError):
    """The consensus text does not parse."""

    kind = "consensus-malformed"


class UnsignedConsensus(ConsensusError):
    """Too few valid signatures from the trusted authorities (tampered, or signed by others)."""

    kind = "consensus-unsigned"


class StaleConsensus(ConsensusError):
    """The consensus is past its valid-until time."""

    kind = "consensus-stale"


class ConsensusNotYetValid(ConsensusError):
    """The consensus's valid-after time is in the future (or our clock is wrong)."""

    kind = "consensus-not-yet-valid"


class AuthorityCertError(ConsensusError):
    """An authority key certificate that does not parse or verify, or has expired."""

    kind = "authority-cert"


class MicrodescError(ConsensusError):
    """Microdescriptors that do not parse, or whose digest is not in the consensus."""

    kind = "microdesc"


class DirectoryFetchError(ConsensusError):
    """No authority answered a directory request (HTTP or connection error)."""

    kind = "directory-fetch"


class NoSuitableRelay(PathError):
    """Path selection found no relay for a position; the message names the rule."""

    kind = "path-no-relay"
