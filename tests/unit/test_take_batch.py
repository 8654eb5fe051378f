"""Batch assembly (``watchkeeper.scheduler.take_batch``): a pure function over a deque."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator

import pytest

from watchkeeper.scheduler import Kind, Pending, take_batch

MakePending = Callable[..., Pending]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def make(loop: asyncio.AbstractEventLoop) -> MakePending:
    def make(request_id: str, *, solo: bool = False, done: bool = False) -> Pending:
        future: asyncio.Future[object] = loop.create_future()
        if done:
            future.set_result(None)
        return Pending(
            model="m",
            request_id=request_id,
            inputs={"id": request_id},
            params={},
            deadline=1e12,
            future=future,
            solo=solo,
        )

    return make


def ids(batch: list[Pending] | deque[Pending]) -> list[str]:
    return [p.request_id for p in batch]


def test_empty_queue_gives_empty_batch() -> None:
    queue: deque[Pending] = deque()
    assert take_batch(queue, 4) == []


def test_takes_up_to_max_size_in_order(make: MakePending) -> None:
    queue = deque(make(str(i)) for i in range(10))
    assert ids(take_batch(queue, 4)) == ["0", "1", "2", "3"]
    assert ids(take_batch(queue, 4)) == ["4", "5", "6", "7"]
    assert ids(take_batch(queue, 4)) == ["8", "9"]
    assert not queue


def test_max_size_one(make: MakePending) -> None:
    queue = deque(make(str(i)) for i in range(3))
    assert ids(take_batch(queue, 1)) == ["0"]
    assert ids(queue) == ["1", "2"]


def test_drops_answered_requests(make: MakePending) -> None:
    queue = deque([make("a", done=True), make("b"), make("c", done=True), make("d"), make("e")])
    assert ids(take_batch(queue, 2)) == ["b", "d"]
    assert ids(queue) == ["e"]


def test_cancelled_future_counts_as_answered(make: MakePending) -> None:
    gone = make("gone")
    gone.future.cancel()
    queue = deque([gone, make("b")])
    assert ids(take_batch(queue, 8)) == ["b"]
    assert not queue


def test_only_answered_requests_empty_the_queue(make: MakePending) -> None:
    queue = deque(make(str(i), done=True) for i in range(5))
    assert take_batch(queue, 2) == []
    assert not queue


def test_answered_requests_do_not_use_batch_slots(make: MakePending) -> None:
    queue = deque([make("a"), make("x", done=True), make("y", done=True), make("b")])
    assert ids(take_batch(queue, 2)) == ["a", "b"]


def test_solo_at_head_goes_alone(make: MakePending) -> None:
    queue = deque([make("solo", solo=True), make("b"), make("c")])
    assert ids(take_batch(queue, 8)) == ["solo"]
    assert ids(queue) == ["b", "c"]


def test_solo_stops_the_batch_before_it(make: MakePending) -> None:
    queue = deque([make("a"), make("b"), make("solo", solo=True), make("c")])
    assert ids(take_batch(queue, 8)) == ["a", "b"]
    assert ids(take_batch(queue, 8)) == ["solo"]
    assert ids(take_batch(queue, 8)) == ["c"]


def test_consecutive_solos_go_one_by_one(make: MakePending) -> None:
    queue = deque([make("s1", solo=True), make("s2", solo=True)])
    assert ids(take_batch(queue, 8)) == ["s1"]
    assert ids(take_batch(queue, 8)) == ["s2"]


def test_answered_solo_is_dropped_not_a_barrier(make: MakePending) -> None:
    queue = deque([make("a"), make("solo", solo=True, done=True), make("b")])
    assert ids(take_batch(queue, 8)) == ["a", "b"]


def test_probe_kind_is_kept(make: MakePending, loop: asyncio.AbstractEventLoop) -> None:
    probe = Pending("m", "probe-1", {}, {}, 1e12, loop.create_future(), kind=Kind.PROBE, solo=True)
    queue = deque([probe, make("a")])
    (taken,) = take_batch(queue, 8)
    assert taken is probe
    assert taken.kind is Kind.PROBE


def test_take_batch_does_not_touch_futures(make: MakePending) -> None:
    queue = deque([make("a"), make("b")])
    batch = take_batch(queue, 8)
    assert all(p.open for p in batch)
    assert all(p.runs == 0 for p in batch)
