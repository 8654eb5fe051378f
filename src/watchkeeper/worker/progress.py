"""The ``progress(fraction, message)`` callback a model's ``predict`` gets, and cancellation.

Runs in a worker process, inside ``predict`` (the worker's one thread). A model opts in by
declaring a ``progress`` parameter::

    def predict(self, inputs, params, progress):
        for i in range(n):
            ...
            progress((i + 1) / n, f"frame {i + 1}/{n}")

Each call does two things:

- reports how far the request has got: a ``Progress`` message to the front, at most one
  every ``MIN_INTERVAL_S`` (and always the last, at 1.0). The front stores it for the job and
  streams it; it also counts as a heartbeat, so a model that reports progress and then goes
  silent for ``heartbeat_timeout_s`` is killed as frozen long before its deadline;
- checks, without waiting, whether the front asked to stop this batch (``Cancel``): then it
  raises :class:`~watchkeeper.errors.Cancelled`, which ends ``predict`` and reports the item
  as cancelled. A model that never calls ``progress`` cannot be stopped this way: the front
  kills its worker after ``jobs.cancel_grace_s``.

Only one-item batches get a reporting callback (jobs run alone), and only for models that
keep the contract's own ``predict_batch`` (a model with its own runs every batch through it,
without progress). In the warm-up and the probe ``progress`` is :func:`no_progress`.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

from watchkeeper.contract import no_progress
from watchkeeper.errors import Cancelled
from watchkeeper.protocol.messages import Cancel, Progress
from watchkeeper.protocol.wire import BlockingChannel

__all__ = ["MAX_MESSAGE_CHARS", "MIN_INTERVAL_S", "ProgressReporter", "no_progress", "takes_progress"]

#: Least time between two Progress messages of one batch (reports in between are dropped).
MIN_INTERVAL_S = 0.05
#: Longest progress message kept.
MAX_MESSAGE_CHARS = 200

ProgressCallback = Callable[..., None]


def takes_progress(predict: Callable[..., Any]) -> bool:
    """Whether a ``predict`` method declares a ``progress`` parameter."""
    try:
        return "progress" in inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return False


class ProgressReporter:
    """The callback for one running batch: throttled reports out, a cancel check in.

    Messages other than a ``Cancel`` of this batch that arrive meanwhile are kept in
    ``deferred`` for the worker's loop (the front sends nothing else to a busy worker, but a
    ``Stop`` must not be lost).
    """

    def __init__(self, channel: BlockingChannel, batch_id: int, deferred: list[Any]) -> None:
        self.channel = channel
        self.batch_id = batch_id
        self.deferred = deferred
        self.sent = 0
        self._sent_at = -math.inf

    def __call__(self, fraction: float, message: str = "") -> None:
        self._check_cancelled()
        try:
            value = round(min(1.0, max(0.0, float(fraction))), 4)
        except (TypeError, ValueError):
            return
        if math.isnan(value):
            return
        now = time.monotonic()
        if value < 1.0 and now - self._sent_at < MIN_INTERVAL_S:
            return
        self._sent_at = now
        self.sent += 1
        self.channel.send(Progress(self.batch_id, value, str(message)[:MAX_MESSAGE_CHARS]))

    def _check_cancelled(self) -> None:
        while self.channel.poll(0):
            message = self.channel.recv()
            if isinstance(message, Cancel):
                if message.batch_id == self.batch_id:
                    raise Cancelled("the job was cancelled while it ran")
                continue  # a late cancel of a batch that has finished
            self.deferred.append(message)
