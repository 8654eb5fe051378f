"""A job's changes, read once and handed to everyone who watches it (the event streams).

Runs in the front process, on its event loop. The job runner calls ``changed(job_id)`` after
it wrote a change of the job, and ``wake_all()`` when the server shuts down. Each watched job
has one :class:`_Feed`: a task that, at each change, reads the job's new events from the store
once and hands them to every :class:`Watcher` of the job (one per event stream), so a change
costs one store read however many clients follow the job (it cost one or two per watcher).

A watcher joins with its resume point (``Last-Event-ID``): the feed's next read starts at the
oldest resume point of those joining (or at its own cursor, if older), and each watcher drops
the events it already has (by their ``seq``), so a watcher never misses an event and never
sees one twice, whenever it joins. The feed ends after it has read the job's final state (each
stream ends after sending it), when its last watcher leaves, when the job is gone (expired),
or at shutdown.

Caps: ``StreamCaps.per_job`` watchers of one job and ``StreamCaps.total`` in all; past them
:meth:`Changes.watch` raises Unavailable (503 + Retry-After) naming the configuration key.

State: the feeds by job id; per feed its watchers (those joining, and those whose first read
is under way, apart: they get nothing before their own backlog), its cursor (the last ``seq``
it read) and a wake-up event; per watcher the events waiting to be sent. Timeouts: a feed
with nothing to do looks at its job every ``IDLE_CHECK_S`` (it may have expired); a watcher
waits at most its caller's keep-alive interval before it returns empty-handed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from watchkeeper.errors import Unavailable
from watchkeeper.front import metrics
from watchkeeper.jobs.job import TERMINAL_STATES, Job, JobEvent
from watchkeeper.logs import log_event

__all__ = ["IDLE_CHECK_S", "STREAMS_RETRY_AFTER_S", "Changes", "JobReader", "StreamCaps", "Watcher"]

log = logging.getLogger("watchkeeper.jobs")

#: How often a feed with nothing to do checks that its job still exists.
IDLE_CHECK_S = 15.0
#: Retry-After of an event stream refused by a cap.
STREAMS_RETRY_AFTER_S = 5.0
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


@dataclass(frozen=True, slots=True)
class JobReader:
    """The store reads a feed needs: a job's events after a seq, and the job itself."""

    events: Callable[[str, int], Awaitable[list[JobEvent]]]
    find: Callable[[str], Awaitable[Job | None]]


@dataclass(frozen=True, slots=True)
class StreamCaps:
    """``jobs.max_streams_per_job`` and ``jobs.max_streams``."""

    per_job: int = 100
    total: int = 500


def is_final(event: JobEvent) -> bool:
    return event.type == "state" and event.data.get("state") in _TERMINAL


class Watcher:
    """One event stream's place in a feed: the events it has yet to send."""

    def __init__(self, feed: _Feed, after: int) -> None:
        self.after = after  # the resume point it joined with
        self._feed = feed
        self._last = after  # the highest seq handed to it
        self._pending: list[JobEvent] = []
        self._ready = asyncio.Event()
        self._ended = False
        self._closed = False

    def deliver(self, events: list[JobEvent]) -> None:
        fresh = [event for event in events if event.seq > self._last]
        if fresh:
            self._last = fresh[-1].seq
            self._pending.extend(fresh)
            self._ready.set()

    def end(self) -> None:
        """No more events will come (after those pending)."""
        self._ended = True
        self._ready.set()

    async def next(self, timeout_s: float) -> list[JobEvent] | None:
        """The events to send now; [] if none came within ``timeout_s``; None at the end."""
        if not self._pending and not self._ended:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return []
        self._ready.clear()
        events, self._pending = self._pending, []
        if events:
            return events
        return None if self._ended else []

    def close(self) -> None:
        """The stream ended (or its client left): leave the feed (idempotent)."""
        if not self._closed:
            self._closed = True
            self._feed.leave(self)


class _Feed:
    """The one reader of one job's events, for all its watchers."""

    def __init__(self, changes: Changes, job_id: str, reader: JobReader) -> None:
        self.changes = changes
        self.job_id = job_id
        self.reader = reader
        self.watchers: set[Watcher] = set()  # those that have had their backlog
        self.joining: list[Watcher] = []  # those waiting for it
        self.reading: list[Watcher] = []  # those whose backlog is being read now
        self.cursor: int | None = None
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    @property
    def size(self) -> int:
        return len(self.watchers) + len(self.joining) + len(self.reading)

    def join(self, after: int) -> Watcher:
        watcher = Watcher(self, after)
        self.joining.append(watcher)
        self.wake.set()
        return watcher

    def leave(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        for pending in (self.joining, self.reading):
            if watcher in pending:
                pending.remove(watcher)
        self.changes.left()
        if not self.size:
            self.wake.set()  # let the task see it has no one left

    async def _run(self) -> None:
        try:
            while self.size and not self.changes.stopping:
                if not self.joining and not self.wake.is_set():
                    try:
                        await asyncio.wait_for(self.wake.wait(), IDLE_CHECK_S)
                    except TimeoutError:
                        if await self._job_gone():
                            break
                        continue
                self.wake.clear()
                if self.size and not self.changes.stopping and await self._read() \
                        and not self.joining:  # (those who joined during the read: read for them)
                    break
        except Exception as exc:  # the store failed: end the streams (clients resume)
            log_event(log, "job.stream_failed", logging.WARNING, job_id=self.job_id, error=repr(exc))
        finally:
            self._end_all()

    async def _read(self) -> bool:
        """Read what is new and hand it out; True when the feed is done (a final state)."""
        joiners = self.reading = self.joining
        self.joining = []
        points = [w.after for w in joiners] + ([self.cursor] if self.cursor is not None else [])
        start = min(points, default=0)
        try:
            events = await self.reader.events(self.job_id, start)
        finally:
            self.watchers.update(self.reading)  # (those that left meanwhile are gone from it)
            self.reading = []
        self.cursor = max(self.cursor or 0, start, events[-1].seq if events else 0)
        for watcher in self.watchers:
            watcher.deliver(events)
        if any(is_final(event) for event in events):
            return True
        if joiners and not events:  # nothing new for them: a final job, or one gone?
            return await self._job_gone(final_too=True)
        return False

    async def _job_gone(self, final_too: bool = False) -> bool:
        """The job expired (or, with ``final_too``, is final): hand out its last events."""
        job = await self.reader.find(self.job_id)
        if job is not None and not (final_too and job.terminal):
            return False
        if job is not None and self.cursor is not None:  # it may have ended since our read
            events = await self.reader.events(self.job_id, self.cursor)
            for watcher in self.watchers:
                watcher.deliver(events)
        return True

    def _end_all(self) -> None:
        for watcher in (*self.watchers, *self.joining, *self.reading):
            watcher.end()
        self.changes.feed_ended(self)


class Changes:
    """Per-job change notices, and the feeds that read each watched job's events once."""

    def __init__(self) -> None:
        self._feeds: dict[str, _Feed] = {}
        self._open = 0
        self.stopping = False

    @property
    def streams(self) -> int:
        """Watchers open now (each an event stream)."""
        return self._open

    def watch(self, job_id: str, after: int, reader: JobReader, caps: StreamCaps) -> Watcher:
        """A new watcher of ``job_id`` from ``after`` (its events arrive through ``next``).

        Raises:
            Unavailable: past ``caps`` (or shutting down): 503 + Retry-After.
        """
        if self.stopping:
            raise Unavailable("the server is shutting down", retry_after_s=STREAMS_RETRY_AFTER_S)
        feed = self._feeds.get(job_id)
        if feed is not None and feed.size >= caps.per_job:
            self._refuse("per_job", f"job '{job_id}' has {feed.size} event streams open, "
                         f"its limit (jobs.max_streams_per_job)")
        if self._open >= caps.total:
            self._refuse("total", f"{self._open} event streams are open, the limit "
                         "(jobs.max_streams)")
        if feed is None:
            feed = self._feeds[job_id] = _Feed(self, job_id, reader)
        self._open += 1
        metrics.set_event_streams(self._open)
        return feed.join(after)

    def _refuse(self, cap: str, message: str) -> None:
        metrics.count_stream_refused(cap)
        raise Unavailable(message, retry_after_s=STREAMS_RETRY_AFTER_S,
                          suggestion="Retry after the number of seconds in Retry-After, or poll "
                                     "GET /v1/jobs/ID instead.")

    def left(self) -> None:
        self._open -= 1
        metrics.set_event_streams(self._open)

    def feed_ended(self, feed: _Feed) -> None:
        if self._feeds.get(feed.job_id) is feed:
            del self._feeds[feed.job_id]

    def changed(self, job_id: str) -> None:
        """The runner wrote a change of ``job_id``: its feed (if watched) reads it."""
        feed = self._feeds.get(job_id)
        if feed is not None:
            feed.wake.set()

    def wake_all(self) -> None:
        """The server is shutting down: every stream ends, and new ones are refused."""
        self.stopping = True
        for feed in self._feeds.values():
            feed.wake.set()
