"""An in-memory link pair for tests and the in-process swarm (implements ``Link``).

Each direction is a bounded queue of messages, so a sender waits when the reader
stops reading (the same back-pressure a real transport gives).  Optional
fingerprints stand in for DTLS certificate fingerprints.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from peer.errors import LinkClosed

_EOF = object()


class MemoryLink:
    """One end of an in-memory link; make pairs with :func:`memory_link_pair`."""

    framed = True
    server_cert_only = False

    def __init__(self, *, initiator: bool, queue_messages: int = 256) -> None:
        self.initiator = initiator
        self._rx: asyncio.Queue[object] = asyncio.Queue(queue_messages)
        self._peer: MemoryLink | None = None
        self._closed = False
        self._local_fp = hashlib.sha256(os.urandom(32)).digest()
        self._remote_address: tuple[str, int] | None = None
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        return self._peer._local_fp if self._peer is not None else None

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        return self._local_fp

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._remote_address

    async def send(self, data: bytes) -> None:
        peer = self._peer
        if self._closed or peer is None or peer._closed:
            raise LinkClosed("memory link closed")
        self.bytes_sent += len(data)
        await peer._rx.put(data)

    async def recv(self) -> bytes:
        if self._closed and self._rx.empty():
            raise LinkClosed("memory link closed")
        item = await self._rx.get()
        if item is _EOF:
            self._closed = True
            raise LinkClosed("memory link closed by peer")
        assert isinstance(item, bytes)
        return item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in (self._rx, self._peer._rx if self._peer is not None else None):
            if q is None:
                continue
            while q.full():
                q.get_nowait()
            q.put_nowait(_EOF)


def memory_link_pair(queue_messages: int = 256) -> tuple[MemoryLink, MemoryLink]:
    """Two connected ends: ``a`` is the initiator."""
    a = MemoryLink(initiator=True, queue_messages=queue_messages)
    b = MemoryLink(initiator=False, queue_messages=queue_messages)
    a._peer, b._peer = b, a
    return a, b
