"""The one small ``Link`` interface every transport implements (memory, WebRTC, TLS, WebSocket).

A link carries *messages*: each ``send`` hands over one message of one or more
whole cells (message transports keep the boundary; byte-stream transports such
as TLS do not, and say so with ``framed = False``).  ``send`` waits for
back-pressure, so a slow reader can never make the sender's memory grow without
bound.  ``recv`` returns the next message, or raises :class:`LinkClosed`.

Nothing here is aiortc-specific, so a second WebRTC backend can be added later.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Link(Protocol):
    """A bidirectional, reliable, ordered link to one neighbour."""

    #: True when each received message is exactly what the peer sent in one ``send``
    #: (WebRTC data channel, WebSocket, memory); False for byte streams (TLS).
    framed: bool
    #: True on the side that opened the link (the WebRTC offerer / TLS client): it sets
    #: the circuit-id MSB to 1 (tor-spec §5.1.1).
    initiator: bool
    #: True when only the server presents a certificate (TLS); False when both ends do (DTLS).
    server_cert_only: bool

    async def send(self, data: bytes) -> None:
        """Send one message; wait while the transport's buffer is full.  Raises LinkClosed."""
        ...

    async def recv(self) -> bytes:
        """Receive the next message (or chunk of the byte stream).  Raises LinkClosed at the end."""
        ...

    async def close(self) -> None:
        """Close the link; pending ``recv`` calls raise LinkClosed.  Idempotent."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        """SHA-256 of the DER certificate the remote presented at the DTLS/TLS layer, as seen here."""
        ...

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        """SHA-256 of our own DTLS/TLS certificate on this link."""
        ...

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The observed remote address (never logged at INFO or above)."""
        ...
