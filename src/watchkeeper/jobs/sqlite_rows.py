"""The SQLite job store's tables, and its rows as jobs and events.

Runs in the front process, in the job store's thread (``jobs.sqlite_store`` is the only
user). Plain functions: the schema text, the column list, the conversions of a row to a
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
from watchkeeper.jobs.job import TERMINAL_STATES, Job, JobEvent, JobState

__all__ = ["COLUMNS", "SCHEMA", "SCHEMA_VERSION", "SERVER_STOPPED", "TERMINAL", "clamp",
           "crashed_error", "event_of", "file_id", "file_size", "job_of", "json_text", "not_found"]

#: The version of the tables below; a file written by a newer watchkeeper is refused.
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
    params TEXT NOT NULL, inputs BLOB NOT NULL, allow_degrade INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    request_id TEXT NOT NULL, request_hash TEXT NOT NULL, idempotency_key TEXT,
    started_at REAL, finished_at REAL, progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT, degraded TEXT, result TEXT  -- JSON text
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (model, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, model, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    type TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

#: Every column but ``inputs`` (read only by ``SqliteJobStore.inputs``: it may be large).
COLUMNS = (
    "id, model, state, params, allow_degrade, created_at, updated_at, attempts, max_attempts, "
    "request_id, request_hash, idempotency_key, started_at, finished_at, progress, message, "
    "cancel_requested, error, degraded, result"
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
