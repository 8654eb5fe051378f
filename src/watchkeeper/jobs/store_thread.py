"""The job store's own thread.

Runs in the front process. :class:`StoreThread` runs every store call and result-file write
in one dedicated thread, in the order they were asked for: the event loop never waits on
the disk (SQLite commits with ``synchronous=FULL`` fsync), and a job's changes are written in
the order they happened.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["StoreThread"]

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
