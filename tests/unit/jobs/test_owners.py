"""Jobs have owners (``watchkeeper.jobs.sqlite_store``, ``jobs.sqlite_rows``, ``jobs.quotas``):
the owner filter, Idempotency-Keys per owner, usage counts and quotas in the create's
transaction, and the migration of a schema-1 file, on real SQLite files under tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.errors import Overloaded
from watchkeeper.jobs.inputs_codec import encode_inputs
from watchkeeper.jobs.job import JobState, NewJob, OwnerLimits, OwnerUsage
from watchkeeper.jobs.quotas import MIB, check_quota, result_bytes
from watchkeeper.jobs.sqlite_store import SCHEMA_VERSION, SqliteJobStore

RESULT = {"files": [{"name": "video", "file": "video.mp4", "media_type": "video/mp4", "size": 3000}],
          "outputs": {"n": 1}}


def new_job(job_id: str, owner: str = "web", **over: Any) -> NewJob:
    fields: dict[str, Any] = {"id": job_id, "model": "echo", "inputs": {"text": "hi"}, "params": {},
                              "allow_degrade": True, "max_attempts": 2,
                              "request_id": f"req-{job_id}", "owner": owner}
    fields.update(over)
    return NewJob(**fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def succeed(store: SqliteJobStore, job_id: str, owner: str = "web") -> None:
    store.create(new_job(job_id, owner))
    store.start(job_id)
    store.finish(job_id, JobState.SUCCEEDED, result=RESULT)


# --- owners ------------------------------------------------------------------------------


def test_a_job_keeps_its_owner_and_lists_filter_by_owner(store: SqliteJobStore) -> None:
    store.create(new_job("a", "web"))
    store.create(new_job("b", "batch"))
    store.create(new_job("c"))  # "web" too
    assert store.get("a").owner == "web"  # type: ignore[union-attr]
    assert [j.id for j in store.list_jobs(owner="web")] == ["c", "a"]
    assert [j.id for j in store.list_jobs(owner="batch")] == ["b"]
    assert sorted(j.id for j in store.list_jobs()) == ["a", "b", "c"]
    assert store.list_jobs(owner="nobody") == []


def test_a_new_job_without_an_owner_is_anonymous(store: SqliteJobStore) -> None:
    job, _ = store.create(NewJob("x", "echo", {}, {}, True, 2, "r"))
    assert job.owner == "anonymous"


def test_idempotency_keys_are_per_owner(store: SqliteJobStore) -> None:
    a, a_new = store.create(new_job("a", "web", idempotency_key="k"))
    b, b_new = store.create(new_job("b", "batch", idempotency_key="k"))
    again, again_new = store.create(new_job("c", "web", idempotency_key="k"))
    assert (a_new, b_new, again_new) == (True, True, False)
    assert again.id == "a" and b.id == "b"
    assert store.find_by_key("echo", "k", owner="batch").id == "b"  # type: ignore[union-attr]


# --- usage and quotas ----------------------------------------------------------------------


def test_usage_counts_queued_and_running_jobs_and_result_bytes(store: SqliteJobStore) -> None:
    store.create(new_job("q"))
    store.create(new_job("r"))
    store.start("r")
    succeed(store, "s")
    store.create(new_job("other", "batch"))
    expected_bytes = 3000 + len(b'{"n":1}')
    assert store.usage("web") == OwnerUsage(active_jobs=2, result_bytes=expected_bytes)
    assert store.usage("batch") == OwnerUsage(active_jobs=1, result_bytes=0)
    store.delete("s")  # an expired job's results no longer count
    assert store.usage("web").result_bytes == 0


def test_usage_is_an_indexed_query(store: SqliteJobStore) -> None:
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(state IN ('queued', 'running')), 0), "
        "COALESCE(SUM(result_bytes), 0) FROM jobs WHERE owner = ?", ("web",)).fetchall()
    assert any("jobs_owner" in str(tuple(row)) for row in plan), plan


def test_a_create_over_the_owners_queued_jobs_is_refused(store: SqliteJobStore) -> None:
    limits = OwnerLimits(max_active_jobs=1, max_result_bytes=MIB)
    store.create(new_job("a", limits=limits))
    with pytest.raises(Overloaded, match="1 queued or running") as refused:
        store.create(new_job("b", limits=limits))
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
    assert store.get("b") is None
    store.create(new_job("c", "batch", limits=limits))  # a quota is per owner
    store.cancel("a")
    store.create(new_job("d", limits=limits))  # a finished job frees its place


def test_a_replay_is_never_refused_by_a_quota(store: SqliteJobStore) -> None:
    limits = OwnerLimits(max_active_jobs=1, max_result_bytes=MIB)
    first, _ = store.create(new_job("a", limits=limits, idempotency_key="k"))
    again, created = store.create(new_job("b", limits=limits, idempotency_key="k"))
    assert (again.id, created) == (first.id, False)


def test_a_group_of_creates_counts_its_own_jobs(store: SqliteJobStore) -> None:
    limits = OwnerLimits(max_active_jobs=2, max_result_bytes=MIB)
    results = store.create_many([new_job(n, limits=limits) for n in ("a", "b", "c")])
    assert [r[1] if isinstance(r, tuple) else r.type for r in results] == [True, True, "overloaded"]
    assert sorted(j.id for j in store.list_jobs()) == ["a", "b"]


def test_a_create_over_the_owners_stored_results_is_refused(store: SqliteJobStore) -> None:
    succeed(store, "s")
    with pytest.raises(Overloaded, match="max_result_mb") as refused:
        store.create(new_job("n", limits=OwnerLimits(max_active_jobs=10, max_result_bytes=1000)))
    assert "expire" in refused.value.suggestion


def test_check_quota_names_the_key_and_its_limit() -> None:
    with pytest.raises(Overloaded) as refused:
        check_quota("tiny", OwnerUsage(1, 0), OwnerLimits(1, MIB))
    assert refused.value.message == "key tiny has 1 queued or running jobs (max_queued_jobs 1)"
    check_quota("tiny", OwnerUsage(0, MIB), OwnerLimits(1, MIB))  # at the limit: not over


def test_result_bytes_counts_files_and_outputs() -> None:
    assert result_bytes(None) == 0
    assert result_bytes({"files": [{"size": 10}, {"size": 5}], "outputs": {}}) == 17
    assert result_bytes({"files": ["odd"], "outputs": []}) == 2


# --- migration ---------------------------------------------------------------------------

SCHEMA_1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
    params TEXT NOT NULL, inputs BLOB NOT NULL, allow_degrade INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    request_id TEXT NOT NULL, request_hash TEXT NOT NULL, idempotency_key TEXT,
    started_at REAL, finished_at REAL, progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT, degraded TEXT, result TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (model, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (state, model, created_at);
CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    type TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def write_version_1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    insert = ("INSERT INTO jobs (id, model, state, params, inputs, allow_degrade, created_at, "
              "updated_at, max_attempts, request_id, request_hash, idempotency_key, result) "
              "VALUES (?, 'echo', ?, '{}', ?, 1, ?, ?, 2, 'r', 'h', ?, ?)")
    conn.execute(insert, ("old-q", "queued", encode_inputs({}), 1.0, 1.0, "k", None))
    conn.execute(insert, ("old-s", "succeeded", encode_inputs({}), 2.0, 2.0, None,
                          '{"files": [{"name": "v", "file": "v.mp4", "media_type": "video/mp4", '
                          '"size": 5000}], "outputs": {}}'))
    conn.commit()
    conn.close()


def test_a_version_1_file_is_migrated_in_place_with_its_jobs_owned_by_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    write_version_1(path)
    store = SqliteJobStore(path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert {j.id: j.owner for j in store.list_jobs()} == {"old-q": "anonymous", "old-s": "anonymous"}
        assert store.usage("anonymous") == OwnerUsage(active_jobs=1, result_bytes=5000 + 2)
        assert store.find_by_key("echo", "k", owner="anonymous").id == "old-q"  # type: ignore[union-attr]
        # The Idempotency-Key index is per owner now: another owner's "k" is a new job.
        _, created = store.create(new_job("new", "web", idempotency_key="k"))
        assert created
        indexes = {row[1] for row in store._conn.execute("PRAGMA index_list(jobs)")}
        assert "jobs_idempotency" not in indexes and "jobs_owner_idempotency" in indexes
    finally:
        store.close()
    reopened = SqliteJobStore(path)  # a migrated file opens as a current one
    assert len(reopened.list_jobs()) == 3
    reopened.close()
