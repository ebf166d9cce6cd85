"""Exports asked for from the web UI: into the downloads folder only, under a chosen name, never overwriting.

A page may be driven by whoever can make the user click, so an export from the UI cannot
choose its folder: the name is one plain file name (no folder part, no ``..``, nothing that
:func:`storage.names.sanitize_name` would change), the file is written inside the peer's
downloads folder, and an existing file of that name is never replaced (409).  The share is
first written to a private temporary folder next to the target, then hard-linked into place,
which fails atomically when the name is taken (no check-then-write race).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
from pathlib import Path

from storage.chunkstore import ChunkStore
from storage.names import sanitize_name
from webui.server import RequestRefused

_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK)


def plain_name(name: object) -> str:
    """``name`` if it is a plain, harmless file name; otherwise a 400 saying why."""
    if not isinstance(name, str) or not name:
        raise RequestRefused(400, "give a file name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise RequestRefused(400, "the name must be a plain file name: no folders and no '..'")
    if sanitize_name(name, "") != name:
        raise RequestRefused(400, "the name has characters a file name cannot safely have: choose another")
    return name


def _taken(name: str) -> RequestRefused:
    return RequestRefused(
        409, f"a file named {name!r} already exists in the downloads folder: choose another name"
    )


def _place(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)  # atomic, and fails if the name exists
    except FileExistsError:
        raise _taken(target.name) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)  # the name is ours now; fill it
        os.replace(tmp, target)


async def export_named(
    store: ChunkStore, hash_name: bytes, key: bytes | None, folder: Path, name: object
) -> Path:
    """Write the share to ``folder/name`` (a new file); 409 if that name exists, 400 for a bad name."""
    plain = plain_name(name)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / plain
    if target.resolve().parent != folder.resolve():  # belt and braces: a name never leaves the folder
        raise RequestRefused(400, "the name must stay inside the downloads folder")
    if os.path.lexists(target):
        raise _taken(plain)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".peersm-export-"))
    try:
        written = await store.export(hash_name, work / plain, key)
        await asyncio.to_thread(_place, written, target)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    return target
