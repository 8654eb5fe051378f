"""Batch assembly (``watchkeeper.scheduling.scheduler.take_batch``): a pure function over a deque."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import pytest

from watchkeeper.scheduling.batching import take_batch
from watchkeeper.scheduling.pending import Kind, Pending

MakePending = Callable[..., Pending]


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


# --- with an admit callable (memory admission) -------------------------------------------


class Admitter:
    """An ``admit`` callable over a fixed free amount: each request needs its ``need`` bytes.

    Records what it was asked, so a test can see the bytes already in the batch.
    """

    def __init__(self, free: int, needs: dict[str, int]) -> None:
        self.free = free
        self.needs = needs
        self.calls: list[tuple[str, int]] = []

    def __call__(self, pending: Pending, used: int) -> int | None:
        self.calls.append((pending.request_id, used))
        need = self.needs.get(pending.request_id, 0)
        return need if used + need <= self.free else None


def test_admit_none_stays_queued_and_later_fitting_items_are_taken(make: MakePending) -> None:
    queue = deque([make("big1"), make("a"), make("big2"), make("b"), make("c")])
    admit = Admitter(100, {"big1": 500, "big2": 500, "a": 10, "b": 10, "c": 10})
    assert ids(take_batch(queue, 8, admit)) == ["a", "b", "c"]
    assert ids(queue) == ["big1", "big2"]


def test_refused_items_keep_their_place_before_the_rest(make: MakePending) -> None:
    queue = deque([make("big"), make("a"), make("b"), make("c")])
    admit = Admitter(100, {"big": 500})
    assert ids(take_batch(queue, 2, admit)) == ["a", "b"]
    assert ids(queue) == ["big", "c"]


def test_nothing_fits_leaves_the_queue_as_it_was(make: MakePending) -> None:
    queue = deque([make("x"), make("y"), make("z")])
    assert take_batch(queue, 8, Admitter(0, {"x": 1, "y": 1, "z": 1})) == []
    assert ids(queue) == ["x", "y", "z"]


def test_admit_is_told_the_bytes_already_in_the_batch(make: MakePending) -> None:
    queue = deque([make("a"), make("big"), make("b"), make("c")])
    admit = Admitter(100, {"a": 30, "big": 500, "b": 20, "c": 40})
    assert ids(take_batch(queue, 8, admit)) == ["a", "b", "c"]
    assert admit.calls == [("a", 0), ("big", 30), ("b", 30), ("c", 50)]


def test_fitting_is_counted_against_the_batch_so_far(make: MakePending) -> None:
    queue = deque([make("a"), make("b"), make("c")])
    admit = Admitter(100, {"a": 60, "b": 60, "c": 40})
    assert ids(take_batch(queue, 8, admit)) == ["a", "c"]
    assert ids(queue) == ["b"]


def test_zero_need_always_fits(make: MakePending) -> None:
    queue = deque([make("a"), make("b")])
    assert ids(take_batch(queue, 8, Admitter(0, {}))) == ["a", "b"]


def test_admit_is_not_asked_about_done_futures(make: MakePending) -> None:
    queue = deque([make("gone", done=True), make("a")])
    admit = Admitter(100, {"gone": 10**9})
    assert ids(take_batch(queue, 8, admit)) == ["a"]
    assert admit.calls == [("a", 0)]
    assert not queue


def test_done_future_is_dropped_even_when_admit_would_refuse(make: MakePending) -> None:
    queue = deque([make("gone", done=True), make("big"), make("also gone", done=True)])
    assert take_batch(queue, 8, Admitter(0, {"gone": 1, "big": 1, "also gone": 1})) == []
    assert ids(queue) == ["big"]


def test_a_request_failed_by_admit_is_dropped(make: MakePending) -> None:
    """Admission fails a request that can never fit: it is answered, so not kept."""

    def admit(pending: Pending, used: int) -> int | None:
        if pending.request_id == "hopeless":
            pending.future.set_result(None)
            return None
        return 0

    queue = deque([make("hopeless"), make("a")])
    assert ids(take_batch(queue, 8, admit)) == ["a"]
    assert not queue


def test_batch_cap_limits_the_batch_it_joins(make: MakePending) -> None:
    capped = make("capped")
    capped.memory.batch_cap = 2
    queue = deque([make("a"), capped, make("b"), make("c")])
    assert ids(take_batch(queue, 8)) == ["a", "capped"]
    assert ids(queue) == ["b", "c"]


def test_batch_cap_at_the_head_limits_the_batch(make: MakePending) -> None:
    capped = make("capped")
    capped.memory.batch_cap = 2
    queue = deque([capped, make("a"), make("b")])
    assert ids(take_batch(queue, 8, Admitter(100, {}))) == ["capped", "a"]
    assert ids(queue) == ["b"]


def test_item_whose_cap_is_reached_stays_queued(make: MakePending) -> None:
    capped = make("capped")
    capped.memory.batch_cap = 2
    queue = deque([make("a"), make("b"), capped, make("c")])
    assert ids(take_batch(queue, 8)) == ["a", "b"]
    assert ids(queue) == ["capped", "c"]
    assert ids(take_batch(queue, 8)) == ["capped", "c"]


def test_batch_cap_one_goes_alone(make: MakePending) -> None:
    capped = make("capped")
    capped.memory.batch_cap = 1
    queue = deque([make("a"), capped, make("b")])
    assert ids(take_batch(queue, 8)) == ["a"]
    assert ids(take_batch(queue, 8)) == ["capped"]
    assert ids(take_batch(queue, 8)) == ["b"]


def test_batch_cap_never_raises_max_size(make: MakePending) -> None:
    capped = make("capped")
    capped.memory.batch_cap = 4
    queue = deque([capped, make("a"), make("b")])
    assert ids(take_batch(queue, 2)) == ["capped", "a"]


def test_solo_refused_by_admit_stays_queued(make: MakePending) -> None:
    queue = deque([make("solo", solo=True), make("a")])
    admit = Admitter(100, {"solo": 500})
    assert ids(take_batch(queue, 8, admit)) == ["a"]
    assert ids(queue) == ["solo"]
