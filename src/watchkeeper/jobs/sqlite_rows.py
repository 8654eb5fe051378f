"""The SQLite job store's tables, and its rows as jobs and events.

Runs in the front process, in the job store's thread (``jobs.sqlite_store`` is the only
user). Plain functions: the schema text and its migration from older versions, the column
list, the insert of a new job, an owner's usage, the conversions of a row to a
:class:`~watchkeeper.jobs.job.Job` or :class:`~watchkeeper.jobs.job.JobEvent`, and the
identity and size of the store's files (one ``stat`` each).
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from watchkeeper.errors import NotFound
from watchkeeper.jobs.job import ANONYMOUS_OWNER, TERMINAL_STATES, Job, JobEvent, JobState, NewJob, OwnerUsage
from watchkeeper.jobs.quotas import result_bytes

__all__ = ["COLUMNS", "SCHEMA", "SCHEMA_VERSION", "SERVER_STOPPED", "TERMINAL", "append_event",
           "clamp", "crashed_error", "create_or_migrate", "event_of", "file_id", "file_size",
           "insert_job", "job_by_key", "job_of", "json_text", "not_found", "usage_of"]

#: The version of the tables below; a file written by a newer watchkeeper is refused, one
#: written by an older one is migrated in place when it is opened.
#: 1: the first. 2: jobs have an ``owner`` (Idempotency-Keys per owner) and ``result_bytes``.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
    params TEXT NOT NULL, inputs BLOB NOT NULL, allow_degrade INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    request_id TEXT NOT NULL, request_hash TEXT NOT NULL, idempotency_key TEXT,
    started_at REAL, finished_at REAL, progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT, degraded TEXT, result TEXT,  -- JSON text
    owner TEXT NOT NULL DEFAULT 'anonymous', result_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency
    ON jobs (owner, model, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, state, result_bytes);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, model, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    type TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


def create_or_migrate(conn: sqlite3.Connection, version: int) -> None:
    """In the open's write transaction: bring a file of schema ``version`` (0: a new file)
    to :data:`SCHEMA_VERSION`, keeping every job."""
    if version == 1:
        _migrate_1_to_2(conn)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Jobs get owners (every old job: the anonymous owner) and their results' sizes; the
    Idempotency-Key index becomes per owner (the new one is made by the schema)."""
    conn.execute(f"ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS_OWNER}'")
    conn.execute("ALTER TABLE jobs ADD COLUMN result_bytes INTEGER NOT NULL DEFAULT 0")
    conn.execute("DROP INDEX IF EXISTS jobs_idempotency")
    rows = conn.execute("SELECT id, result FROM jobs WHERE result IS NOT NULL").fetchall()
    conn.executemany("UPDATE jobs SET result_bytes = ? WHERE id = ?",
                     [(result_bytes(_unjson(result)), job_id) for job_id, result in rows])


def insert_job(conn: sqlite3.Connection, job: NewJob, created_at: float, now: float) -> None:
    conn.execute(
        "INSERT INTO jobs (id, model, state, params, inputs, allow_degrade, created_at, "
        "updated_at, max_attempts, request_id, request_hash, idempotency_key, owner) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (job.id, job.model, JobState.QUEUED.value, json_text(job.params),
         job.stored_inputs, int(job.allow_degrade), created_at, now,
         job.max_attempts, job.request_id, job.request_hash, job.idempotency_key, job.owner),
    )  # fmt: skip


def job_by_key(conn: sqlite3.Connection, model: str, key: str, owner: str) -> Job | None:
    """The job an Idempotency-Key of ``owner`` made for ``model``, if any."""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE owner = ? AND model = ? AND idempotency_key = ?",
        (owner, model, key),
    ).fetchone()
    return None if row is None else job_of(row)


def append_event(conn: sqlite3.Connection, job_id: str, type_: str, data: dict[str, Any],
                 at: float) -> JobEvent:  # fmt: skip
    """Append the job's next event (``seq``: one more than its last)."""
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
    ).fetchone()
    conn.execute(
        "INSERT INTO events (job_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?)",
        (job_id, seq, type_, at, orjson.dumps(data).decode()),
    )
    return JobEvent(job_id, seq, type_, at, data)


def usage_of(conn: sqlite3.Connection, owner: str) -> OwnerUsage:
    """What ``owner`` holds: one query on the covering index ``jobs_owner``."""
    row = conn.execute(
        "SELECT COALESCE(SUM(state IN (?, ?)), 0), COALESCE(SUM(result_bytes), 0) "
        "FROM jobs WHERE owner = ?", (*_ACTIVE, owner),
    ).fetchone()
    return OwnerUsage(active_jobs=int(row[0]), result_bytes=int(row[1]))


#: Every column but ``inputs`` (read only by ``SqliteJobStore.inputs``: it may be large).
COLUMNS = (
    "id, model, state, params, allow_degrade, created_at, updated_at, attempts, max_attempts, "
    "request_id, request_hash, idempotency_key, started_at, finished_at, progress, message, "
    "cancel_requested, error, degraded, result, owner"
)
TERMINAL = tuple(s.value for s in TERMINAL_STATES)
SERVER_STOPPED = "the server stopped while it ran"
_CRASH_SUGGESTION = (
    "The job may be what stopped the server: check the server's logs before submitting it again."
)


def json_text(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def job_of(row: sqlite3.Row) -> Job:
    fields = dict(zip(row.keys(), tuple(row), strict=True))
    fields.update(
        state=JobState(row["state"]), params=orjson.loads(row["params"]),
        allow_degrade=bool(row["allow_degrade"]), cancel_requested=bool(row["cancel_requested"]),
        error=_unjson(row["error"]), degraded=_unjson(row["degraded"]), result=_unjson(row["result"]),
    )  # fmt: skip
    return Job(**fields)


def event_of(row: sqlite3.Row) -> JobEvent:
    return JobEvent(row["job_id"], row["seq"], row["type"], row["at"], orjson.loads(row["data"]))


def clamp(fraction: float) -> float:
    return 0.0 if math.isnan(fraction) else min(1.0, max(0.0, float(fraction)))


def not_found(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id!r}", suggestion="GET /v1/jobs lists the jobs kept here.")


def crashed_error(job: Job) -> dict[str, Any]:
    return {
        "type": "worker_crashed",
        "message": f"{SERVER_STOPPED}, {job.attempts} times (max_attempts {job.max_attempts})",
        "suggestion": _CRASH_SUGGESTION,
    }


def file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
