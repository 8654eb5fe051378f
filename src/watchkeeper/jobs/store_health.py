"""Whether the job store takes writes: what failed, since when, and what clients are told.

Runs in the front process, on its event loop: bookkeeping only (the checks run in the
store's thread, see ``jobs.upkeep``). A failed write anywhere (a submit, a job's start,
progress or finish) or a failed periodic check marks the store failing with a
:class:`StoreFault`; a check that passes marks it writable again, except after ``gone`` or
``replaced``: the file this process writes to is no longer the store, so only a restart
(after the data dir is restored) clears those.

While the store fails: submits get 503 with Retry-After, queued jobs are not started,
progress reports are not written, and a job that has finished keeps its outcome in memory
until its final state can be written (see ``jobs.attempt``). ``/health`` fails, naming the
store and the fault; the ``jobs.store_failing`` and ``jobs.store_recovered`` log events and
the ``watchkeeper_job_store_*`` metrics tell the same story.
"""

from __future__ import annotations

import enum
import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchkeeper.errors import Unavailable
from watchkeeper.front import metrics
from watchkeeper.jobs.sqlite_store import StoreFileChanged
from watchkeeper.logs import log_event

__all__ = ["STORE_ERRORS", "StoreFailure", "StoreFault", "StoreHealth", "classify"]

log = logging.getLogger("watchkeeper.jobs")

#: What a store call or a result write raises when the disk, not the request, is at fault.
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)


class StoreFault(enum.StrEnum):
    GONE = "gone"  # the store's file (or the results directory) was deleted
    REPLACED = "replaced"  # another file is at the store's path
    BUSY = "busy"  # another process holds the database's write lock
    FULL = "full"  # no space left on the data dir's disk
    READ_ONLY = "read_only"  # the data dir's filesystem takes no writes
    IO_ERROR = "io_error"  # any other error of the disk or of SQLite


#: Faults that only a restart clears: this process's open file is no longer the store.
PERMANENT = frozenset({StoreFault.GONE, StoreFault.REPLACED})

_WHAT = {
    StoreFault.GONE: "is gone from the data dir",
    StoreFault.REPLACED: "was replaced by another file",
    StoreFault.BUSY: "is locked by another process (its writes wait and fail)",
    StoreFault.FULL: "cannot be written: no space left on the data dir's disk",
    StoreFault.READ_ONLY: "cannot be written: the data dir is read-only",
    StoreFault.IO_ERROR: "fails to write",
}
_SUGGESTION = {
    StoreFault.GONE: "Restore the data dir (or accept the loss), then restart the server.",
    StoreFault.REPLACED: "Put the right file back (or accept the loss), then restart the server.",
    StoreFault.BUSY: "End the process holding the job store's write lock (e.g. a sqlite3 shell).",
    StoreFault.FULL: "Free space on the data dir's disk; submits are taken again by themselves.",
    StoreFault.READ_ONLY: "Make the data dir writable; submits are taken again by themselves.",
    StoreFault.IO_ERROR: "Check the data dir's disk (the kernel log); the server retries by itself.",
}
#: Retry-After of a submit refused while the store fails (a restart is slower than a fix).
_RETRY_AFTER_S = {True: 60.0, False: 10.0}


def classify(exc: BaseException) -> StoreFault:
    """The fault behind a failed store call or result write."""
    if isinstance(exc, StoreFileChanged):
        return StoreFault.GONE if exc.gone else StoreFault.REPLACED
    if isinstance(exc, FileNotFoundError):
        return StoreFault.GONE
    if isinstance(exc, OSError):
        return {errno.ENOSPC: StoreFault.FULL, errno.EDQUOT: StoreFault.FULL,
                errno.EROFS: StoreFault.READ_ONLY}.get(exc.errno or 0, StoreFault.IO_ERROR)
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreFault.BUSY
    if "full" in text:
        return StoreFault.FULL
    if "readonly" in text or "read-only" in text:
        return StoreFault.READ_ONLY
    return StoreFault.IO_ERROR


@dataclass(frozen=True)
class StoreFailure:
    """Why the store takes no writes: the fault, in words naming the store, and since when."""

    fault: StoreFault
    reason: str
    since: float  # time.time()
    error: str  # the last error seen, as raised

    @property
    def permanent(self) -> bool:
        return self.fault in PERMANENT


class StoreHealth:
    """The job store's writability, its size and the age of its oldest queued job."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.failure: StoreFailure | None = None
        self.db_bytes = 0
        self.oldest_queued_at: float | None = None
        self._clock = clock
        metrics.set_job_store(True, 0, None)

    @property
    def writable(self) -> bool:
        return self.failure is None

    def failed(self, exc: BaseException) -> StoreFailure:
        """A write or a check failed with ``exc``: the store is failing (said once per fault)."""
        fault = classify(exc)
        current = self.failure
        if current is not None and (current.fault is fault or current.permanent):
            self.failure = StoreFailure(current.fault, current.reason, current.since, repr(exc))
            return self.failure
        reason = f"job store {self.path} {_WHAT[fault]}: {exc}"
        self.failure = StoreFailure(fault, reason, self._clock(), repr(exc))
        metrics.count_job_store_failure(fault.value)
        self._gauges()
        log_event(log, "jobs.store_failing", logging.ERROR, fault=fault.value, reason=reason,
                  suggestion=_SUGGESTION[fault])
        return self.failure

    def passed(self) -> None:
        """A check passed: writable again (unless the fault needs a restart)."""
        current = self.failure
        if current is None or current.permanent:
            return
        self.failure = None
        self._gauges()
        log_event(log, "jobs.store_recovered", fault=current.fault.value,
                  failed_for_s=round(self._clock() - current.since, 1))

    def measured(self, db_bytes: int, oldest_queued_at: float | None) -> None:
        self.db_bytes, self.oldest_queued_at = db_bytes, oldest_queued_at
        self._gauges()

    def refusal(self) -> Unavailable:
        """What a submit gets while the store fails: 503 with Retry-After."""
        failure = self.failure
        assert failure is not None
        return Unavailable(
            f"{failure.reason}; new jobs are refused until it takes writes again",
            suggestion=_SUGGESTION[failure.fault],
            retry_after_s=_RETRY_AFTER_S[failure.permanent],
            details={"fault": failure.fault.value, "since": failure.since},
        )

    def view(self) -> dict[str, Any]:
        """The job store's part of ``/health``."""
        failure = self.failure
        oldest = self.oldest_queued_at
        return {
            "writable": failure is None,
            "fault": None if failure is None else failure.fault.value,
            "reason": None if failure is None else failure.reason,
            "since": None if failure is None else failure.since,
            "suggestion": None if failure is None else _SUGGESTION[failure.fault],
            "path": str(self.path),
            "db_bytes": self.db_bytes,
            "oldest_queued_age_s": None if oldest is None else round(max(0.0, self._clock() - oldest), 1),
        }

    def _gauges(self) -> None:
        oldest = self.oldest_queued_at
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        metrics.set_job_store(self.failure is None, self.db_bytes, age)
