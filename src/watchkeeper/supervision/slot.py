"""A configured replica position of a model, and its history across restarts.

Runs in the front process: the supervisor keeps one ``Slot`` per configured replica, and the
recycler (``supervision.recycler``) hands a slot from a worn worker to its successor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from watchkeeper.supervision.worker_handle import WorkerHandle

__all__ = ["Slot"]


@dataclass
class Slot:
    """One configured replica position and its history across restarts."""

    index: int
    replica: WorkerHandle | None = None
    starts: int = 0
    crash_streak: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_load_error: str | None = None
    rss_bytes: int | None = None
    restart_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    spawning: bool = False  # a start is under way (waiting for the template, or starting)
    successor: WorkerHandle | None = None  # recycling: the replacement, starting
    retiring: WorkerHandle | None = None  # recycling: the replaced worker, finishing its batch
