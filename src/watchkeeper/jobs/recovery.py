"""Start-up recovery: what a stopped (or killed) server left in the data dir, made consistent.

Runs in the front process, once, in the job store's thread, before any job runs (the job
runner's ``start``); it blocks on the disk, with no waits of its own. In order:

1. The results directory is opened (created if missing, its identity remembered).
2. Every job the store says is ``running`` (its server stopped under it):
   - its cancel was requested: cancelled;
   - its complete result is on disk (files and manifest written, but the server stopped
     before the commit that says ``succeeded``): **adopted**, the job succeeds with it, on
     its last attempt too;
   - else queued again, or failed when it has used all its attempts.
3. Temporary files of interrupted writes are removed.
4. Result directories of jobs that did not succeed (or that the store does not know) are
   removed: a result whose commit did not happen and that was not adopted is never served.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchkeeper.jobs.job import Job, JobState
from watchkeeper.jobs.results import ResultFiles
from watchkeeper.jobs.sqlite_store import SqliteJobStore

__all__ = ["Recovered", "recover"]


@dataclass(frozen=True)
class Recovered:
    """What recovery changed."""

    jobs: list[Job]  # the running jobs, as recovery left them
    partial_files: int  # temporary files removed
    orphan_results: list[str]  # job ids whose result directory was removed

    @property
    def adopted(self) -> list[Job]:
        return [job for job in self.jobs if job.state is JobState.SUCCEEDED]


def recover(store: SqliteJobStore, results: ResultFiles) -> Recovered:
    """Make the store and the result files agree (see the module); blocks on the disk."""
    results.open()
    jobs = store.recover(adopt=lambda job: results.complete(job.id))
    partial = results.sweep_partial()
    orphans = [job_id for job_id in results.job_ids() if not _keeps_result(store.get(job_id))]
    for job_id in orphans:
        results.remove(job_id)
    return Recovered(jobs, partial, orphans)


def _keeps_result(job: Job | None) -> bool:
    return job is not None and job.state is JobState.SUCCEEDED
