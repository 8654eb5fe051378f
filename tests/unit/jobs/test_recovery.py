"""Start-up recovery (``watchkeeper.jobs.recovery``) on a real store file and real result
files, in the states a killed server leaves them in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from watchkeeper.jobs.job import JobState, NewJob
from watchkeeper.jobs.recovery import recover
from watchkeeper.jobs.results import MANIFEST, ResultFiles
from watchkeeper.jobs.sqlite_store import SqliteJobStore
from watchkeeper.protocol.blob import Blob


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


@pytest.fixture
def results(tmp_path: Path) -> Iterator[ResultFiles]:
    r = ResultFiles(tmp_path / "results")
    r.open()
    yield r
    r.close()


def running(store: SqliteJobStore, job_id: str, max_attempts: int = 1) -> None:
    store.create(NewJob(job_id, "m", {}, {}, True, max_attempts, "r"))
    assert store.start(job_id) is not None


def test_a_complete_result_is_adopted_even_on_the_last_attempt(store: SqliteJobStore,
                                                               results: ResultFiles) -> None:
    running(store, "done", max_attempts=1)
    meta = results.write("done", {"video": Blob(b"v" * 100, "video/mp4"), "frames": 4},
                         degraded={"from": {"s": 2}, "to": {"s": 1}, "reason": "oom"})
    recovered = recover(store, results)
    job = store.get("done")
    assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1
    assert job.result == meta.to_dict() and job.degraded == {"from": {"s": 2}, "to": {"s": 1},
                                                             "reason": "oom"}
    assert job.progress == 1.0 and [j.id for j in recovered.adopted] == ["done"]
    assert recovered.orphan_results == [] and results.path("done", "video.mp4").is_file()
    last = store.events("done")[-1].data
    assert last["state"] == "succeeded" and "written before the server stopped" in last["reason"]


def test_an_incomplete_result_is_removed_and_the_job_runs_again(store: SqliteJobStore,
                                                                results: ResultFiles) -> None:
    running(store, "half", max_attempts=2)
    results.write("half", {"video": Blob(b"v" * 100, "video/mp4")})
    (results.root / "half" / MANIFEST).unlink()  # its files were renamed, its manifest not yet
    recovered = recover(store, results)
    job = store.get("half")
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 1
    assert recovered.orphan_results == ["half"] and not (results.root / "half").exists()


def test_a_cancel_requested_job_is_cancelled_and_its_result_removed(store: SqliteJobStore,
                                                                   results: ResultFiles) -> None:
    running(store, "c")
    store.cancel("c")
    results.write("c", {"video": Blob(b"v", "video/mp4")})
    recover(store, results)
    job = store.get("c")
    assert job is not None and job.state is JobState.CANCELLED and not (results.root / "c").exists()


def test_results_of_unknown_or_unsucceeded_jobs_go_and_succeeded_ones_stay(
        store: SqliteJobStore, results: ResultFiles) -> None:
    store.create(NewJob("ok", "m", {}, {}, True, 1, "r"))
    store.start("ok")
    meta = results.write("ok", {"video": Blob(b"v", "video/mp4")})
    store.finish("ok", JobState.SUCCEEDED, result=meta.to_dict())
    store.create(NewJob("bad", "m", {}, {}, True, 1, "r"))
    store.finish("bad", JobState.FAILED, error={"type": "x", "message": "m", "suggestion": ""})
    results.write("bad", {"video": Blob(b"v", "video/mp4")})
    results.write("stranger", {"video": Blob(b"v", "video/mp4")})
    recovered = recover(store, results)
    assert sorted(recovered.orphan_results) == ["bad", "stranger"]
    assert results.job_ids() == ["ok"] and recovered.jobs == []
