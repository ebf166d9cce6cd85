"""Background WAL checkpoints for the chunk store (DESIGN §9; docs/storage.md "Crash safety", "Performance").

In WAL mode SQLite copies committed pages from the ``-wal`` file into the database at a
*checkpoint*.  Left to itself, the writer connection checkpoints inside a ``COMMIT`` once the
WAL passes ``wal_autocheckpoint`` pages, so the writer stalls while both files are copied and
fsynced.  :class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its
own (its own aiosqlite thread) after bulk writes instead, overlapping that copy with the next
batch's hashing and writing.

Nothing about durability changes: a checkpoint only copies frames of transactions that are
already committed, SQLite serialises it against other checkpoints, a PASSIVE one never blocks
the writer or readers, and a kill in the middle of one is recovered from the WAL on the next
open like any other.  A failed checkpoint (disk full, file-size limit) is ignored here as it is
by SQLite's own automatic checkpoint: the frames stay in the WAL and a later one copies them.

The WAL can only start again from its beginning when every frame has been copied before a
write transaction begins, which the overlap never leaves; :meth:`Checkpointer.room` therefore
lets the writer catch up (wait for a complete checkpoint) once every ``limit_bytes``, which
bounds the WAL at about ``limit_bytes`` plus one batch.  The writer's own automatic checkpoint
stays on, at a higher threshold, as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import aiosqlite

KICK_BYTES = 4 << 20  # start a background checkpoint after this many bytes written
LIMIT_BYTES = 32 << 20  # catch up (copy the whole WAL before the next write) after this many


class Checkpointer:
    """Passive checkpoints on a dedicated connection, at most one in flight."""

    def __init__(
        self, conn: aiosqlite.Connection, *, kick_bytes: int = KICK_BYTES, limit_bytes: int = LIMIT_BYTES
    ) -> None:
        self._conn = conn
        self._kick = kick_bytes
        self._limit = limit_bytes
        self._since_kick = 0
        self._since_catch_up = 0
        self._task: asyncio.Task[None] | None = None

    def wrote(self, nbytes: int) -> None:
        """Note ``nbytes`` committed; start a background checkpoint if enough piled up and none runs."""
        self._since_kick += nbytes
        self._since_catch_up += nbytes
        if self._since_kick >= self._kick and (self._task is None or self._task.done()):
            self._since_kick = 0
            self._task = asyncio.get_running_loop().create_task(self._checkpoint())

    async def room(self) -> None:
        """Call before a write transaction: past ``limit_bytes``, copy the whole WAL first."""
        if self._since_catch_up < self._limit:
            return
        self._since_catch_up = 0
        self._since_kick = 0
        await self.drain()
        await self._checkpoint()

    async def drain(self) -> None:
        """Wait for the checkpoint in flight, if any."""
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._conn.close()

    async def _checkpoint(self) -> None:
        # Errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY) leave the frames in the WAL, where they
        # are safe; the next checkpoint, or the one at close, copies them.
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
