"""Progress reports and cancellation inside a real worker loop (a socketpair, no processes)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from watchkeeper.protocol.messages import BatchDone, Cancel, Item, Progress, RunBatch, Stop, WorkerSpec
from watchkeeper.protocol.wire import BlockingChannel
from watchkeeper.worker.loop import Worker
from watchkeeper.worker.progress import ProgressReporter, takes_progress

CHAOS = "watchkeeper.apps.chaos:Chaos"


@pytest.fixture
def pair() -> Iterator[tuple[BlockingChannel, BlockingChannel]]:
    ours, theirs = socket.socketpair()
    yield BlockingChannel(ours), BlockingChannel(theirs)
    ours.close()
    theirs.close()


@pytest.fixture
def worker(pair: tuple[BlockingChannel, BlockingChannel]) -> Worker:
    spec = WorkerSpec("chaos", CHAOS, "cpu", 0, 1.0)
    worker = Worker(spec, pair[0])
    worker.load()
    return worker


def received(channel: BlockingChannel) -> list[object]:
    messages = []
    while channel.poll(0):
        messages.append(channel.recv())
    return messages


def work(batch_id: int, steps: int = 4, seconds: float = 0.4) -> RunBatch:
    return RunBatch(batch_id, (Item("job", {"action": "work", "seconds": seconds, "steps": steps}, {}),))


def test_a_lone_item_reports_progress_to_the_front(worker: Worker, pair: tuple[BlockingChannel, ...]) -> None:
    done = worker.run_batch(work(5))
    assert done.results[0].error is None
    reports = [m for m in received(pair[1]) if isinstance(m, Progress)]
    assert [r.batch_id for r in reports] == [5] * 4
    assert [r.fraction for r in reports] == [0.25, 0.5, 0.75, 1.0]
    assert reports[-1].message == "step 4/4"


def test_items_of_a_larger_batch_report_nothing(worker: Worker, pair: tuple[BlockingChannel, ...]) -> None:
    batch = RunBatch(6, work(6, seconds=0.04).items * 2)
    assert all(r.error is None for r in worker.run_batch(batch).results)
    assert received(pair[1]) == []


def test_a_cancel_stops_the_model_at_its_next_report(
        worker: Worker, pair: tuple[BlockingChannel, ...]) -> None:
    pair[1].send(Cancel(8))
    done = worker.run_batch(work(8, steps=100, seconds=10))
    (result,) = done.results
    assert result.error is not None and result.error.type == "cancelled"
    assert done.infer_ms < 1000  # stopped after the first of 100 steps of 0.1 s


def test_other_messages_during_a_batch_are_kept_and_a_stale_cancel_dropped(
        worker: Worker, pair: tuple[BlockingChannel, ...]) -> None:
    pair[1].send(Cancel(1))  # a batch that finished long ago
    pair[1].send(work(10, steps=1, seconds=0.01))
    pair[1].send(Stop())
    done = worker.run_batch(work(9))
    assert done.results[0].error is None  # the stale cancel did not stop it
    assert worker.serve() == 0  # ran batch 10 from the deferred messages, then stopped
    answers = [m for m in received(pair[1]) if isinstance(m, BatchDone)]
    assert [a.batch_id for a in answers] == [10]


def test_reports_are_throttled_and_clamped(pair: tuple[BlockingChannel, ...]) -> None:
    reporter = ProgressReporter(pair[0], 3, [])
    for i in range(100):
        reporter(i / 100, "x" * 500)
    reporter(float("nan"))
    reporter("not a number")  # type: ignore[arg-type]
    reporter(7.0, "done")
    reports = received(pair[1])
    assert 1 <= len(reports) <= 3  # the first, maybe one more, and the final 1.0
    assert reports[-1] == Progress(3, 1.0, "done")
    assert all(len(r.message) <= 200 for r in reports)


def test_takes_progress_reads_the_signature() -> None:
    class With:
        def predict(self, inputs: object, params: object, progress: object = None) -> None: ...

    class Without:
        def predict(self, inputs: object, params: object) -> None: ...

    assert takes_progress(With().predict) and not takes_progress(Without().predict)
