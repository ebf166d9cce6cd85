"""Exporting a share to a file, atomically (DESIGN §9; docs/storage.md "Export").

The plaintext is written to a temporary file in the destination directory, every
piece re-verified against the Merkle root (and, for an encrypted share, decrypted
and authenticated) on the way; then the file is fsynced, renamed into place and
the directory fsynced.  A crash leaves either no file or the whole file (plus, at
worst, a ``.peersm-*.part`` temporary).  When the destination is a directory the
file name comes from the share, sanitised, and never replaces an existing file.
The store is reached only through :class:`storage.ports.ExportSource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from pathlib import Path

from peer.errors import UsageError
from storage.encryption import PieceCipher, decrypt_metadata
from storage.errors import CorruptPiece, DiskFullError, PieceMissing
from storage.names import sanitize_name
from storage.ports import ExportSource

_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _write(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _decrypt_all(cipher: PieceCipher | None, pieces: list[tuple[int, bytes]]) -> list[bytes]:
    return [cipher.decrypt(i, d) if cipher else d for i, d in pieces]


def _place(tmp: Path, dest: Path, no_clobber: bool) -> Path:
    """Rename ``tmp`` to ``dest`` (or ``dest (n)`` when ``no_clobber`` and it exists); return the final path."""
    if not no_clobber:
        os.replace(tmp, dest)
        return dest
    stem, suffix = dest.stem, dest.suffix
    for n in range(10_000):
        final = dest if n == 0 else dest.with_name(f"{stem} ({n}){suffix}")
        try:
            os.link(tmp, final)  # atomic, fails if the name exists
        except FileExistsError:
            continue
        except OSError as exc:  # file systems without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if final.exists():
                continue
            os.replace(tmp, final)
            return final
        os.unlink(tmp)
        return final
    raise UsageError("no free file name in the destination directory")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def export_share(store: ExportSource, hash_name: bytes, dest: Path, key: bytes | None) -> Path:
    """Write share ``hash_name`` to ``dest`` (a directory, or a file path to create or replace)."""
    share = await store.export_share(hash_name, key)
    m = share.manifest
    if m.live:
        raise UsageError("a live stream cannot be exported")
    cipher = share.cipher
    if m.encrypted:
        assert share.key is not None
        name = decrypt_metadata(share.key, m.salt, m.meta).name
    else:
        name = m.name
    info = await store.get_download_state(hash_name)
    if info.have < info.total:
        raise PieceMissing(f"{info.total - info.have} of {info.total} pieces are still missing")
    into_dir = dest.is_dir()
    target = dest / sanitize_name(name, hash_name.hex()[:16]) if into_dir else dest
    if not target.parent.is_dir():
        raise UsageError("the destination directory does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".peersm-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        per_batch = max(1, store.batch_bytes // m.piece_size)
        for first in range(0, m.piece_count, per_batch):
            last = min(m.piece_count, first + per_batch) - 1
            got = await store.verified_pieces(hash_name, first, last)
            if len(got) != last - first + 1:
                raise CorruptPiece("a stored piece was corrupt and has been dropped; fetch it again")
            plain = await asyncio.to_thread(_decrypt_all, cipher, sorted(got.items()))
            await asyncio.to_thread(_write, fd, plain)
        await asyncio.to_thread(os.fsync, fd)
        os.close(fd)
        fd = -1
        final = await asyncio.to_thread(_place, tmp, target, into_dir)
        await asyncio.to_thread(_fsync_dir, target.parent)
        return final
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise DiskFullError("no space left to export the file") from exc
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
