"""The single-instance job store: one SQLite file, written through and fsynced.

Runs in the front process, in the one thread the front gives the store (every call blocks on
the disk). Each method of :class:`SqliteJobStore` is one ``BEGIN IMMEDIATE`` transaction
that changes the ``jobs`` row and appends the ``events`` it causes, so a job acknowledged
with 202 is on disk (WAL, ``synchronous=FULL``) before the answer leaves, and survives a
process kill or a power cut. The schema version lives in ``PRAGMA user_version``; a file of
an older version is migrated in place when it is opened (``sqlite_rows.create_or_migrate``).

Jobs have owners (the API key that submitted them): Idempotency-Keys are per owner, lists
and usage counts can be per owner, and a create refuses a job that would put its owner over
its quota (``jobs.quotas``), counted in the same transaction.

The store checks its own file: the path must still name the file it opened (same device
and inode) before each commit and after it, or the write fails with
:class:`StoreFileChanged` (the file was deleted, with its directory perhaps, or replaced:
whatever is committed to the open file would be lost at the next start). A write waits for
the database's write lock (held by another process) for at most ``busy_timeout_s``, then
fails. :meth:`SqliteJobStore.probe` asks the same questions without changing a job.

Inputs are stored without pickle (a data file must never be able to run code): JSON, with
bytes at any depth written as ``{"$bytes": "<base64>"}`` (see :mod:`watchkeeper.jobs.inputs_codec`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from watchkeeper.errors import ConfigError, Overloaded
from watchkeeper.jobs.inputs_codec import decode_inputs
from watchkeeper.jobs.job import TERMINAL_STATES, Job, JobEvent, JobState, NewJob, OwnerUsage
from watchkeeper.jobs.quotas import check_quota, result_bytes
from watchkeeper.jobs.sqlite_rows import (
    COLUMNS,
    SCHEMA_VERSION,
    SERVER_STOPPED,
    TERMINAL,
    append_event,
    clamp,
    crashed_error,
    create_or_migrate,
    event_of,
    file_id,
    file_size,
    insert_job,
    job_by_key,
    job_of,
    json_text,
    not_found,
    usage_of,
)

__all__ = ["MAX_LIST", "SCHEMA_VERSION", "Adopt", "SqliteJobStore", "StoreFileChanged"]

#: Most jobs one ``list`` call returns.
MAX_LIST = 1000
_ADOPTED = "its result was written before the server stopped"

#: At recovery: a running job's complete result on disk (result, degraded), or None.
Adopt = Callable[[Job], tuple[dict[str, Any], dict[str, Any] | None] | None]


class StoreFileChanged(OSError):
    """The file at the store's path is not the one this store opened: deleted (with its
    directory, perhaps) or replaced. What this store writes now is lost at the next start."""

    def __init__(self, message: str, *, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


# --- the store -------------------------------------------------------------------------


class SqliteJobStore:
    """:class:`~watchkeeper.jobs.job.JobStore` in one SQLite file (one server at a time)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()  # progress() holds it around _write()
        self._identity: tuple[int, int] | None = None
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
        self._identity = file_id(self.path)
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
            create_or_migrate(conn, version)

    def _check_file(self) -> None:
        """Raise :class:`StoreFileChanged` unless the path still names the file opened."""
        now = file_id(self.path)
        if now != self._identity:
            what = "is gone (deleted, or its directory was)" if now is None else "was replaced"
            raise StoreFileChanged(f"job store {self.path} {what} while this server used it",
                                   gone=now is None)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so no other writer slips in between; the
        store's file is checked before the commit (else: rolled back) and after it."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._check_file()
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._check_file()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _set_busy_timeout(self, seconds: float) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")

    # --- helpers run inside a transaction ---

    @staticmethod
    def _row(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else job_of(row)

    def _must(self, conn: sqlite3.Connection, job_id: str) -> Job:
        job = self._row(conn, job_id)
        if job is None:
            raise not_found(job_id)
        return job

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
        append_event(conn, job.id, "state", data, now)
        return changed

    # --- JobStore ---

    def create(self, job: NewJob) -> tuple[Job, bool]:
        """Store a queued job; an ``idempotency_key`` its owner already used for this model
        returns that job (whatever its state, never refused by a quota) and False. Raises
        ``Overloaded`` when the new job would put its owner over ``job.limits``."""
        created = self.create_many([job])[0]
        if isinstance(created, Overloaded):
            raise created
        return created

    def create_many(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool] | Overloaded]:
        """``create`` for each job, in one transaction: a burst of submits shares one sync.
        A job over its owner's quota is its error (nothing of it is written)."""
        now = time.time()
        with self._write() as conn:
            return [self._create_in(conn, job, now) for job in jobs]

    def _create_in(self, conn: sqlite3.Connection, job: NewJob,
                   now: float) -> tuple[Job, bool] | Overloaded:  # fmt: skip
        if job.idempotency_key is not None:  # the write lock is held: no other writer races
            found = job_by_key(conn, job.model, job.idempotency_key, job.owner)
            if found is not None:
                return found, False
        if job.limits is not None:
            try:
                check_quota(job.owner, usage_of(conn, job.owner), job.limits)
            except Overloaded as exc:
                return exc
        insert_job(conn, job, job.created_at or now, now)
        append_event(conn, job.id, "state", {"state": "queued", "attempts": 0}, now)
        return self._must(conn, job.id), True


    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return job_of(rows[0]) if rows else None

    def inputs(self, job_id: str) -> dict[str, Any]:
        """The job's inputs exactly as submitted; :class:`NotFound` when there is no such job."""
        rows = self._read("SELECT inputs FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise not_found(job_id)
        return decode_inputs(rows[0]["inputs"])

    def find_by_key(self, model: str, key: str, *, owner: str) -> Job | None:
        """The job an Idempotency-Key of ``owner`` made for ``model``, if any."""
        with self._lock:
            return job_by_key(self._conn, model, key, owner)

    def list_jobs(self, *, state: JobState | None = None, model: str | None = None,
                  owner: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first (``created_at`` descending, then id); at most 1000. ``owner``: that
        owner's jobs only (None: everyone's)."""
        where: list[str] = ["1"]
        args: list[Any] = []
        for column, value in (("state", None if state is None else JobState(state).value),
                              ("model", model), ("owner", owner)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC, id LIMIT ?"
        return [job_of(r) for r in self._read(sql, (*args, max(0, min(limit, MAX_LIST))))]

    def usage(self, owner: str) -> OwnerUsage:
        """Jobs ``owner`` has queued or running, and bytes of its stored results."""
        with self._lock:
            return usage_of(self._conn, owner)

    def queued_models(self) -> dict[str, int]:
        rows = self._read("SELECT model, COUNT(*) AS n FROM jobs WHERE state = ? GROUP BY model",
                          (JobState.QUEUED.value,))
        return {row["model"]: row["n"] for row in rows}

    def queued(self, model: str, limit: int) -> list[Job]:
        """The model's queued jobs, oldest first (ties in submission order)."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM jobs WHERE state = ? AND model = ? "
            "ORDER BY created_at, rowid LIMIT ?",
            (JobState.QUEUED.value, model, max(0, limit)),
        )
        return [job_of(r) for r in rows]

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
        fraction = clamp(fraction)
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
            return append_event(conn, job_id, "progress", data, now)

    def finish(self, job_id: str, state: JobState, *, error: dict[str, Any] | None = None,
               result: dict[str, Any] | None = None, degraded: dict[str, Any] | None = None,
               refund_attempt: bool = False) -> Job:  # fmt: skip
        """running or queued -> ``state`` (terminal; progress 1.0 on success). A job already
        terminal is returned unchanged (the runner may race a cancel). ``refund_attempt``
        takes back the attempt of a run that was refused before it was sent to a worker."""
        state = JobState(state)
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish takes a terminal state, not {state.value!r}")
        with self._write() as conn:
            job = self._must(conn, job_id)
            if job.terminal:
                return job
            event = {k: v for k, v in (("error", error), ("degraded", degraded)) if v is not None}
            columns: dict[str, Any] = {
                "error": json_text(error), "degraded": json_text(degraded),
                "result": json_text(result), "result_bytes": result_bytes(result),
            }  # fmt: skip
            if state is JobState.SUCCEEDED:
                columns["progress"] = 1.0
            if refund_attempt and job.state is JobState.RUNNING:
                columns["attempts"] = max(0, job.attempts - 1)
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

    def recover(self, adopt: Adopt | None = None) -> list[Job]:
        """At start-up: every running job -> cancelled when its cancel was requested;
        succeeded when ``adopt`` finds its complete result on disk (written, but the server
        stopped before the commit); else queued, or failed when it has used all its
        attempts. Returns the jobs changed."""
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state = ? ORDER BY created_at, rowid",
                (JobState.RUNNING.value,),
            ).fetchall()
            return [self._recover(conn, job_of(row), adopt) for row in rows]

    def _recover(self, conn: sqlite3.Connection, job: Job, adopt: Adopt | None) -> Job:
        found = None if job.cancel_requested or adopt is None else adopt(job)
        if found is not None:
            result, degraded = found
            event = {"reason": _ADOPTED, **({"degraded": degraded} if degraded else {})}
            return self._transition(conn, job, JobState.SUCCEEDED, event, progress=1.0,
                                    result=json_text(result), degraded=json_text(degraded),
                                    result_bytes=result_bytes(result))
        if job.cancel_requested or job.attempts < job.max_attempts:
            return self._requeue(conn, job, SERVER_STOPPED, job.attempts)
        error = crashed_error(job)
        return self._transition(conn, job, JobState.FAILED, {"error": error}, error=json_text(error))

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        sql = "SELECT job_id, seq, type, at, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq"
        return [event_of(r) for r in self._read(sql, (job_id, after))]

    def finished_before(self, when: float, limit: int = 1000) -> list[str]:
        """Ids of terminal jobs that finished before ``when``, oldest first."""
        marks = ", ".join("?" for _ in TERMINAL)
        rows = self._read(  # "+state": look the jobs up by finished_at, not by state
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? "
            f"AND +state IN ({marks}) ORDER BY finished_at LIMIT ?",
            (when, *TERMINAL, max(0, limit)),
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

    def stats(self) -> tuple[int, float | None]:
        """Bytes of the store's files (database and write-ahead log), and the ``created_at``
        of the oldest queued job (None when none is queued)."""
        size = file_size(self.path) + file_size(self.path.with_name(self.path.name + "-wal"))
        rows = self._read("SELECT MIN(created_at) AS oldest FROM jobs WHERE state = ?",
                          (JobState.QUEUED.value,))
        return size, rows[0]["oldest"]

    def probe(self, *, write: bool, lock_timeout_s: float) -> None:
        """Raise what a write would raise now, changing no job: the file is not the one
        opened (:class:`StoreFileChanged`), or another process holds the write lock for more
        than ``lock_timeout_s`` (``sqlite3.OperationalError``); with ``write``, a real commit
        is made and synced (a full disk or an I/O error fails it)."""
        with self._lock:
            self._set_busy_timeout(lock_timeout_s)
            try:
                with self._write() as conn:
                    if write:
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            finally:
                self._set_busy_timeout(self._busy_timeout_s)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
