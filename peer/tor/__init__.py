"""The Tor-network client side: relay certificates, the directory, path selection, guards.

See docs/tor.md.  ``peer.tor.certs`` validates a relay's CERTS cell (tor-spec §4.2),
``peer.tor.directory`` fetches and verifies the microdesc consensus (dir-spec §3-§5),
``peer.tor.path`` and ``peer.tor.guards`` choose circuits' relays (path-spec §2).
"""

from peer.tor.certs import RelayIdentity, check_expected_identity, validate_relay_certs
from peer.tor.directory import AuthoritySpec, DirectoryClient, NetworkDirectory, Relay, build_directory
from peer.tor.errors import (
    AuthorityCertError,
    ConsensusError,
    ConsensusNotYetValid,
    DirectoryFetchError,
    MalformedConsensus,
    MicrodescError,
    NoSuitableRelay,
    StaleConsensus,
    UnsignedConsensus,
)
from peer.tor.guards import GuardSet, select_path
from peer.tor.path import PathBuilder, check_path

__all__ = [
    "AuthorityCertError",
    "AuthoritySpec",
    "ConsensusError",
    "ConsensusNotYetValid",
    "DirectoryClient",
    "DirectoryFetchError",
    "GuardSet",
    "MalformedConsensus",
    "MicrodescError",
    "NetworkDirectory",
    "NoSuitableRelay",
    "PathBuilder",
    "Relay",
    "RelayIdentity",
    "StaleConsensus",
    "UnsignedConsensus",
    "build_directory",
    "check_expected_identity",
    "check_path",
    "select_path",
    "validate_relay_certs",
]
