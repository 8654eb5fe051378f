"""The environment the front starts a worker or template process with.

Runs in the front process, when it spawns a worker or a template (forked workers inherit
their template's). The settings make a worker's memory limit (``worker.memory.apply_limit``)
and its peak meter see the memory really in use.
"""

from __future__ import annotations

import os

__all__ = ["MALLOC_ENV", "worker_environment"]

#: Set in the environment of the workers and template of a model with ``memory_limit_mb``
#: (``worker_environment``): allocations over 128 KiB get their own mappings, given back
#: when freed, so RLIMIT_AS counts what is really in use and the peak meter sees each
#: batch's real growth (glibc's default threshold adapts up to 32 MiB and keeps freed
#: blocks, which hides both). It costs speed: every large allocation is a fresh mapping
#: whose pages fault in (``bench/jobs.py`` read img2video at 0.81x in-process with it, 0.89x
#: without), so models without a limit keep glibc's default and their learned needs may
#: read low (memory kept from an earlier batch is not counted again).
#: ``MALLOC_ARENA_MAX=1``: when an allocation fails, glibc retries in a new arena, and a new
#: arena reserves 64 MiB of address space, which RLIMIT_AS counts: after one real
#: out-of-memory the worker would have 64 MiB less room for the retry at a smaller rung.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "1"}


def worker_environment(memory_limit_mb: float | None) -> dict[str, str]:
    """The environment a worker or template process is started with (see MALLOC_ENV)."""
    return {**os.environ, **MALLOC_ENV} if memory_limit_mb is not None else dict(os.environ)
