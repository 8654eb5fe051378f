"""The restart policy (``watchkeeper.supervision.restart_policy``): back-off, restart decisions."""

from __future__ import annotations

import pytest

from watchkeeper.front import metrics
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.restart_policy import (
    GiveUp,
    RestartDecision,
    decide_load_failure,
    decide_restart,
    restart_delay,
)


@pytest.mark.parametrize("streak", [-1, 0, 1])
def test_first_failure_restarts_at_once(streak: int) -> None:
    assert restart_delay(streak) == 0.0


def test_delay_doubles_from_base() -> None:
    assert [restart_delay(n) for n in range(2, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_delay_is_capped() -> None:
    assert restart_delay(8) == 30.0
    assert restart_delay(1000) == 30.0


def test_custom_base_and_cap() -> None:
    assert restart_delay(2, base_s=0.1, cap_s=1.0) == pytest.approx(0.1)
    assert restart_delay(4, base_s=0.1, cap_s=1.0) == pytest.approx(0.4)
    assert restart_delay(6, base_s=0.1, cap_s=1.0) == 1.0


def test_never_decreases() -> None:
    delays = [restart_delay(n) for n in range(50)]
    assert delays == sorted(delays)
    assert all(0.0 <= d <= 30.0 for d in delays)


# --- decide_restart -----------------------------------------------------------------------

RETRIES, CAP = 3, 30.0


def decide(reason: KillReason | None, *, was_ready: bool = True, app_not_found: bool = False,
           crash_streak: int = 0, load_failures: int = 0) -> RestartDecision:
    return decide_restart(reason, was_ready=was_ready, app_not_found=app_not_found,
                          crash_streak=crash_streak, load_failures=load_failures,
                          load_retries=RETRIES, backoff_cap_s=CAP)


@pytest.mark.parametrize("reason", [r for r in KillReason if r.restarts])
def test_a_kill_after_ready_restarts_at_once_and_keeps_the_streaks(reason: KillReason) -> None:
    decision = decide(reason, crash_streak=4, load_failures=1)
    assert decision == RestartDecision(reason.value, 0.0, 4, 1)


def test_crashes_in_a_row_back_off() -> None:
    delays, streak = [], 0
    for _ in range(5):
        decision = decide(None, crash_streak=streak)
        assert decision.label == "crash" and decision.give_up is None
        streak = decision.crash_streak
        delays.append(decision.delay_s)
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert streak == 5


def test_a_crash_before_ready_is_a_load_failure() -> None:
    decision = decide(None, was_ready=False)
    assert (decision.label, decision.load_failures, decision.give_up) == ("load_failed", 1, None)
    assert decision.delay_s == restart_delay(2, cap_s=CAP)


def test_load_failures_give_up_at_load_retries() -> None:
    decision = decide(None, was_ready=False, load_failures=RETRIES - 1)
    assert decision.delay_s is None
    assert decision.give_up is GiveUp.RETRIES_EXHAUSTED
    assert decision.load_failures == RETRIES


def test_an_app_that_cannot_be_imported_gives_up_at_once() -> None:
    decision = decide(None, was_ready=False, app_not_found=True)
    assert (decision.delay_s, decision.give_up, decision.load_failures) == (None, GiveUp.APP_NOT_FOUND, 1)


def test_a_slow_load_is_a_load_failure_with_its_own_label() -> None:
    decision = decide(KillReason.LOAD_TIMEOUT, was_ready=False)
    assert (decision.label, decision.load_failures) == ("load_timeout", 1)


@pytest.mark.parametrize("reason", [r for r in KillReason if r.says_nothing_about_loading])
def test_a_deliberate_kill_while_loading_is_not_a_load_failure(reason: KillReason) -> None:
    decision = decide(reason, was_ready=False, load_failures=2)
    assert decision == RestartDecision(reason.value, 0.0, 0, 2)


def test_every_label_is_declared_in_the_metrics_module() -> None:
    labels = {decide(r, was_ready=ready).label for r in [None, *KillReason] for ready in (True, False)
              if r is None or r.restarts}
    assert labels <= set(metrics.RESTART_REASONS)
    assert set(metrics.RESTART_REASONS) <= labels  # and every declared one is used


def test_decide_load_failure_backs_off_then_gives_up() -> None:
    steps = []
    failures = 0
    for _ in range(RETRIES):
        failures, delay, give_up = decide_load_failure(failures, app_not_found=False,
                                                       load_retries=RETRIES, backoff_cap_s=CAP)
        steps.append((failures, delay, give_up))
    assert steps == [(1, 0.5, None), (2, 1.0, None), (3, None, GiveUp.RETRIES_EXHAUSTED)]


# --- kill reasons ------------------------------------------------------------------------


def test_only_a_deadline_counts_against_the_input() -> None:
    assert [r for r in KillReason if r.counts_against_input] == [KillReason.DEADLINE]


def test_a_failed_model_or_a_shutdown_restarts_nothing() -> None:
    assert {r for r in KillReason if not r.restarts} == {KillReason.MODEL_FAILED, KillReason.SHUTDOWN}


def test_kill_reasons_read_as_their_values_in_logs() -> None:
    assert f"killed: {KillReason.HEARTBEAT}" == "killed: heartbeat"



def test_an_unreadable_ready_is_a_load_failure() -> None:
    decision = decide(KillReason.BAD_FRAME, was_ready=False)
    assert (decision.label, decision.load_failures) == ("bad_frame", 1)


def test_a_worker_that_went_with_its_template_is_restarted_at_once() -> None:
    assert decide(KillReason.TEMPLATE, was_ready=True) == RestartDecision("template", 0.0, 0, 0)
