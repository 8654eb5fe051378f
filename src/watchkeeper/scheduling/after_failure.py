"""What becomes of a request after its worker died or ran out of memory: pure functions.

Runs in the front process, called by the scheduler (``scheduling.scheduler``), which
applies the verdicts: no clock (``now`` is passed in), no queues, no processes.

- A worker death counts against an input only when the input ran alone (a batch's death
  cannot be pinned on one of its inputs) and the worker crashed, or hung past the model's
  own deadline (``timeout_s``): a client's shorter X-Request-Timeout still ends the run,
  but that kill is the client's choice, not the input's fault. The input's ``deaths``
  then move it towards quarantine.
- A worker killed for a frame the front cannot read fails what it ran at once with a
  ModelError (the model answered with something it may not): a retry would only send it
  again.
- A request whose worker died is retried, alone, unless it was cancelled, its deadline
  has passed, it was a probe, the server is shutting down, a job has used its runs, or
  its deaths reached ``max_deaths`` (then it is quarantined, or failed when quarantine is
  off).
- A batch that ran out of memory is split in halves; a lone request is retried once on
  its next rung (when it may degrade); otherwise it is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watchkeeper.errors import (
    Cancelled,
    DeadlineExceeded,
    InputQuarantined,
    ModelError,
    Unavailable,
    WatchkeeperError,
    WorkerCrashed,
)
from watchkeeper.protocol.unpickling import OUTPUTS_MAY_HOLD
from watchkeeper.scheduling.pending import Kind, MemoryPlan, Pending
from watchkeeper.supervision.kill_reasons import KillReason

__all__ = ["DeathPolicy", "OomStep", "after_out_of_memory", "counts_against_input", "death_error"]


@dataclass(frozen=True, slots=True)
class DeathPolicy:
    """A model's rules for requests whose worker died."""

    model: str
    max_deaths: int  # deaths of an input before it is quarantined (or failed)
    quarantine_s: float  # how long a quarantined input is refused (0: quarantine off)


def counts_against_input(batch: list[Pending], reason: KillReason | None) -> bool:
    """The death may be the input's fault: it ran alone, and the worker crashed, or hung
    past the model's own deadline (not a client's shorter one)."""
    if len(batch) != 1 or batch[0].kind is not Kind.REQUEST:
        return False
    return reason is None or (reason.counts_against_input and batch[0].model_deadline)


def death_error(pending: Pending, reason: KillReason | None, exit_desc: str, *, now: float,
                closing: bool, policy: DeathPolicy) -> WatchkeeperError | None:
    """Why this request cannot be retried after its worker died, or None when it can."""
    model = policy.model
    if pending.cancelled:
        return Cancelled(f"the job was cancelled while it ran (its worker was stopped: {exit_desc})")
    if reason is KillReason.BAD_FRAME:
        return ModelError(f"the answer of model '{model}' could not be read, so its worker was "
                          f"replaced ({exit_desc})",
                          suggestion=f"Fix the model: {OUTPUTS_MAY_HOLD}. The server log's "
                          "worker.bad_frame line says what was wrong.")
    if reason is KillReason.DEADLINE or now >= pending.deadline:
        total = pending.deadline - pending.enqueued_at
        return DeadlineExceeded(f"model '{model}' did not answer within {total:.1f} s")
    if pending.kind is Kind.PROBE:
        return Unavailable(f"the worker died during the probe ({exit_desc})")
    if closing:
        return Unavailable(f"the worker died ({exit_desc}) while the server shuts down",
                           retry_after_s=5)
    if pending.max_runs is not None:
        return None if pending.runs < pending.max_runs else WorkerCrashed(
            f"the worker died under each of this job's {pending.runs} runs (last: {exit_desc})")
    if pending.deaths < policy.max_deaths:
        return None
    if policy.quarantine_s <= 0:
        return WorkerCrashed(
            f"this request killed {pending.deaths} workers of model '{model}' (last: {exit_desc})")
    return InputQuarantined(
        f"this input killed {pending.deaths} workers of model '{model}' (last: {exit_desc}); "
        f"it is refused for {policy.quarantine_s:.0f} s",
        retry_after_s=policy.quarantine_s,
    )


class OomStep(enum.Enum):
    SPLIT = "split"  # retry in a batch of at most half the size
    SMALLER = "smaller"  # retry alone on the next rung of its ladder
    REFUSE = "refuse"  # 503 OutOfMemory, naming params that fit now


def after_out_of_memory(plan: MemoryPlan, batch_size: int) -> OomStep:
    """What to do with one request of a batch that ran out of memory."""
    if batch_size > 1:
        return OomStep.SPLIT
    if plan.oom_retries == 0 and plan.allow_degrade and plan.chosen + 1 < len(plan.ladder):
        return OomStep.SMALLER
    return OomStep.REFUSE
