"""The peer's downloads (DESIGN §5-7): started or attached to by link, persisted, resumed.

Downloads belong to the running peer, not to the command that asked for them: ``peersm get``
attaches to a download already running, and a download survives a restart.  The links (keys
included) are kept in ``DATA/downloads.json``, mode 0600, written atomically after every
change; the pieces themselves are in the chunk store, verified, so a resumed download fetches
only what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from peer.errors import PeerError
from peer.net.keystore import atomic_write_private
from peer.roles.fetch import Download, Progress
from storage.sharelink import ShareLink

DOWNLOADS_FILE = "downloads.json"

log = logging.getLogger(__name__)


def _parse_entry(item: object) -> tuple[ShareLink, Path | None, bool] | str:
    """One entry of DATA/downloads.json as (link, output, done), or why it is unusable (no key in it)."""
    if not isinstance(item, dict):
        return "not an object"
    text, output, done = item.get("link"), item.get("output"), item.get("done", False)
    if not isinstance(text, str):
        return "no link"
    if output is not None and not isinstance(output, str):
        return "the output is not a path"
    if not isinstance(done, bool):
        return "'done' is not true or false"
    try:
        link = ShareLink.parse(text)
    except PeerError as exc:
        return f"bad link ({exc.kind})"
    return link, Path(output) if output else None, done


@dataclass(eq=False)
class DownloadTask:
    link: ShareLink
    download: Download
    output: Path | None
    task: asyncio.Task[None] = field(init=False)
    exported: str | None = None

    def summary(self) -> dict[str, object]:
        p: Progress = self.download.progress
        return {
            "id": self.link.hash_name.hex(),
            "state": p.state,
            "have": p.have,
            "total": p.total,
            "bytes": p.bytes_verified,
            "size": p.size,
            "rate": round(p.rate),
            "circuits": p.circuits,
            "ordbs": p.ordbs_used,
            "bad_pieces": p.bad_pieces,
            "replaced": p.replaced,
            "first_byte_s": p.first_byte_s,
            "error": p.error,
            "exported": self.exported,
        }


class Downloads:
    """Every download of one peer, by hash_name.

    ``make_download`` builds the fetch for a link (the runtime wires it to circuits);
    ``export`` writes a finished download out of the store; ``seed`` announces what we hold
    (at 25, 50, 75 and 100 %)."""

    def __init__(
        self,
        data_dir: Path,
        make_download: Callable[[ShareLink], Download],
        export: Callable[[ShareLink, Path], Awaitable[Path]],
        seed: Callable[[bytes], None],
    ) -> None:
        self._path = data_dir / DOWNLOADS_FILE
        self._export = export
        self._make = make_download
        self._seed = seed
        self._tasks: dict[bytes, DownloadTask] = {}

    def __contains__(self, hash_name: object) -> bool:
        return hash_name in self._tasks

    def values(self) -> list[DownloadTask]:
        return list(self._tasks.values())

    def get(self, hash_name: bytes) -> DownloadTask | None:
        return self._tasks.get(hash_name)

    def start(self, link: ShareLink, output: Path | None = None) -> DownloadTask:
        """Start a download, or attach to the one already running (a new output path wins)."""
        task = self._tasks.get(link.hash_name)
        if task is not None and not task.task.done():
            if output is not None:
                task.output = output
            return task
        dt = DownloadTask(link, self._make(link), output)
        dt.task = asyncio.get_running_loop().create_task(self._run(dt))
        self._tasks[link.hash_name] = dt
        self._save()
        return dt

    async def _run(self, dt: DownloadTask) -> None:
        try:
            await dt.download.run()
            if dt.output is not None:
                dt.exported = str(await self._export(dt.link, dt.output))
            dt.download.progress.state = "complete"
            self._seed(dt.link.hash_name)
        except asyncio.CancelledError:
            raise
        except PeerError as exc:
            dt.download.progress.state = "failed"
            dt.download.progress.error = str(exc)
        finally:
            dt.download._notify()
            self._save()

    def _save(self) -> None:
        items = [
            {
                "link": d.link.format(),
                "output": str(d.output) if d.output else None,
                "done": d.download.progress.state == "complete",
            }
            for d in self._tasks.values()
        ]
        atomic_write_private(self._path, json.dumps(items).encode())

    async def resume(self, delay: float = 1.0) -> None:
        """Restart the downloads that were not complete when the peer last stopped (or died).

        An unreadable file or entry is logged and skipped: it never stops the peer."""
        try:
            items = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("cannot resume downloads: %s is unreadable (%s)", self._path, exc)
            return
        if not isinstance(items, list):
            log.warning("cannot resume downloads: %s does not hold a list", self._path)
            return
        await asyncio.sleep(delay)  # let links form first
        for n, it in enumerate(items):
            entry = _parse_entry(it)
            if isinstance(entry, str):
                log.warning("skipping entry %d of %s: %s", n, self._path, entry)
            elif not entry[2]:
                self.start(entry[0], entry[1])

    async def close(self) -> None:
        for d in self._tasks.values():
            d.task.cancel()
        for d in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await d.task
