"""Admission by memory (``watchkeeper.scheduling.admission``): which rung a request runs at, or why not.

The replica is a stand-in (Admission only hands it to ``ledger_for``); the ledgers, the
estimates and the requests are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from watchkeeper.errors import OutOfMemory
from watchkeeper.scheduling.admission import Admission
from watchkeeper.scheduling.memory_ledger import SURPRISE_MARGIN, Ledger, Rung
from watchkeeper.scheduling.pending import MemoryPlan, Pending
from watchkeeper.supervision.worker_handle import WorkerHandle

MB = 2**20
BIG, MID, SMALL = {"size": 1024}, {"size": 768}, {"size": 512}


class StandInReplica:
    """What ``ledger_for`` looks at: an index and a device."""

    def __init__(self, index: int = 0, device: str | None = "cuda:0") -> None:
        self.index = index
        self.device = device


def stand_in(index: int = 0) -> WorkerHandle:
    """A stand-in typed as the WorkerHandle that Admission only passes to ``ledger_for``."""
    return cast(WorkerHandle, StandInReplica(index))


MakePending = Callable[..., Pending]


@pytest.fixture
def make(loop: asyncio.AbstractEventLoop) -> MakePending:
    def make(*rungs: tuple[dict[str, Any], int | None], allow_degrade: bool = True,
             deadline: float = 1e12, rung: int = 0) -> Pending:
        ladder = [Rung(params, estimate) for params, estimate in rungs]
        return Pending(model="m", request_id="r", inputs={}, params=ladder[0].params,
                       deadline=deadline, future=loop.create_future(),
                       memory=MemoryPlan(ladder, allow_degrade, rung))

    return make


def gate(ledger: Ledger | None) -> tuple[Admission, WorkerHandle]:
    replica = stand_in()
    ledgers = {id(replica): ledger}
    return Admission("m", lambda r: ledgers[id(r)]), replica


def failure(pending: Pending) -> BaseException | None:
    assert pending.future.done()
    return pending.future.exception()


def ladder3() -> tuple[tuple[dict[str, Any], int], ...]:
    return (BIG, 800 * MB), (MID, 400 * MB), (SMALL, 100 * MB)


# --- admit -----------------------------------------------------------------------------


def test_rung_zero_when_it_fits(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make(*ladder3())
    assert admission.admit(replica, pending, 0) == 800 * MB
    assert (pending.memory.chosen, pending.memory.need) == (0, 800 * MB)
    assert pending.memory.degrade_reason is None
    assert pending.memory.run_params == BIG


def test_degrades_to_first_fitting_rung(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 500 * MB)
    admission, replica = gate(ledger)
    pending = make(*ladder3())
    assert admission.admit(replica, pending, 0) == 400 * MB
    assert (pending.memory.chosen, pending.memory.need) == (1, 400 * MB)
    assert pending.memory.run_params == MID
    reason = pending.memory.degrade_reason
    assert reason is not None
    assert "cuda:0" in reason
    assert "size=1024" in reason
    assert "800 MB" in reason  # what rung 0 needs
    assert "500 MB" in reason  # what was free
    assert "1000 MB" in reason  # of the budget
    assert pending.open


def test_first_degrade_reason_is_kept(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 500 * MB)
    admission, replica = gate(ledger)
    pending = make(*ladder3())
    pending.memory.degrade_reason = "out of memory at {'size': 1024}"
    admission.admit(replica, pending, 0)
    assert pending.memory.degrade_reason == "out of memory at {'size': 1024}"


def test_nothing_fits_waits(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 950 * MB)
    admission, replica = gate(ledger)
    pending = make(*ladder3())
    assert admission.admit(replica, pending, 0) is None
    assert pending.open
    assert (pending.memory.chosen, pending.memory.need) == (0, 0)


def test_without_degrade_a_smaller_rung_is_not_used(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 500 * MB)
    admission, replica = gate(ledger)
    pending = make(*ladder3(), allow_degrade=False)
    assert admission.admit(replica, pending, 0) is None
    assert pending.open


def test_starts_at_the_pending_rung(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make(*ladder3(), rung=1)
    assert admission.admit(replica, pending, 0) == 400 * MB
    assert pending.memory.chosen == 1


def test_used_in_batch_is_counted(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    assert admission.admit(replica, make(*ladder3()), 0) == 800 * MB
    second = make(*ladder3())
    assert admission.admit(replica, second, 800 * MB) == 100 * MB
    assert second.memory.chosen == 2
    third = make(*ladder3())
    assert admission.admit(replica, third, 950 * MB) is None
    assert third.open


@pytest.mark.parametrize("allow_degrade", [True, False])
def test_larger_than_the_whole_budget_fails_at_once(make: MakePending, allow_degrade: bool) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make((BIG, 3000 * MB), (SMALL, 2000 * MB), allow_degrade=allow_degrade)
    assert admission.admit(replica, pending, 0) is None
    error = failure(pending)
    assert isinstance(error, OutOfMemory)
    assert "whole memory budget" in error.message
    assert error.details["needs_bytes"] == [3000 * MB, 2000 * MB]


def test_without_degrade_only_the_own_rung_decides_hopelessness(make: MakePending) -> None:
    """Rung 0 is over the budget: hopeless without degrading, though a later rung would fit."""
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make((BIG, 3000 * MB), (SMALL, 100 * MB), allow_degrade=False)
    assert admission.admit(replica, pending, 0) is None
    error = failure(pending)
    assert isinstance(error, OutOfMemory)
    assert error.suggestion == f"These params fit now: {SMALL}."


def test_busy_budget_is_not_hopeless(make: MakePending) -> None:
    """Over what is free now but within the budget: the request waits."""
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 900 * MB)
    admission, replica = gate(ledger)
    pending = make((BIG, 1000 * MB), allow_degrade=False)
    assert admission.admit(replica, pending, 0) is None
    assert pending.open


@pytest.mark.parametrize("left_s", [-1.0, 0.0, 0.01])
def test_deadline_too_close_to_wait_is_refused(make: MakePending, left_s: float) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 950 * MB)
    admission, replica = gate(ledger)
    admission.min_wait_s = 0.5
    pending = make(*ladder3(), deadline=time.monotonic() + left_s)
    assert admission.admit(replica, pending, 0) is None
    error = failure(pending)
    assert isinstance(error, OutOfMemory)
    assert "in time" in error.message
    assert error.retry_after_s == 1.0
    assert error.details["free_bytes"] == 50 * MB


def test_deadline_with_time_to_wait_is_not_refused(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    ledger.reserve(1, 950 * MB)
    admission, replica = gate(ledger)
    admission.min_wait_s = 0.5
    pending = make(*ladder3(), deadline=time.monotonic() + 60)
    assert admission.admit(replica, pending, 0) is None
    assert pending.open


def test_admit_learns_the_smallest_budget(make: MakePending) -> None:
    big, small = stand_in(0), stand_in(1)
    ledgers = {id(big): Ledger("m#0", 4000 * MB), id(small): Ledger("m#1", 1000 * MB)}
    admission = Admission("m", lambda r: ledgers[id(r)])
    assert admission.budget is None
    admission.admit(big, make((SMALL, 1 * MB)), 0)
    assert admission.budget == 4000 * MB
    admission.admit(small, make((SMALL, 1 * MB)), 0)
    assert admission.budget == 1000 * MB
    admission.admit(big, make((SMALL, 1 * MB)), 0)
    assert admission.budget == 1000 * MB


def test_learned_need_caps_at_budget_so_the_request_waits_to_run_alone(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    admission, replica = gate(ledger)
    pending = make((BIG, None))
    admission.estimates.raise_to(pending.memory.ladder[0].key, 5000 * MB)
    assert admission.admit(replica, pending, 0) == 1000 * MB
    waiting = make((BIG, None))
    assert admission.admit(replica, waiting, 1 * MB) is None
    assert waiting.open


# --- without a ledger ------------------------------------------------------------------


def test_no_ledger_admits_at_no_cost_and_keeps_the_rung(make: MakePending) -> None:
    admission, replica = gate(None)
    pending = make(*ladder3(), rung=1)
    assert admission.admit(replica, pending, 10**15) == 0
    assert (pending.memory.chosen, pending.memory.need) == (1, 0)
    assert pending.memory.degrade_reason is None
    assert admission.budget is None


def test_no_ledger_reserve_release_and_free_are_harmless(make: MakePending) -> None:
    admission, replica = gate(None)
    admission.reserve(replica, 1, 100)
    admission.release(replica, 1)
    assert admission.free_on(replica) == 0
    assert admission.describe([replica]) == []


# --- check_submit ----------------------------------------------------------------------


def test_check_submit_passes_while_budget_unknown(make: MakePending) -> None:
    admission, _ = gate(Ledger("cuda:0", 1000 * MB))
    admission.check_submit(make((BIG, 10**15)))


def test_check_submit_raises_when_budget_known(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    admission.admit(replica, make((SMALL, 1 * MB)), 0)
    with pytest.raises(OutOfMemory) as info:
        admission.check_submit(make((BIG, 3000 * MB), (SMALL, 2000 * MB)))
    assert "whole memory budget" in info.value.message
    assert "3000 MB" in info.value.message


def test_check_submit_accepts_a_request_with_a_rung_within_budget(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    admission.admit(replica, make((SMALL, 1 * MB)), 0)
    admission.check_submit(make((BIG, 3000 * MB), (SMALL, 900 * MB)))


def test_check_submit_without_degrade_checks_only_the_own_rung(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    admission.admit(replica, make((SMALL, 1 * MB)), 0)
    with pytest.raises(OutOfMemory):
        admission.check_submit(make((BIG, 3000 * MB), (SMALL, 900 * MB), allow_degrade=False))


def test_check_submit_never_refuses_on_a_learned_need(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    admission.admit(replica, make((SMALL, 1 * MB)), 0)
    pending = make((BIG, None))
    admission.estimates.raise_to(pending.memory.ladder[0].key, 10**15)
    admission.check_submit(pending)


# --- refusal ---------------------------------------------------------------------------


def test_refusal_names_params_that_fit(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make(*ladder3())
    error = admission.refusal(pending, [800 * MB, 400 * MB, 100 * MB], 500 * MB, "test")
    assert error.suggestion == f"These params fit now: {MID}."
    assert "size=1024" in error.message
    assert "800 MB" in error.message
    assert "500 MB free" in error.message


def test_refusal_never_names_the_rung_that_failed(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make(*ladder3(), rung=1)
    # Rung 1 "fits" by the numbers, yet it is the rung that failed (e.g. ran out of memory).
    error = admission.refusal(pending, [800 * MB, 400 * MB, 100 * MB], 500 * MB, "test")
    assert error.suggestion == f"These params fit now: {SMALL}."
    assert str(MID) not in error.suggestion
    assert str(BIG) not in error.suggestion


def test_refusal_skips_rungs_of_unknown_need(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make((BIG, 800 * MB), (MID, None), (SMALL, 100 * MB))
    error = admission.refusal(pending, [800 * MB, 0, 100 * MB], 500 * MB, "test")
    assert error.suggestion == f"These params fit now: {SMALL}."


def test_refusal_without_degrade_suggests_allowing_it(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make(*ladder3(), allow_degrade=False)
    error = admission.refusal(pending, [800 * MB, 400 * MB, 100 * MB], 10 * MB, "test")
    assert "Allow degrading" in error.suggestion
    assert str(SMALL) in error.suggestion
    assert str(BIG) not in error.suggestion


def test_refusal_with_nothing_smaller_suggests_retrying_later(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make((BIG, 800 * MB))
    error = admission.refusal(pending, [800 * MB], -5, "test")
    assert "Retry later" in error.suggestion
    assert error.details == {"needs_bytes": [800 * MB], "free_bytes": 0}
    assert "0 MB free" in error.message


def test_refusal_retry_after_follows_min_wait(make: MakePending) -> None:
    admission, _ = gate(None)
    admission.min_wait_s = 7.0
    error = admission.refusal(make((BIG, 800 * MB)), [800 * MB], 0, "test")
    assert error.retry_after_s == 7.0


def test_refusal_of_a_request_without_params(make: MakePending) -> None:
    admission, _ = gate(None)
    error = admission.refusal(make(({}, 800 * MB)), [800 * MB], 0, "test")
    assert "the request needs 800 MB" in error.message


# --- after a batch ---------------------------------------------------------------------


def test_observe_shares_the_peak_among_the_batch(make: MakePending) -> None:
    admission, _ = gate(None)
    a, b = make((BIG, None)), make((SMALL, None))
    admission.observe([a, b], 2000 * MB)
    assert admission.estimates.get(a.memory.ladder[0].key) == int(1000 * MB * SURPRISE_MARGIN)
    assert admission.estimates.get(b.memory.ladder[0].key) == int(1000 * MB * SURPRISE_MARGIN)


def test_observe_learns_the_chosen_rung(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make(*ladder3())
    pending.memory.chosen = 2
    admission.observe([pending], 50 * MB)
    assert admission.estimates.get(pending.memory.ladder[2].key) == int(50 * MB * SURPRISE_MARGIN)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 0


def test_observe_without_a_peak_learns_nothing(make: MakePending) -> None:
    admission, _ = gate(None)
    pending = make((BIG, None))
    admission.observe([pending], None)
    admission.observe([], 100)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 0


def test_out_of_memory_raises_the_need_above_what_was_free(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    admission, replica = gate(ledger)
    pending = make((BIG, None))
    admission.out_of_memory(replica, pending, {}, 1)
    assert admission.estimates.get(pending.memory.ladder[0].key) > ledger.free


def test_out_of_memory_in_a_batch_uses_the_share_of_free(make: MakePending) -> None:
    ledger = Ledger("cuda:0", 1000 * MB)
    admission, replica = gate(ledger)
    pending = make((BIG, None))
    admission.out_of_memory(replica, pending, {}, 4)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 250 * MB + 1


def test_out_of_memory_uses_the_reported_peak(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make((BIG, None))
    admission.out_of_memory(replica, pending, {"peak_bytes": 6000 * MB}, 2)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 3000 * MB


def test_out_of_memory_raises_the_estimate_by_half(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make((BIG, 800 * MB))
    admission.out_of_memory(replica, pending, {}, 1)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 1200 * MB


def test_out_of_memory_learns_the_chosen_rung(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    pending = make(*ladder3())
    pending.memory.chosen = 1
    admission.out_of_memory(replica, pending, {}, 1)
    assert admission.estimates.get(pending.memory.ladder[1].key) == 1000 * MB + 1
    assert admission.estimates.get(pending.memory.ladder[0].key) == 0


def test_out_of_memory_without_ledger_still_raises(make: MakePending) -> None:
    admission, replica = gate(None)
    pending = make((BIG, None))
    admission.out_of_memory(replica, pending, {}, 1)
    assert admission.estimates.get(pending.memory.ladder[0].key) == 1


# --- the replica's ledger --------------------------------------------------------------


def test_reserve_and_release_go_to_the_replica_ledger() -> None:
    mine, other = Ledger("m#0", 1000 * MB), Ledger("m#1", 1000 * MB)
    first, second = stand_in(0), stand_in(1)
    ledgers = {id(first): mine, id(second): other}
    admission = Admission("m", lambda r: ledgers[id(r)])
    admission.reserve(first, 7, 300 * MB)
    assert mine.reserved == {7: 300 * MB}
    assert other.reserved == {}
    assert admission.free_on(first) == 700 * MB
    assert admission.free_on(second) == 1000 * MB
    admission.release(first, 7)
    assert mine.reserved == {}


def test_describe_lists_each_ledger_once() -> None:
    shared = Ledger("cuda:0", 1000)
    a, b = stand_in(0), stand_in(1)
    admission = Admission("m", lambda r: shared)
    assert admission.describe([a, b]) == [shared.to_dict()]


# --- MemoryPlan.degraded -------------------------------------------------------------------


def test_degraded_info_is_none_at_rung_zero(make: MakePending) -> None:
    assert make(*ladder3()).memory.degraded() is None


def test_degraded_info_names_from_to_and_reason(make: MakePending) -> None:
    admission, replica = gate(Ledger("cuda:0", 1000 * MB))
    admission.reserve(replica, 1, 500 * MB)
    pending = make(*ladder3())
    admission.admit(replica, pending, 0)
    info = pending.memory.degraded()
    assert info is not None
    assert info["from"] == BIG
    assert info["to"] == MID
    assert info["reason"] == pending.memory.degrade_reason


def test_degraded_info_without_a_reason(make: MakePending) -> None:
    pending = make(*ladder3())
    pending.memory.chosen = 2
    assert pending.memory.degraded() == {"from": BIG, "to": SMALL,
                                      "reason": "out of memory at the larger params"}
