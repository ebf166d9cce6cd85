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

from peer.errors import PeerError, UsageError
from peer.net.keystore import atomic_write_private
from peer.roles.fetch import Download, Progress
from storage.encryption import decrypt_metadata
from storage.sharelink import ShareLink

DOWNLOADS_FILE = "downloads.json"

log = logging.getLogger(__name__)


def _parse_entry(item: object) -> tuple[ShareLink, Path | None, bool, bool] | str:
    """One entry of DATA/downloads.json as (link, output, done, paused), or why it is unusable
    (no key in it).  ``paused`` is written only when true."""
    if not isinstance(item, dict):
        return "not an object"
    text, output, done = item.get("link"), item.get("output"), item.get("done", False)
    paused = item.get("paused", False)
    if not isinstance(text, str):
        return "no link"
    if output is not None and not isinstance(output, str):
        return "the output is not a path"
    if not isinstance(done, bool) or not isinstance(paused, bool):
        return "'done' or 'paused' is not true or false"
    try:
        link = ShareLink.parse(text)
    except PeerError as exc:
        return f"bad link ({exc.kind})"
    return link, Path(output) if output else None, done, paused


def waiting_for(p: Progress, running: bool) -> str | None:
    """What a download waits for before its first piece, as a short phrase (None once it has one)."""
    if not running or p.have > 0 or p.state in ("verified", "complete", "failed", "paused"):
        return None
    if p.state == "connecting":
        return "links to other peers"
    if p.state == "starting":
        return "circuits to ORDBs"
    if p.total == 0:
        return "the share's manifest from an ORDB"
    return "the first piece from a holder"


def eta_seconds(p: Progress) -> float | None:
    """Seconds left at the current rate, or None when unknown (no rate, no size yet)."""
    left = p.size - p.bytes_held
    if p.rate <= 0 or p.size <= 0 or left <= 0:
        return None
    return round(left / p.rate, 1)


@dataclass(eq=False)
class DownloadTask:
    link: ShareLink
    download: Download
    output: Path | None
    task: asyncio.Task[None] = field(init=False)
    exported: str | None = None
    paused: bool = False
    _described: tuple[str | None, str | None] | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        """Fetching now (a paused download is not, even while its fetch task winds down)."""
        return not self.paused and not self.task.done()

    def describe(self) -> tuple[str | None, str | None]:
        """The share's name and MIME type: from the link until the manifest is known, then from it
        (decrypted for an encrypted share)."""
        if self._described is not None:
            return self._described
        m = getattr(self.download, "manifest", None)
        if m is None:
            return self.link.name, None
        name, mime = m.name or self.link.name, m.mime or None
        if m.encrypted and self.link.key is not None:
            try:
                meta = decrypt_metadata(self.link.key, m.salt, m.meta)
                name, mime = meta.name or name, meta.mime or None
            except PeerError:
                pass
        self._described = (name, mime)
        return self._described

    def summary(self) -> dict[str, object]:
        p: Progress = self.download.progress
        running = self.running
        name, mime = self.describe()
        return {
            "name": name,
            "type": mime,
            "id": self.link.hash_name.hex(),
            "state": p.state,
            "have": p.have,
            "total": p.total,
            "bytes": p.bytes_held,
            "fetched": p.bytes_verified,
            "size": p.size,
            "rate": round(p.rate),
            "circuits": p.circuits,
            "ordbs": p.ordbs_used,
            "bad_pieces": p.bad_pieces,
            "replaced": p.replaced,
            "replace_reasons": p.replace_reasons,
            "preempted": p.preempted,
            "delivering": p.delivering,
            "first_byte_s": p.first_byte_s,
            "error": p.error,
            "exported": self.exported,
            "paused": self.paused,
            "running": running,
            "eta_s": eta_seconds(p) if running else None,
            "waiting_for": waiting_for(p, running),
        }


class DownloadStateError(UsageError):
    """A control that does not apply to the download in its current state (or no such download)."""

    kind = "download-state"


async def _nothing() -> None:
    return None


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
        if task is not None and (task.running or task.paused):
            if output is not None:
                task.output = output
            return task
        dt = DownloadTask(link, self._make(link), output)
        dt.task = asyncio.get_running_loop().create_task(self._run(dt))
        self._tasks[link.hash_name] = dt
        self._save()
        return dt

    def pause(self, hash_name: bytes) -> DownloadTask:
        """Stop fetching (the verified pieces stay in the store); ``resume`` goes on from them."""
        dt = self._known(hash_name)
        if not dt.running:
            raise DownloadStateError("the download is not running")
        dt.paused = True
        dt.task.cancel()
        self._save()
        return dt

    def resume_one(self, hash_name: bytes) -> DownloadTask:
        """Restart a paused or failed download (a new fetch, asking only for the missing pieces)."""
        dt = self._known(hash_name)
        if dt.running:
            raise DownloadStateError("the download is already running")
        if dt.download.progress.state == "complete":
            raise DownloadStateError("the download is complete")
        del self._tasks[hash_name]
        return self.start(dt.link, dt.output)

    async def cancel(self, hash_name: bytes) -> DownloadTask:
        """Stop a download and forget it (the caller drops its unfinished pieces)."""
        dt = self._known(hash_name)
        if dt.download.progress.state == "complete":
            raise DownloadStateError("the download is complete: remove it instead")
        dt.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await dt.task
        self._forget(hash_name)
        return dt

    def remove(self, hash_name: bytes) -> DownloadTask:
        """Forget a download that is not running (its content stays in the store)."""
        dt = self._known(hash_name)
        if dt.running:
            raise DownloadStateError("the download is running: pause or cancel it first")
        self._forget(hash_name)
        return dt

    def _known(self, hash_name: bytes) -> DownloadTask:
        dt = self._tasks.get(hash_name)
        if dt is None:
            raise DownloadStateError("no such download")
        return dt

    def _forget(self, hash_name: bytes) -> None:
        self._tasks.pop(hash_name, None)
        self._save()

    def _add_paused(self, link: ShareLink, output: Path | None) -> None:
        dt = DownloadTask(link, self._make(link), output, paused=True)
        dt.download.progress.state = "paused"
        dt.task = asyncio.get_running_loop().create_task(_nothing())
        self._tasks[link.hash_name] = dt

    async def _run(self, dt: DownloadTask) -> None:
        try:
            await dt.download.run()
            if dt.output is not None:
                dt.exported = str(await self._export(dt.link, dt.output))
            dt.download.progress.state = "complete"
            self._seed(dt.link.hash_name)
        except asyncio.CancelledError:
            if dt.paused:
                dt.download.progress.state = "paused"
            raise
        except PeerError as exc:
            dt.download.progress.state = "failed"
            dt.download.progress.error = str(exc)
        finally:
            dt.download._notify()
            self._save()

    def _save(self) -> None:
        items: list[dict[str, object]] = [
            {
                "link": d.link.format(),
                "output": str(d.output) if d.output else None,
                "done": d.download.progress.state == "complete",
            }
            for d in self._tasks.values()
        ]
        for item, d in zip(items, self._tasks.values(), strict=True):
            if d.paused:
                item["paused"] = True
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
            elif entry[2] or entry[0].hash_name in self._tasks:
                continue
            elif entry[3]:
                self._add_paused(entry[0], entry[1])
            else:
                self.start(entry[0], entry[1])
        self._save()

    async def close(self) -> None:
        for d in self._tasks.values():
            d.task.cancel()
        for d in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await d.task
