"""The job runner's two helpers: the store's own thread, and change notices for watchers.

Runs in the front process. :class:`StoreThread` runs every store call and result-file write
in one dedicated thread, in the order they were asked for: the event loop never waits on
the disk (SQLite commits with ``synchronous=FULL`` fsync), and a job's changes are written in
the order they happened. :class:`Changes` wakes whoever watches a job (the SSE streams)
when it changed; watchers then read the new events from the store.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Changes", "StoreThread"]

T = TypeVar("T")


class StoreThread:
    """One thread for blocking calls, in submission order."""

    def __init__(self, name: str = "wk-jobs") -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args, **kwargs)`` now (the order is fixed at this call); await the result."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Finish what is queued, then end the thread."""
        self._executor.shutdown(wait=True)


class Changes:
    """Per-job wake-ups: ``waiter(job_id)`` before reading, ``changed(job_id)`` after writing."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def waiter(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def forget(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    def changed(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def wake_all(self) -> None:
        """Wake every watcher (the server is shutting down: streams end)."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
