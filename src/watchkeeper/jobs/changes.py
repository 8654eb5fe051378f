"""Change notices for whoever watches a job (the server-sent-event streams).

Runs in the front process, on its event loop. The job runner calls ``changed(job_id)`` after
it wrote a job's change; each watcher waits on its event, then reads the new events from
the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

__all__ = ["Changes"]


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
