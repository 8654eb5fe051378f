"""When a dead worker comes back, and when a model is given up: pure functions.

Runs in the front process, called by the supervisor (``supervision.supervisor``) with what
it knows of one exit; no clock, no processes, so the policy is tested as plain logic.

- A worker killed on purpose (deadline, heartbeat, probe, operator, cancel, oom, bad_frame), or
  gone with its template (template), after it was ready comes back at once: the kill says
  nothing about the model.
- A crash comes back after :func:`restart_delay` of the slot's crashes in a row (0 s, then
  doubling up to ``restart_backoff_max_s``).
- A worker that never became ready (and was not killed for a reason that says nothing
  about loading) is a load failure of the model; ``load_retries`` of those in a row mark
  the model FAILED, and an app that cannot be imported is FAILED at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watchkeeper.supervision.kill_reasons import KillReason

__all__ = ["GiveUp", "RestartDecision", "decide_load_failure", "decide_restart", "restart_delay"]


def restart_delay(streak: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Seconds to wait before the next start after ``streak`` failures in a row.

    The first failure restarts at once (a one-off crash should cost no time), then the
    delay doubles from ``base_s`` up to ``cap_s``: 0, 0.5, 1, 2, 4, ... 30.
    """
    if streak <= 1:
        return 0.0
    return min(cap_s, base_s * 2 ** (streak - 2))


class GiveUp(enum.Enum):
    """Why the model is marked FAILED instead of restarting its worker."""

    APP_NOT_FOUND = "the app cannot be imported, or its options or files are wrong: retrying cannot help"
    RETRIES_EXHAUSTED = "loading failed load_retries times in a row"


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What the supervisor does after one exit."""

    label: str  # the ``reason`` label of watchkeeper_worker_restarts_total
    delay_s: float | None  # seconds until the replacement starts; None: the model is FAILED
    crash_streak: int  # the slot's crashes in a row, after this exit
    load_failures: int  # the model's load failures in a row, after this exit
    give_up: GiveUp | None = None


def decide_load_failure(load_failures: int, *, app_not_found: bool, load_retries: int,
                        backoff_cap_s: float) -> tuple[int, float | None, GiveUp | None]:
    """One more load failure (of a worker or of the template): the new count, the delay
    before the next try, and why to give up instead (then the delay is None)."""
    failures = load_failures + 1
    if app_not_found:
        return failures, None, GiveUp.APP_NOT_FOUND
    if failures >= load_retries:
        return failures, None, GiveUp.RETRIES_EXHAUSTED
    return failures, restart_delay(failures + 1, cap_s=backoff_cap_s), None


def decide_restart(reason: KillReason | None, *, was_ready: bool, app_not_found: bool,
                   crash_streak: int, load_failures: int, load_retries: int,
                   backoff_cap_s: float) -> RestartDecision:
    """What to do after a worker exited (the model is not stopping and not FAILED)."""
    if not was_ready and (reason is None or not reason.says_nothing_about_loading):
        failures, delay, give_up = decide_load_failure(
            load_failures, app_not_found=app_not_found, load_retries=load_retries,
            backoff_cap_s=backoff_cap_s)
        label = reason.value if reason is not None else "load_failed"
        return RestartDecision(label, delay, crash_streak, failures, give_up)
    if reason is not None:
        return RestartDecision(reason.value, 0.0, crash_streak, load_failures)
    streak = crash_streak + 1
    return RestartDecision("crash", restart_delay(streak, cap_s=backoff_cap_s), streak, load_failures)
