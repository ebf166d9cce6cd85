"""A stand-in for ``peer.roles.fetch.Download`` with the interface ``Downloads`` and the API routes use.

It fetches nothing: ``run`` waits until the test calls :meth:`FakeDownload.finish` or
:meth:`FakeDownload.fail`, then returns or raises, as the real one does after its last piece.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peer.errors import PeerError
from peer.roles.fetch import Progress
from storage.sharelink import ShareLink


class FakeDownload:
    def __init__(self, link: ShareLink) -> None:
        self.link = link
        self.progress = Progress()
        self.listeners: list[Callable[[Progress], None]] = []
        self.running = asyncio.Event()
        self._outcome: asyncio.Future[PeerError | None] = asyncio.get_running_loop().create_future()

    async def run(self) -> Progress:
        """Like the real one: "verified", or "failed" with the error, or "paused"; listeners hear it."""
        self.progress.state = "downloading"
        self.running.set()
        self._notify()
        try:
            error = await self._outcome
            if error is not None:
                self.progress.state = "failed"
                self.progress.error = str(error)
                raise error
            self.progress.state = "verified"
            self.progress.have = self.progress.total
        except asyncio.CancelledError:
            self.progress.state = "paused"
            raise
        finally:
            self._notify()
        return self.progress

    def step(self, have: int, total: int) -> None:
        """Report progress as the real download does after a verified piece."""
        self.progress.have, self.progress.total = have, total
        self._notify()

    def finish(self) -> None:
        self._outcome.set_result(None)

    def fail(self, error: PeerError) -> None:
        self._outcome.set_result(error)

    def _notify(self) -> None:
        for cb in list(self.listeners):
            cb(self.progress)


@dataclass
class Factories:
    """The callables ``Downloads`` takes, recording what they were asked."""

    made: list[FakeDownload] = field(default_factory=list)
    exported: list[tuple[ShareLink, Path]] = field(default_factory=list)
    seeded: list[bytes] = field(default_factory=list)
    export_error: PeerError | None = None

    def make(self, link: ShareLink) -> FakeDownload:
        d = FakeDownload(link)
        self.made.append(d)
        return d

    async def export(self, link: ShareLink, output: Path) -> Path:
        if self.export_error is not None:
            raise self.export_error
        self.exported.append((link, output))
        output.write_bytes(b"exported " + link.hash_name)
        return output

    def seed(self, hash_name: bytes) -> None:
        self.seeded.append(hash_name)

    def made_for(self, link: ShareLink) -> list[FakeDownload]:
        return [d for d in self.made if d.link.hash_name == link.hash_name]


def link(n: int, *, key: bool = False, name: str | None = None) -> ShareLink:
    """A distinct, valid share link per ``n``."""
    return ShareLink(bytes([n]) * 32, name, bytes([0xA0 + n % 16]) * 32 if key else None)
