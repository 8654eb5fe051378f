"""The single-instance job store: one SQLite file, written through and fsynced.

Runs in the front process, in the one thread the front gives the store (every call blocks on
the disk). Each method of :class:`SqliteJobStore` is one ``BEGIN IMMEDIATE`` transaction
that changes the ``jobs`` row and appends the ``events`` it causes, so a job acknowledged
with 202 is on disk (WAL, ``synchronous=FULL``) before the answer leaves, and survives a
process kill or a power cut. The schema version lives in ``PRAGMA user_version``.

Inputs are stored without pickle (a data file must never be able to run code): JSON, with
bytes at any depth written as ``{"$bytes": "<base64>"}`` (see :mod:`watchkeeper.jobs.inputs_codec`).
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from watchkeeper.errors import ConfigError, NotFound
from watchkeeper.jobs.inputs_codec import decode_inputs
from watchkeeper.jobs.job import TERMINAL_STATES, Job, JobEvent, JobState, NewJob

__all__ = ["SCHEMA_VERSION", "SqliteJobStore"]

#: The version of the tables below; a file written by a newer watchkeeper is refused.
SCHEMA_VERSION = 1
#: Most jobs one ``list`` call returns.
MAX_LIST = 1000

_SCHEMA = """
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

#: Every column but ``inputs`` (read only by :meth:`SqliteJobStore.inputs`: it may be large).
_COLUMNS = (
    "id, model, state, params, allow_degrade, created_at, updated_at, attempts, max_attempts, "
    "request_id, request_hash, idempotency_key, started_at, finished_at, progress, message, "
    "cancel_requested, error, degraded, result"
)
_TERMINAL = tuple(s.value for s in TERMINAL_STATES)
_SERVER_STOPPED = "the server stopped while it ran"
_CRASH_SUGGESTION = (
    "The job may be what stopped the server: check the server's logs before submitting it again."
)

# --- rows ------------------------------------------------------------------------------


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _job(row: sqlite3.Row) -> Job:
    fields = dict(zip(row.keys(), tuple(row), strict=True))
    fields.update(
        state=JobState(row["state"]), params=orjson.loads(row["params"]),
        allow_degrade=bool(row["allow_degrade"]), cancel_requested=bool(row["cancel_requested"]),
        error=_unjson(row["error"]), degraded=_unjson(row["degraded"]), result=_unjson(row["result"]),
    )  # fmt: skip
    return Job(**fields)


def _event(row: sqlite3.Row) -> JobEvent:
    return JobEvent(row["job_id"], row["seq"], row["type"], row["at"], orjson.loads(row["data"]))


def _clamp(fraction: float) -> float:
    return 0.0 if math.isnan(fraction) else min(1.0, max(0.0, float(fraction)))


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id!r}", suggestion="GET /v1/jobs lists the jobs kept here.")


def _crashed(job: Job) -> dict[str, Any]:
    return {
        "type": "worker_crashed",
        "message": f"{_SERVER_STOPPED}, {job.attempts} times (max_attempts {job.max_attempts})",
        "suggestion": _CRASH_SUGGESTION,
    }


# --- the store -------------------------------------------------------------------------


class SqliteJobStore:
    """:class:`~watchkeeper.jobs.job.JobStore` in one SQLite file (one server at a time)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # progress() holds it around _write()
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ConfigError(
                f"job store {self.path} cannot be opened: {exc}",
                suggestion="Point jobs at another file, or move this one away.",
            ) from exc
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"job store {self.path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this watchkeeper reads",
                suggestion="Run the watchkeeper version that wrote it, or point jobs at another file.",
            )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so no other writer slips in between."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # --- helpers run inside a transaction ---

    @staticmethod
    def _row(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def _must(self, conn: sqlite3.Connection, job_id: str) -> Job:
        job = self._row(conn, job_id)
        if job is None:
            raise _not_found(job_id)
        return job

    @staticmethod
    def _append(conn: sqlite3.Connection, job_id: str, type_: str, data: dict[str, Any],
                at: float) -> JobEvent:  # fmt: skip
        (seq,) = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()
        conn.execute(
            "INSERT INTO events (job_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, type_, at, orjson.dumps(data).decode()),
        )
        return JobEvent(job_id, seq, type_, at, data)

    def _transition(self, conn: sqlite3.Connection, job: Job, state: JobState,
                    event: dict[str, Any], **columns: Any) -> Job:  # fmt: skip
        """Set ``state`` and ``columns`` (names from this module only), append the state event."""
        now = time.time()
        columns = {"state": state.value, "updated_at": now, **columns}
        if state in TERMINAL_STATES:
            columns["finished_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job.id))
        changed = self._must(conn, job.id)
        data = {"state": state.value, "attempts": changed.attempts, **event}
        self._append(conn, job.id, "state", data, now)
        return changed

    # --- JobStore ---

    def create(self, job: NewJob) -> tuple[Job, bool]:
        """Store a queued job; an ``idempotency_key`` already used for this model returns
        that job (whatever its state) and False. The unique index settles a race."""
        return self.create_many([job])[0]

    def create_many(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        """``create`` for each job, in one transaction: a burst of submits shares one sync."""
        now = time.time()
        with self._write() as conn:
            return [self._create_in(conn, job, now) for job in jobs]

    def _create_in(self, conn: sqlite3.Connection, job: NewJob, now: float) -> tuple[Job, bool]:
        try:
            self._insert(conn, job, job.created_at or now, now)
        except sqlite3.IntegrityError:  # undoes this statement only; the transaction goes on
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE model = ? AND idempotency_key = ?",
                               (job.model, job.idempotency_key)).fetchone()
            if row is None or job.idempotency_key is None:
                raise
            return _job(row), False
        self._append(conn, job.id, "state", {"state": "queued", "attempts": 0}, now)
        return self._must(conn, job.id), True

    @staticmethod
    def _insert(conn: sqlite3.Connection, job: NewJob, created_at: float, now: float) -> None:
        conn.execute(
            "INSERT INTO jobs (id, model, state, params, inputs, allow_degrade, created_at, "
            "updated_at, max_attempts, request_id, request_hash, idempotency_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.model, JobState.QUEUED.value, _json(job.params),
             job.stored_inputs, int(job.allow_degrade), created_at, now,
             job.max_attempts, job.request_id, job.request_hash, job.idempotency_key),
        )  # fmt: skip

    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def inputs(self, job_id: str) -> dict[str, Any]:
        """The job's inputs exactly as submitted; :class:`NotFound` when there is no such job."""
        rows = self._read("SELECT inputs FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise _not_found(job_id)
        return decode_inputs(rows[0]["inputs"])

    def list_jobs(self, *, state: JobState | None = None, model: str | None = None,
                  limit: int = 100) -> list[Job]:
        """Newest first (``created_at`` descending, then id); at most 1000."""
        where: list[str] = ["1"]
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(JobState(state).value)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC, id LIMIT ?"
        return [_job(r) for r in self._read(sql, (*args, max(0, min(limit, MAX_LIST))))]

    def queued_models(self) -> dict[str, int]:
        rows = self._read("SELECT model, COUNT(*) AS n FROM jobs WHERE state = ? GROUP BY model",
                          (JobState.QUEUED.value,))
        return {row["model"]: row["n"] for row in rows}

    def queued(self, model: str, limit: int) -> list[Job]:
        """The model's queued jobs, oldest first (ties in submission order)."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE state = ? AND model = ? "
            "ORDER BY created_at, rowid LIMIT ?",
            (JobState.QUEUED.value, model, max(0, limit)),
        )
        return [_job(r) for r in rows]

    def start(self, job_id: str) -> Job | None:
        """queued -> running, attempts + 1; None when the job is not queued (or not there)."""
        with self._write() as conn:
            job = self._row(conn, job_id)
            if job is None or job.state is not JobState.QUEUED:
                return None
            return self._transition(
                conn, job, JobState.RUNNING, {}, attempts=job.attempts + 1, started_at=time.time()
            )

    def progress(self, job_id: str, fraction: float, message: str) -> JobEvent | None:
        """Record progress (clamped into [0, 1]) of a running job; None when it is not running.

        Written without an fsync (``synchronous=NORMAL`` for this transaction only): a power
        cut may lose the latest progress events, never a state change, since the next FULL
        commit syncs the log with everything before it. A job reports up to 20 a second.
        """
        fraction = _clamp(fraction)
        with self._lock:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                return self._progress(job_id, fraction, message)
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")

    def _progress(self, job_id: str, fraction: float, message: str) -> JobEvent | None:
        with self._write() as conn:
            job = self._row(conn, job_id)
            if job is None or job.state is not JobState.RUNNING:
                return None
            now = time.time()
            conn.execute(
                "UPDATE jobs SET progress = ?, message = ?, updated_at = ? WHERE id = ?",
                (fraction, message, now, job_id),
            )
            data = {"progress": fraction, "message": message}
            return self._append(conn, job_id, "progress", data, now)

    def finish(self, job_id: str, state: JobState, *, error: dict[str, Any] | None = None,
               result: dict[str, Any] | None = None,
               degraded: dict[str, Any] | None = None) -> Job:  # fmt: skip
        """running or queued -> ``state`` (terminal; progress 1.0 on success). A job already
        terminal is returned unchanged (the runner may race a cancel)."""
        state = JobState(state)
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish takes a terminal state, not {state.value!r}")
        with self._write() as conn:
            job = self._must(conn, job_id)
            if job.terminal:
                return job
            event = {k: v for k, v in (("error", error), ("degraded", degraded)) if v is not None}
            columns: dict[str, Any] = {
                "error": _json(error), "degraded": _json(degraded), "result": _json(result)
            }  # fmt: skip
            if state is JobState.SUCCEEDED:
                columns["progress"] = 1.0
            return self._transition(conn, job, state, event, **columns)

    def requeue(self, job_id: str, *, reason: str, refund_attempt: bool = False) -> Job:
        """running -> queued; a job not running is returned unchanged. A running job whose
        cancel was requested is cancelled instead: the client asked for it not to run."""
        with self._write() as conn:
            job = self._must(conn, job_id)
            if job.state is not JobState.RUNNING:
                return job
            attempts = max(0, job.attempts - 1) if refund_attempt else job.attempts
            return self._requeue(conn, job, reason, attempts)

    def _requeue(self, conn: sqlite3.Connection, job: Job, reason: str, attempts: int) -> Job:
        state = JobState.CANCELLED if job.cancel_requested else JobState.QUEUED
        return self._transition(conn, job, state, {"reason": reason}, attempts=attempts)

    def cancel(self, job_id: str) -> Job | None:
        """queued -> cancelled; running -> cancel_requested (once: a second cancel adds no
        event); terminal: unchanged. None when there is no such job."""
        with self._write() as conn:
            job = self._row(conn, job_id)
            if job is None or job.terminal:
                return job
            if job.state is JobState.QUEUED:
                return self._transition(conn, job, JobState.CANCELLED, {})
            if job.cancel_requested:
                return job
            return self._transition(
                conn, job, JobState.RUNNING, {"cancel_requested": True}, cancel_requested=1
            )

    def recover(self) -> list[Job]:
        """At start-up: every running job -> queued, or failed when it has used all its
        attempts (cancelled when its cancel was requested). Returns the jobs changed."""
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY created_at, rowid",
                (JobState.RUNNING.value,),
            ).fetchall()
            return [self._recover(conn, _job(row)) for row in rows]

    def _recover(self, conn: sqlite3.Connection, job: Job) -> Job:
        if job.cancel_requested or job.attempts < job.max_attempts:
            return self._requeue(conn, job, _SERVER_STOPPED, job.attempts)
        error = _crashed(job)
        return self._transition(conn, job, JobState.FAILED, {"error": error}, error=_json(error))

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        sql = "SELECT job_id, seq, type, at, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq"
        return [_event(r) for r in self._read(sql, (job_id, after))]

    def finished_before(self, when: float, limit: int = 1000) -> list[str]:
        """Ids of terminal jobs that finished before ``when``, oldest first."""
        marks = ", ".join("?" for _ in _TERMINAL)
        rows = self._read(  # "+state": look the jobs up by finished_at, not by state
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? "
            f"AND +state IN ({marks}) ORDER BY finished_at LIMIT ?",
            (when, *_TERMINAL, max(0, limit)),
        )
        return [r["id"] for r in rows]

    def delete(self, job_id: str) -> None:
        """Remove the job and its events (nothing when there is no such job)."""
        with self._write() as conn:
            conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for row in self._read("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def close(self) -> None:
        with self._lock:
            self._conn.close()
