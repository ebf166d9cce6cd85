"""What a remote's broken rule closes inside the onion core (docs/circuits.md, "Scoping").

Internal to :mod:`peer.proto`: :class:`~peer.proto.node.OnionNode` turns a
:class:`CircuitViolation` into a DESTROY of that circuit and a :class:`ChannelViolation`
into the close of that channel; neither ever reaches the driver.
"""

from __future__ import annotations

from peer.wire.commands import DestroyReason


class CircuitViolation(Exception):
    """The remote broke a circuit rule; the circuit is torn down with ``reason``."""

    def __init__(self, message: str, reason: int = DestroyReason.PROTOCOL) -> None:
        super().__init__(message)
        self.reason = int(reason)


class ChannelViolation(Exception):
    """A circuit cell that breaks a channel-level rule; the channel is closed."""
