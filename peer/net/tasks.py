"""Background tasks owned by one service: started with :meth:`spawn`, all cancelled by :meth:`close`.

asyncio keeps only weak references to tasks, so a service that starts work it does not await
must hold the tasks itself; this is that holder, shared by the ORDB, the holder service and
the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()

    def spawn(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, timeout: float = 10.0) -> None:
        """Cancel every task still running and wait, at most ``timeout`` seconds, for them to end
        (a task inside a library that ignores cancellation must not hang whoever is closing)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: no "exception was never retrieved" warning
