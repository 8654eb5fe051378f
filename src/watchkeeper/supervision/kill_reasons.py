"""Why the front killed a worker: one enum, and what each reason means for the model and
for the input the worker was running.

Runs in the front process. The scheduler kills for a deadline, an out-of-memory that left
memory behind, or a cancelled job; the supervisor for a missed heartbeat, a slow load, an
operator's restart, a failed probe, the model being marked FAILED, or shutdown; the worker
handle for a frame it cannot read. A forked worker whose template died went with it. The
worker handle keeps the first reason it was given; the supervisor's restart decision
(``supervision.restart_policy``) and the scheduler's death verdict
(``scheduling.after_failure``) read it. A worker that died with no reason crashed.
"""

from __future__ import annotations

import enum

__all__ = ["KillReason"]


class KillReason(enum.StrEnum):
    DEADLINE = "deadline"  # a request in its batch ran past its deadline
    HEARTBEAT = "heartbeat"  # idle (or reporting progress) and then silent
    PROBE = "probe"  # its canary inference gave a wrong answer
    OPERATOR = "operator"  # POST /admin/models/{name}/restart
    CANCEL = "cancel"  # its job was cancelled and it did not stop in time
    OOM = "oom"  # it ran out of memory and did not give the memory back
    LOAD_TIMEOUT = "load_timeout"  # not ready within load_timeout_s
    MODEL_FAILED = "model_failed"  # the model is FAILED: every worker goes
    SHUTDOWN = "shutdown"  # the server stops and the worker did not exit in time
    BAD_FRAME = "bad_frame"  # it sent a message the front cannot or will not decode
    TEMPLATE = "template"  # forked: its template died (or was replaced) and took it along

    @property
    def says_nothing_about_loading(self) -> bool:
        """A worker killed for this before it was ready did not fail to load: it is replaced
        without counting a load failure (a deadline can end a probe run during warm-up)."""
        return self in _NOT_A_LOAD_FAILURE

    @property
    def counts_against_input(self) -> bool:
        """The input it ran alone may be what killed it (a hang): counted towards quarantine,
        as a crash is, when the deadline was the model's own ``timeout_s`` (the scheduler's
        ``after_failure.counts_against_input`` checks that). Other reasons say nothing about
        the input (a bad frame fails its request at once: retrying would send it again)."""
        return self is KillReason.DEADLINE

    @property
    def restarts(self) -> bool:
        """The supervisor starts a replacement (not when the model failed or the server stops)."""
        return self not in (KillReason.MODEL_FAILED, KillReason.SHUTDOWN)


_NOT_A_LOAD_FAILURE = frozenset({KillReason.OPERATOR, KillReason.PROBE, KillReason.DEADLINE,
                                 KillReason.HEARTBEAT, KillReason.CANCEL, KillReason.TEMPLATE})
