"""What becomes of a request after its worker died or ran out of memory
(``watchkeeper.scheduling.after_failure``): pure verdicts, no processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from watchkeeper import errors
from watchkeeper.scheduling.after_failure import (
    DeathPolicy,
    OomStep,
    after_out_of_memory,
    counts_against_input,
    death_error,
)
from watchkeeper.scheduling.memory_ledger import Rung
from watchkeeper.scheduling.pending import Kind, MemoryPlan, Pending
from watchkeeper.supervision.kill_reasons import KillReason

POLICY = DeathPolicy("m", max_deaths=2, quarantine_s=300.0)
NOW = 1000.0
MakePending = Callable[..., Pending]


@pytest.fixture
def make(loop: asyncio.AbstractEventLoop) -> MakePending:
    def make(kind: Kind = Kind.REQUEST, deadline: float = NOW + 10, **fields: object) -> Pending:
        pending = Pending("m", "r", {"x": 1}, {}, deadline, loop.create_future(), kind=kind,
                          enqueued_at=NOW - 1)
        for name, value in fields.items():
            setattr(pending, name, value)
        return pending

    return make


def verdict(pending: Pending, reason: KillReason | None = None, *, closing: bool = False,
            policy: DeathPolicy = POLICY) -> errors.WatchkeeperError | None:
    return death_error(pending, reason, "signal SIGKILL", now=NOW, closing=closing, policy=policy)


# --- which deaths count against an input -------------------------------------------------


def test_a_lone_request_whose_worker_crashed_or_hung_counts(make: MakePending) -> None:
    assert counts_against_input([make()], None)
    assert counts_against_input([make()], KillReason.DEADLINE)


@pytest.mark.parametrize("reason", [r for r in KillReason if r is not KillReason.DEADLINE])
def test_other_kills_do_not_count(make: MakePending, reason: KillReason) -> None:
    assert not counts_against_input([make()], reason)


def test_a_batch_or_a_probe_does_not_count(make: MakePending) -> None:
    assert not counts_against_input([make(), make()], None)
    assert not counts_against_input([make(Kind.PROBE)], None)


def test_a_kill_at_a_clients_shorter_deadline_does_not_count(make: MakePending) -> None:
    """X-Request-Timeout ends the run, but the input did not hang past the model's own."""
    short = make(model_deadline=False)
    assert not counts_against_input([short], KillReason.DEADLINE)
    assert counts_against_input([short], None)  # a crash is the input's doing at any deadline


def test_a_bad_frame_does_not_count(make: MakePending) -> None:
    assert not counts_against_input([make()], KillReason.BAD_FRAME)
    assert not counts_against_input([make()], KillReason.TEMPLATE)


# --- retried or failed ------------------------------------------------------------------


def test_a_first_crash_is_retried(make: MakePending) -> None:
    assert verdict(make(deaths=1)) is None


def test_the_deaths_limit_quarantines(make: MakePending) -> None:
    error = verdict(make(deaths=2))
    assert isinstance(error, errors.InputQuarantined)
    assert error.retry_after_s == 300.0
    assert "killed 2 workers" in error.message


def test_without_quarantine_the_limit_fails_the_request(make: MakePending) -> None:
    error = verdict(make(deaths=2), policy=DeathPolicy("m", 2, 0.0))
    assert isinstance(error, errors.WorkerCrashed)


def test_a_cancelled_request_is_not_retried(make: MakePending) -> None:
    assert isinstance(verdict(make(cancelled=True), KillReason.CANCEL), errors.Cancelled)


def test_a_deadline_kill_or_a_passed_deadline_is_a_504(make: MakePending) -> None:
    assert isinstance(verdict(make(), KillReason.DEADLINE), errors.DeadlineExceeded)
    late = verdict(make(deadline=NOW - 0.5))
    assert isinstance(late, errors.DeadlineExceeded)
    assert "within 0.5 s" in late.message


def test_a_bad_frame_fails_the_request_at_once_as_a_model_error(make: MakePending) -> None:
    """Retrying would only get the same unreadable answer: the model's bug, said clearly."""
    error = verdict(make(), KillReason.BAD_FRAME)
    assert isinstance(error, errors.ModelError)
    assert "could not be read" in error.message and "signal SIGKILL" in error.message
    assert "numpy arrays" in error.suggestion
    assert isinstance(verdict(make(max_runs=3, runs=1), KillReason.BAD_FRAME), errors.ModelError)


def test_a_worker_gone_with_its_template_is_retried(make: MakePending) -> None:
    assert verdict(make(), KillReason.TEMPLATE) is None


def test_a_probe_is_not_retried(make: MakePending) -> None:
    assert isinstance(verdict(make(Kind.PROBE)), errors.Unavailable)


def test_nothing_is_retried_while_the_server_shuts_down(make: MakePending) -> None:
    error = verdict(make(), closing=True)
    assert isinstance(error, errors.Unavailable) and error.retry_after_s == 5


def test_a_job_is_retried_until_its_runs_are_used(make: MakePending) -> None:
    assert verdict(make(max_runs=3, runs=2, deaths=5)) is None  # jobs are not quarantined
    assert isinstance(verdict(make(max_runs=3, runs=3)), errors.WorkerCrashed)


# --- out of memory ------------------------------------------------------------------------


def ladder(n: int) -> list[Rung]:
    return [Rung({"size": 1024 >> i}) for i in range(n)]


def test_a_batch_is_split() -> None:
    assert after_out_of_memory(MemoryPlan(ladder(3)), batch_size=4) is OomStep.SPLIT


def test_a_lone_request_steps_down_once() -> None:
    plan = MemoryPlan(ladder(3))
    assert after_out_of_memory(plan, 1) is OomStep.SMALLER
    plan.oom_retries = 1
    assert after_out_of_memory(plan, 1) is OomStep.REFUSE


def test_no_step_down_without_degrading_or_at_the_last_rung() -> None:
    assert after_out_of_memory(MemoryPlan(ladder(3), allow_degrade=False), 1) is OomStep.REFUSE
    assert after_out_of_memory(MemoryPlan(ladder(2), chosen=1), 1) is OomStep.REFUSE
