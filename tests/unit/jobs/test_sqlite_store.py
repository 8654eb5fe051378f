"""The SQLite job store (``watchkeeper.jobs.sqlite_store``) on real files under tmp_path."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from watchkeeper.errors import ConfigError, NotFound
from watchkeeper.jobs.inputs_codec import decode_inputs, encode_inputs
from watchkeeper.jobs.job import Job, JobState, NewJob
from watchkeeper.jobs.sqlite_store import SCHEMA_VERSION, SqliteJobStore


def new_job(job_id: str = "j1", **over: Any) -> NewJob:
    fields: dict[str, Any] = {
        "id": job_id,
        "model": "echo",
        "inputs": {"text": "hi"},
        "params": {"steps": 3},
        "allow_degrade": True,
        "max_attempts": 2,
        "request_id": f"req-{job_id}",
    }
    fields.update(over)
    return NewJob(**fields)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs" / "jobs.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(path)
    yield s
    s.close()


def create(store: SqliteJobStore, job_id: str = "j1", **over: Any) -> Job:
    job, created = store.create(new_job(job_id, **over))
    assert created
    return job


def running(store: SqliteJobStore, job_id: str = "j1", **over: Any) -> Job:
    create(store, job_id, **over)
    job = store.start(job_id)
    assert job is not None
    return job


def states(store: SqliteJobStore, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    return [(e.seq, e.type, e.data) for e in store.events(job_id)]


def raw(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL on the file through a second connection (as another process would)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# --- create, get -----------------------------------------------------------------------


def test_create_stores_a_queued_job_and_its_first_event(store: SqliteJobStore) -> None:
    before = time.time()
    job = create(store, idempotency_key="k")
    assert job.state is JobState.QUEUED and job.attempts == 0 and not job.terminal
    assert (job.model, job.params, job.allow_degrade, job.max_attempts) == ("echo", {"steps": 3}, True, 2)
    assert (job.request_id, job.request_hash, job.idempotency_key) == ("req-j1", new_job().request_hash, "k")
    assert before <= job.created_at <= job.updated_at <= time.time()
    assert job.started_at is None and job.finished_at is None
    assert (job.progress, job.message, job.cancel_requested) == (0.0, "", False)
    assert job.error is None and job.degraded is None and job.result is None
    assert store.get("j1") == job
    assert states(store, "j1") == [(1, "state", {"state": "queued", "attempts": 0})]


def test_create_keeps_a_given_created_at(store: SqliteJobStore) -> None:
    assert create(store, created_at=1234.5).created_at == 1234.5


def test_get_and_inputs_of_a_missing_job(store: SqliteJobStore) -> None:
    assert store.get("nope") is None
    with pytest.raises(NotFound, match="nope"):
        store.inputs("nope")
    assert store.events("nope") == []


def test_the_same_id_twice_is_refused(store: SqliteJobStore) -> None:
    create(store)
    with pytest.raises(sqlite3.IntegrityError):
        store.create(new_job("j1"))
    assert len(store.events("j1")) == 1


# --- idempotency -----------------------------------------------------------------------


def test_a_reused_key_returns_the_same_job_without_a_second_row(store: SqliteJobStore, path: Path) -> None:
    first = create(store, idempotency_key="key-1")
    again, created = store.create(new_job("j2", idempotency_key="key-1", inputs={"text": "other"}))
    assert not created and again == first
    assert raw(path, "SELECT id FROM jobs") == [("j1",)]
    assert store.get("j2") is None and store.events("j2") == []
    assert len(store.events("j1")) == 1


def test_a_reused_key_returns_the_job_whatever_its_state(store: SqliteJobStore) -> None:
    running(store, idempotency_key="k")
    done = store.finish("j1", JobState.FAILED, error={"type": "model_error"})
    again, created = store.create(new_job("j2", idempotency_key="k"))
    assert not created and again == done


def test_another_model_or_key_makes_a_new_job(store: SqliteJobStore) -> None:
    create(store, idempotency_key="k")
    other_model, created = store.create(new_job("j2", idempotency_key="k", model="blur"))
    assert created and other_model.id == "j2"
    other_key, created = store.create(new_job("j3", idempotency_key="k2"))
    assert created and other_key.id == "j3"
    for job_id in ("j4", "j5"):  # no key: never the same job
        assert store.create(new_job(job_id))[1]
    assert store.counts()["queued"] == 5


# --- start, progress -------------------------------------------------------------------


def test_start_runs_a_queued_job_and_counts_the_attempt(store: SqliteJobStore) -> None:
    create(store)
    job = store.start("j1")
    assert job is not None and job.state is JobState.RUNNING and job.attempts == 1
    assert job.started_at is not None and job.finished_at is None
    assert states(store, "j1")[1:] == [(2, "state", {"state": "running", "attempts": 1})]


def test_start_refuses_a_job_that_is_not_queued(store: SqliteJobStore) -> None:
    running(store)
    assert store.start("j1") is None  # already running
    create(store, "j2")
    store.cancel("j2")
    assert store.start("j2") is None  # cancelled
    assert store.start("missing") is None
    assert len(store.events("j1")) == 2 and len(store.events("j2")) == 2


def test_progress_of_a_running_job(store: SqliteJobStore) -> None:
    running(store)
    event = store.progress("j1", 0.25, "step 1 of 4")
    assert event is not None
    assert (event.job_id, event.seq, event.type) == ("j1", 3, "progress")
    assert event.data == {"progress": 0.25, "message": "step 1 of 4"}
    assert store.events("j1")[-1] == event
    job = store.get("j1")
    assert job is not None and (job.progress, job.message) == (0.25, "step 1 of 4")


@pytest.mark.parametrize(("given", "stored"), [(-3.0, 0.0), (7.5, 1.0), (float("nan"), 0.0), (1.0, 1.0)])
def test_progress_is_clamped(store: SqliteJobStore, given: float, stored: float) -> None:
    running(store)
    event = store.progress("j1", given, "")
    assert event is not None and event.data["progress"] == stored
    job = store.get("j1")
    assert job is not None and job.progress == stored


def test_progress_of_a_job_not_running_is_ignored(store: SqliteJobStore) -> None:
    create(store)
    assert store.progress("j1", 0.5, "early") is None
    store.finish("j1", JobState.CANCELLED)
    assert store.progress("j1", 0.5, "late") is None
    assert store.progress("missing", 0.5, "") is None
    job = store.get("j1")
    assert job is not None and (job.progress, job.message) == (0.0, "")
    assert [e.type for e in store.events("j1")] == ["state", "state"]


# --- finish ----------------------------------------------------------------------------


def test_finish_succeeded_sets_progress_result_and_finished_at(store: SqliteJobStore) -> None:
    running(store)
    store.progress("j1", 0.4, "half")
    job = store.finish("j1", JobState.SUCCEEDED, result={"files": ["out.png"], "bytes": 10})
    assert job.state is JobState.SUCCEEDED and job.terminal
    assert job.progress == 1.0 and job.finished_at is not None
    assert job.result == {"files": ["out.png"], "bytes": 10} and job.error is None
    assert states(store, "j1")[-1] == (4, "state", {"state": "succeeded", "attempts": 1})


def test_finish_failed_carries_error_and_degraded(store: SqliteJobStore) -> None:
    running(store)
    error = {"type": "model_error", "message": "boom", "suggestion": "see logs"}
    degraded = {"params": {"steps": 1}, "reason": "memory"}
    job = store.finish("j1", JobState.FAILED, error=error, degraded=degraded)
    assert (job.state, job.error, job.degraded, job.progress) == (JobState.FAILED, error, degraded, 0.0)
    assert states(store, "j1")[-1] == (
        3, "state", {"state": "failed", "attempts": 1, "error": error, "degraded": degraded}
    )  # fmt: skip


def test_finish_a_queued_job(store: SqliteJobStore) -> None:
    create(store)
    job = store.finish("j1", JobState.FAILED, error={"type": "deadline_exceeded"})
    assert job.state is JobState.FAILED and job.attempts == 0 and job.finished_at is not None


def test_finish_of_a_terminal_job_changes_nothing(store: SqliteJobStore) -> None:
    create(store)
    cancelled = store.cancel("j1")
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert store.finish("j1", JobState.SUCCEEDED, result={"x": 1}) == cancelled
    assert len(store.events("j1")) == 2


def test_finish_takes_only_a_terminal_state(store: SqliteJobStore) -> None:
    running(store)
    with pytest.raises(ValueError, match="terminal"):
        store.finish("j1", JobState.QUEUED)
    with pytest.raises(NotFound):
        store.finish("missing", JobState.SUCCEEDED)
    assert len(store.events("j1")) == 2


# --- requeue ---------------------------------------------------------------------------


def test_requeue_a_running_job(store: SqliteJobStore) -> None:
    running(store)
    job = store.requeue("j1", reason="worker died")
    assert job.state is JobState.QUEUED and job.attempts == 1 and job.finished_at is None
    expected = (3, "state", {"state": "queued", "attempts": 1, "reason": "worker died"})
    assert states(store, "j1")[-1] == expected
    again = store.start("j1")
    assert again is not None and again.attempts == 2


def test_requeue_can_refund_the_attempt(store: SqliteJobStore) -> None:
    running(store)
    job = store.requeue("j1", reason="shutting down", refund_attempt=True)
    assert job.attempts == 0
    assert store.events("j1")[-1].data == {"state": "queued", "attempts": 0, "reason": "shutting down"}


def test_a_refund_never_goes_below_zero(store: SqliteJobStore, path: Path) -> None:
    running(store)
    raw(path, "UPDATE jobs SET attempts = 0")
    assert store.requeue("j1", reason="r", refund_attempt=True).attempts == 0


def test_requeue_of_a_job_not_running_changes_nothing(store: SqliteJobStore) -> None:
    queued = create(store)
    assert store.requeue("j1", reason="r") == queued
    done = store.finish("j1", JobState.CANCELLED)
    assert store.requeue("j1", reason="r") == done
    assert len(store.events("j1")) == 2
    with pytest.raises(NotFound):
        store.requeue("missing", reason="r")


def test_requeue_of_a_job_whose_cancel_was_requested_cancels_it(store: SqliteJobStore) -> None:
    running(store)
    store.cancel("j1")
    job = store.requeue("j1", reason="worker died")
    assert job.state is JobState.CANCELLED and job.finished_at is not None
    assert store.events("j1")[-1].data == {"state": "cancelled", "attempts": 1, "reason": "worker died"}


# --- cancel ----------------------------------------------------------------------------


def test_cancel_a_queued_job(store: SqliteJobStore) -> None:
    create(store)
    job = store.cancel("j1")
    assert job is not None and job.state is JobState.CANCELLED and job.finished_at is not None
    assert states(store, "j1")[-1] == (2, "state", {"state": "cancelled", "attempts": 0})
    assert store.queued("echo", 10) == []


def test_cancel_a_running_job_requests_it_once(store: SqliteJobStore) -> None:
    running(store)
    job = store.cancel("j1")
    assert job is not None and job.state is JobState.RUNNING and job.cancel_requested
    assert job.finished_at is None
    expected = (3, "state", {"state": "running", "attempts": 1, "cancel_requested": True})
    assert states(store, "j1")[-1] == expected
    assert store.cancel("j1") == job
    assert len(store.events("j1")) == 3
    done = store.finish("j1", JobState.CANCELLED)
    assert done.state is JobState.CANCELLED and done.cancel_requested


def test_cancel_a_terminal_or_missing_job(store: SqliteJobStore) -> None:
    running(store)
    done = store.finish("j1", JobState.SUCCEEDED)
    assert store.cancel("j1") == done
    assert len(store.events("j1")) == 3
    assert store.cancel("missing") is None


# --- recover ---------------------------------------------------------------------------


def test_recover_requeues_running_jobs_and_fails_those_out_of_attempts(store: SqliteJobStore) -> None:
    running(store, "again", max_attempts=2)
    running(store, "spent", max_attempts=1)
    create(store, "waiting")
    running(store, "done")
    store.finish("done", JobState.SUCCEEDED)
    changed = {job.id: job for job in store.recover()}
    assert set(changed) == {"again", "spent"}
    assert changed["again"].state is JobState.QUEUED and changed["again"].attempts == 1
    assert store.events("again")[-1].data == {
        "state": "queued", "attempts": 1, "reason": "the server stopped while it ran"
    }  # fmt: skip
    spent = changed["spent"]
    assert spent.state is JobState.FAILED and spent.finished_at is not None and spent.error is not None
    assert spent.error["type"] == "worker_crashed"
    assert spent.error["message"] == "the server stopped while it ran, 1 times (max_attempts 1)"
    assert spent.error["suggestion"]
    assert store.events("spent")[-1].data == {"state": "failed", "attempts": 1, "error": spent.error}
    assert store.recover() == []
    assert len(store.events("waiting")) == 1 and len(store.events("done")) == 3


def test_recover_cancels_a_job_whose_cancel_was_requested(store: SqliteJobStore) -> None:
    running(store, max_attempts=1)
    store.cancel("j1")
    (job,) = store.recover()
    assert job.state is JobState.CANCELLED


# --- queries ---------------------------------------------------------------------------


def test_queued_is_the_models_queued_jobs_oldest_first(store: SqliteJobStore) -> None:
    create(store, "late", created_at=30.0)
    create(store, "early", created_at=10.0)
    create(store, "tie", created_at=10.0)
    create(store, "other", created_at=5.0, model="blur")
    running(store, "busy", created_at=1.0)
    assert [j.id for j in store.queued("echo", 10)] == ["early", "tie", "late"]
    assert [j.id for j in store.queued("echo", 2)] == ["early", "tie"]
    assert [j.id for j in store.queued("blur", 10)] == ["other"]
    assert store.queued("nothing", 10) == []


def test_queued_models_counts_only_queued_jobs(store: SqliteJobStore) -> None:
    assert store.queued_models() == {}
    create(store, "a")
    create(store, "b")
    create(store, "c", model="blur")
    running(store, "d")
    assert store.queued_models() == {"echo": 2, "blur": 1}


def test_list_is_newest_first_and_filters(store: SqliteJobStore) -> None:
    create(store, "a", created_at=1.0)
    create(store, "b", created_at=2.0, model="blur")
    running(store, "c", created_at=3.0)
    assert [j.id for j in store.list_jobs()] == ["c", "b", "a"]
    assert [j.id for j in store.list_jobs(limit=2)] == ["c", "b"]
    assert [j.id for j in store.list_jobs(state=JobState.QUEUED)] == ["b", "a"]
    assert [j.id for j in store.list_jobs(model="echo")] == ["c", "a"]
    assert [j.id for j in store.list_jobs(state=JobState.RUNNING, model="blur")] == []


def test_list_returns_at_most_1000(store: SqliteJobStore, path: Path) -> None:
    create(store, "seed")
    raw(
        path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100) "
        "INSERT INTO jobs (id, model, state, params, inputs, allow_degrade, created_at, updated_at, "
        "max_attempts, request_id, request_hash) SELECT 'x' || i, model, state, params, inputs, "
        "allow_degrade, created_at + i, updated_at, max_attempts, request_id, request_hash "
        "FROM n, jobs WHERE jobs.id = 'seed'",
    )
    listed = store.list_jobs(limit=5000)
    assert len(listed) == 1000 and listed[0].id == "x1100"


def test_counts_has_every_state(store: SqliteJobStore) -> None:
    assert store.counts() == {s.value: 0 for s in JobState}
    create(store, "q")
    running(store, "r")
    running(store, "s")
    store.finish("s", JobState.SUCCEEDED)
    assert store.counts() == {"queued": 1, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 0}


def test_events_after_returns_only_later_ones(store: SqliteJobStore) -> None:
    running(store)
    for i in range(3):
        store.progress("j1", i / 3, f"step {i}")
    store.finish("j1", JobState.SUCCEEDED)
    assert [e.seq for e in store.events("j1")] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in store.events("j1", after=4)] == [5, 6]
    assert store.events("j1", after=6) == []
    assert all(e.at > 0 for e in store.events("j1"))


def test_finished_before_and_delete(store: SqliteJobStore, path: Path) -> None:
    running(store, "old")
    store.finish("old", JobState.SUCCEEDED)
    create(store, "gone")
    store.cancel("gone")
    cutoff = time.time() + 0.001
    create(store, "waiting")
    running(store, "busy")
    assert store.finished_before(cutoff) == ["old", "gone"]
    assert store.finished_before(cutoff, limit=1) == ["old"]
    assert store.finished_before(0.0) == []
    store.delete("old")
    assert store.get("old") is None and store.events("old") == []
    assert raw(path, "SELECT COUNT(*) FROM events WHERE job_id = 'old'") == [(0,)]
    assert store.finished_before(cutoff) == ["gone"]
    store.delete("missing")
    assert store.get("waiting") is not None


# --- inputs ----------------------------------------------------------------------------


def test_inputs_round_trip_with_nested_bytes_and_unicode(store: SqliteJobStore) -> None:
    inputs = {
        "image": b"\x89PNG\r\n\x1a\n\x00\xff",
        "pages": [b"one", {"scan": b"", "note": "caf\u00e9 \U0001f642 \u4e16\u754c"}, [b"\x00", 1, None]],
        "meta": {"deep": {"deeper": [{"blob": b"\x01\x02"}]}, "n": 1.5, "ok": True},
        "text": "\u202eright-to-left\u200b",
    }
    create(store, inputs=inputs)
    assert store.inputs("j1") == inputs


def test_large_bytes_round_trip(store: SqliteJobStore) -> None:
    big = os.urandom(5 * 1024 * 1024)
    create(store, inputs={"video": big, "list": [big[:10]]})
    back = store.inputs("j1")
    assert back["video"] == big and type(back["video"]) is bytes and back["list"] == [big[:10]]


def test_codec_turns_every_bytes_like_into_bytes() -> None:
    inputs = {"a": bytearray(b"ab"), "m": memoryview(b"cd"), "t": (b"e", "f")}
    assert decode_inputs(encode_inputs(inputs)) == {"a": b"ab", "m": b"cd", "t": [b"e", "f"]}


def test_codec_writes_plain_json_with_base64_bytes() -> None:
    encoded = encode_inputs({"f": b"hi", "n": 1})
    assert orjson.loads(encoded) == {"f": {"$bytes": "aGk="}, "n": 1}
    assert b"pickle" not in encoded


def test_a_clients_own_dollar_dicts_are_not_taken_for_bytes() -> None:
    inputs = {
        "looks_like_bytes": {"$bytes": "aGk="},
        "looks_escaped": {"$dict": {"$bytes": "aGk="}},
        "ref": {"$ref": "#/a"},
        "two_keys": {"$bytes": "aGk=", "x": 1},
        "real": b"hi",
    }
    assert decode_inputs(encode_inputs(inputs)) == inputs


def test_the_request_hash_tells_requests_apart_and_not_submits() -> None:
    base = new_job("a").request_hash
    assert new_job("b", request_id="other", idempotency_key="k").request_hash == base
    for change in ({"model": "other"}, {"params": {"steps": 4}}, {"allow_degrade": False},
                   {"inputs": {"text": "hi!"}}, {"inputs": {"text": b"hi"}}):
        assert new_job("a", **change).request_hash != base, change
    reordered = new_job("a", params={"b": 1, "a": 2}), new_job("a", params={"a": 2, "b": 1})
    assert reordered[0].request_hash == reordered[1].request_hash


def test_inputs_are_encoded_once_and_stored_as_hashed(store: SqliteJobStore) -> None:
    job = new_job(inputs={"f": b"\x00\x01", "n": [1, 2]})
    job.request_hash  # noqa: B018 - encodes the inputs
    assert "stored_inputs" in job.__dict__  # the cached encoding the store writes
    store.create(job)
    (stored,) = store._conn.execute("SELECT inputs FROM jobs WHERE id = ?", (job.id,)).fetchone()
    assert stored == job.stored_inputs and store.inputs(job.id) == {"f": b"\x00\x01", "n": [1, 2]}


def test_codec_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        encode_inputs({"x": object()})
    with pytest.raises(ValueError):
        decode_inputs(b"[1, 2]")


# --- the file --------------------------------------------------------------------------


def test_the_file_is_wal_fsynced_and_versioned(store: SqliteJobStore, path: Path) -> None:
    assert path.parent.is_dir()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    conn = store._conn  # the store's own connection: these pragmas are per connection
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_new_instance_sees_everything(path: Path) -> None:
    first = SqliteJobStore(path)
    running(first, inputs={"f": b"\x00\x01", "s": "\u00e9"}, idempotency_key="k")
    first.progress("j1", 0.5, "half")
    create(first, "j2")
    events = first.events("j1")
    job = first.get("j1")
    first.close()
    second = SqliteJobStore(path)
    try:
        assert second.get("j1") == job
        assert second.events("j1") == events
        assert second.inputs("j1") == {"f": b"\x00\x01", "s": "\u00e9"}
        assert second.create(new_job("j3", idempotency_key="k")) == (job, False)
        assert second.counts()["queued"] == 1
    finally:
        second.close()


def test_a_killed_process_leaves_its_job_running_and_recover_requeues_it(path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from watchkeeper.jobs.job import NewJob
        from watchkeeper.jobs.sqlite_store import SqliteJobStore
        store = SqliteJobStore(Path({str(path)!r}))
        store.create(NewJob(id="j1", model="echo", inputs={{"f": b"\\x00"}}, params={{}},
                            allow_degrade=False, max_attempts=3, request_id="r"))
        store.start("j1")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    store = SqliteJobStore(path)
    try:
        job = store.get("j1")
        assert job is not None and job.state is JobState.RUNNING and job.attempts == 1
        assert store.inputs("j1") == {"f": b"\x00"}
        (recovered,) = store.recover()
        assert recovered.id == "j1" and recovered.state is JobState.QUEUED and recovered.attempts == 1
        assert [e.data["state"] for e in store.events("j1")] == ["queued", "running", "queued"]
    finally:
        store.close()


def test_a_newer_schema_is_refused_naming_the_file(path: Path) -> None:
    SqliteJobStore(path).close()
    raw(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match=str(path)) as info:
        SqliteJobStore(path)
    assert "newer" in info.value.message


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=str(path)):
        SqliteJobStore(path)


def test_a_store_made_in_one_thread_works_from_another(store: SqliteJobStore) -> None:
    results: list[Job | None] = []
    thread = threading.Thread(target=lambda: results.append(create(store)))
    thread.start()
    thread.join()
    assert results[0] is not None and store.get("j1") == results[0]


def test_create_many_stores_a_group_in_one_transaction_and_settles_keys(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    first = NewJob("a", "m", {"x": b"1"}, {}, True, 3, "r1", idempotency_key="k")
    again = NewJob("b", "m", {"x": b"2"}, {}, True, 3, "r2", idempotency_key="k")
    other = NewJob("c", "m", {}, {}, True, 3, "r3")
    (a, a_new), (b, b_new), (c, c_new) = store.create_many([first, again, other])
    assert (a.id, a_new, b.id, b_new, c.id, c_new) == ("a", True, "a", False, "c", True)
    assert sorted(j.id for j in store.list_jobs()) == ["a", "c"]
    assert [e.seq for e in store.events("c")] == [1]


def test_progress_is_written_without_fsync_and_full_sync_comes_back(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.create(NewJob("p", "m", {}, {}, True, 3, "r"))
    store.start("p")
    store.progress("p", 0.5, "half")
    (level,) = store._conn.execute("PRAGMA synchronous").fetchone()
    assert level == 2  # FULL again for the state changes that follow
    assert store.get("p").progress == 0.5  # type: ignore[union-attr]
    reopened = SqliteJobStore(tmp_path / "jobs.sqlite3")
    assert [e.type for e in reopened.events("p")] == ["state", "state", "progress"]


# --- attempts, keys --------------------------------------------------------------------------


def test_finish_can_refund_the_attempt_of_a_run_never_sent(store: SqliteJobStore) -> None:
    running(store)
    job = store.finish("j1", JobState.FAILED, refund_attempt=True,
                       error={"type": "input_quarantined", "message": "m", "suggestion": ""})
    assert job.state is JobState.FAILED and job.attempts == 0


def test_find_by_key_is_per_model_and_owner(store: SqliteJobStore) -> None:
    create(store, "a", idempotency_key="k")
    found = store.find_by_key("echo", "k", owner="anonymous")
    assert found is not None and found.id == "a"
    assert store.find_by_key("other", "k", owner="anonymous") is None
    assert store.find_by_key("echo", "nope", owner="anonymous") is None
    assert store.find_by_key("echo", "k", owner="web") is None
