"""Quotas per owner: how many jobs one API key may have queued or running, and how many bytes
of results it may keep stored.

Runs in the front process, in the job store's thread: the store calls :func:`check_quota`
inside the transaction that would create the job, with the owner's usage counted by the
same transaction (an indexed query), so a burst of submits cannot slip past a quota
together. Pure functions: the refusal (``Overloaded``: 429 with Retry-After) and the size
a result takes.
"""

from __future__ import annotations

from typing import Any

import orjson

from watchkeeper.errors import Overloaded
from watchkeeper.jobs.job import ANONYMOUS_OWNER, OwnerLimits, OwnerUsage

__all__ = ["ACTIVE_RETRY_AFTER_S", "MIB", "RESULTS_RETRY_AFTER_S", "check_quota", "result_bytes"]

MIB = 1024 * 1024
#: Retry-After of a submit refused for too many jobs queued or running (one may end soon).
ACTIVE_RETRY_AFTER_S = 5.0
#: Retry-After of a submit refused for too many stored results (they expire slowly).
RESULTS_RETRY_AFTER_S = 60.0


def _who(owner: str) -> str:
    return "the anonymous owner (no API keys)" if owner == ANONYMOUS_OWNER else f"key {owner}"


def check_quota(owner: str, usage: OwnerUsage, limits: OwnerLimits) -> None:
    """Raise :class:`Overloaded` when one more job would put ``owner`` over ``limits``."""
    if usage.active_jobs >= limits.max_active_jobs:
        raise Overloaded(
            f"{_who(owner)} has {usage.active_jobs} queued or running jobs "
            f"(max_queued_jobs {limits.max_active_jobs})",
            suggestion="Wait for one to finish (GET /v1/jobs?state=running), or cancel one, "
                       "then submit again.",
            retry_after_s=ACTIVE_RETRY_AFTER_S,
            details={"active_jobs": usage.active_jobs, "max_queued_jobs": limits.max_active_jobs},
        )
    if usage.result_bytes > limits.max_result_bytes:
        held, allowed = usage.result_bytes / MIB, limits.max_result_bytes / MIB
        raise Overloaded(
            f"{_who(owner)} keeps {held:.1f} MiB of job results, over its max_result_mb "
            f"({allowed:g})",
            suggestion="Finished jobs' results are deleted when they expire (jobs.result_ttl_h): "
                       "wait for that, or have an operator delete old jobs; then submit again.",
            retry_after_s=RESULTS_RETRY_AFTER_S,
            details={"result_mb": round(held, 3), "max_result_mb": allowed},
        )


def result_bytes(result: dict[str, Any] | None) -> int:
    """Bytes a stored result (``ResultMeta.to_dict()``) takes: its files, and its other
    outputs as JSON. Entries of another shape count as nothing."""
    if not result:
        return 0
    files = result.get("files")
    sizes = [f.get("size") for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    return sum(s for s in sizes if isinstance(s, int)) + len(orjson.dumps(result.get("outputs", {})))
