"""One reader per watched job (``watchkeeper.jobs.changes``): every watcher gets every event
once, in order, whenever it joins, for one store read per change; the stream caps.

Runs on a real event loop with an in-memory store of events (the store is not under test).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from watchkeeper.errors import Unavailable
from watchkeeper.jobs import changes as changes_module
from watchkeeper.jobs.changes import Changes, JobReader, StreamCaps, Watcher
from watchkeeper.jobs.job import Job, JobEvent, JobState

JOB = "job-1"


class Store:
    """A job's events in memory, counting the reads."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.state = JobState.RUNNING
        self.gone = False
        self.reads = 0

    def add(self, type_: str = "progress", **data: Any) -> None:
        self.events.append(JobEvent(JOB, len(self.events) + 1, type_, 0.0, data))

    def finish(self) -> None:
        self.state = JobState.SUCCEEDED
        self.add("state", state="succeeded")

    async def read_events(self, job_id: str, after: int) -> list[JobEvent]:
        self.reads += 1
        await asyncio.sleep(0)  # a store read yields, as the store thread does
        return [e for e in self.events if e.seq > after]

    async def find(self, job_id: str) -> Job | None:
        if self.gone:
            return None
        return Job(JOB, "m", self.state, {}, True, 0.0, 0.0, 1, 3, "r", "h")

    @property
    def reader(self) -> JobReader:
        return JobReader(self.read_events, self.find)


async def collect(watcher: Watcher, out: list[int]) -> None:
    while (events := await watcher.next(5)) is not None:
        out.extend(e.seq for e in events)
        if any(e.type == "state" for e in events):
            break
    watcher.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_many_watchers_get_every_event_for_one_read_per_change() -> None:
    async def main() -> tuple[list[list[int]], int, int]:
        store, changes = Store(), Changes()
        store.add()
        outs: list[list[int]] = [[] for _ in range(50)]
        tasks = [asyncio.create_task(collect(changes.watch(JOB, 0, store.reader, StreamCaps(100, 100)),
                                             out)) for out in outs]
        await asyncio.sleep(0.01)
        reads_before = store.reads
        for _ in range(10):
            store.add()
            changes.changed(JOB)
            await asyncio.sleep(0.01)
        store.finish()
        changes.changed(JOB)
        await asyncio.gather(*tasks)
        return outs, store.reads - reads_before, changes.streams

    outs, reads, left_open = run(main())
    assert all(out == list(range(1, 13)) for out in outs)
    assert reads <= 11  # one per change (50 watchers)
    assert left_open == 0


def test_a_late_watcher_resuming_mid_stream_misses_nothing_and_gets_no_duplicates() -> None:
    async def main() -> tuple[list[int], list[int]]:
        store, changes = Store(), Changes()
        for _ in range(5):
            store.add()
        early: list[int] = []
        late: list[int] = []
        first = asyncio.create_task(collect(changes.watch(JOB, 0, store.reader, StreamCaps()), early))
        await asyncio.sleep(0.01)
        store.add()
        changes.changed(JOB)
        second = asyncio.create_task(collect(changes.watch(JOB, 3, store.reader, StreamCaps()), late))
        store.add()
        changes.changed(JOB)
        await asyncio.sleep(0.01)
        store.finish()
        changes.changed(JOB)
        await asyncio.gather(first, second)
        return early, late

    early, late = run(main())
    assert early == list(range(1, 9))
    assert late == list(range(4, 9))


def test_a_watcher_resuming_after_the_final_event_ends_at_once() -> None:
    async def main() -> list[int]:
        store, changes = Store(), Changes()
        store.add()
        store.finish()
        out: list[int] = []
        await collect(changes.watch(JOB, 2, store.reader, StreamCaps()), out)
        return out

    assert run(main()) == []


def test_streams_end_when_the_server_stops_and_new_ones_are_refused() -> None:
    async def main() -> list[int]:
        store, changes = Store(), Changes()
        store.add()
        kept: list[int] = []
        task = asyncio.create_task(collect(changes.watch(JOB, 0, store.reader, StreamCaps()), kept))
        await asyncio.sleep(0.01)
        changes.wake_all()
        await task
        with pytest.raises(Unavailable):
            changes.watch(JOB, 0, store.reader, StreamCaps())
        return kept

    assert run(main()) == [1]


def test_streams_end_when_their_job_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "IDLE_CHECK_S", 0.02)

    async def main() -> list[int]:
        store, changes = Store(), Changes()
        store.add()
        out: list[int] = []
        task = asyncio.create_task(collect(changes.watch(JOB, 0, store.reader, StreamCaps()), out))
        await asyncio.sleep(0.05)
        store.gone = True  # expired: deleted from the store, no change notice
        await task
        return out

    assert run(main()) == [1]


def test_the_caps_refuse_with_retry_after_and_a_closed_stream_frees_its_place() -> None:
    async def main() -> None:
        store, changes = Store(), Changes()
        caps = StreamCaps(per_job=2, total=3)
        a, b = changes.watch(JOB, 0, store.reader, caps), changes.watch(JOB, 0, store.reader, caps)
        with pytest.raises(Unavailable) as per_job:
            changes.watch(JOB, 0, store.reader, caps)
        assert "jobs.max_streams_per_job" in per_job.value.message
        assert per_job.value.retry_after_s
        other = changes.watch("job-2", 0, store.reader, caps)
        with pytest.raises(Unavailable, match=r"jobs\.max_streams\)"):
            changes.watch("job-3", 0, store.reader, caps)
        a.close()
        a.close()  # idempotent
        assert changes.streams == 2
        changes.watch(JOB, 0, store.reader, caps).close()
        for watcher in (b, other):
            watcher.close()
        assert changes.streams == 0

    run(main())


def test_an_idle_watcher_gets_an_empty_batch_for_its_keep_alive() -> None:
    async def main() -> list[JobEvent] | None:
        store, changes = Store(), Changes()
        watcher = changes.watch(JOB, 0, store.reader, StreamCaps())
        await asyncio.sleep(0.01)
        result = await watcher.next(0.05)
        watcher.close()
        return result

    assert run(main()) == []


def test_a_watcher_whose_first_read_is_under_way_counts_against_the_cap() -> None:
    async def main() -> None:
        store, changes = Store(), Changes()
        caps = StreamCaps(per_job=2, total=10)
        first = changes.watch(JOB, 0, store.reader, caps)
        await asyncio.sleep(0)  # the feed starts its read for the first watcher, and waits
        second = changes.watch(JOB, 0, store.reader, caps)
        with pytest.raises(Unavailable):
            changes.watch(JOB, 0, store.reader, caps)
        first.close()
        second.close()

    run(main())
