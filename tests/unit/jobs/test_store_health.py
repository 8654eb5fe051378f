"""The job store checks itself (``SqliteJobStore`` on real files), and ``StoreHealth`` keeps
what the checks and failed writes found. A held write lock is a second connection's
``BEGIN IMMEDIATE``, as another process's would be; a full disk is a small tmpfs."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchkeeper.errors import Unavailable
from watchkeeper.front import metrics
from watchkeeper.jobs.job import JobState, NewJob
from watchkeeper.jobs.sqlite_store import SqliteJobStore, StoreFileChanged
from watchkeeper.jobs.store_health import StoreFault, StoreHealth, classify


def new_job(job_id: str) -> NewJob:
    return NewJob(job_id, "m", {"x": 1}, {}, True, 3, f"req-{job_id}")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(path, busy_timeout_s=0.2)
    yield s
    s.close()


# --- the store checks its own file ------------------------------------------------------------


def test_a_deleted_store_refuses_to_commit(store: SqliteJobStore, path: Path) -> None:
    store.create(new_job("before"))
    shutil.rmtree(path.parent)
    with pytest.raises(StoreFileChanged, match="is gone") as caught:
        store.create(new_job("after"))
    assert caught.value.gone
    assert store.get("after") is None  # rolled back, even in the open (unlinked) file
    with pytest.raises(StoreFileChanged):
        store.probe(write=False, lock_timeout_s=0.1)


def test_a_replaced_store_refuses_to_commit(store: SqliteJobStore, path: Path) -> None:
    other = path.with_name("other.sqlite3")
    sqlite3.connect(other).close()
    os.replace(other, path)
    with pytest.raises(StoreFileChanged, match="was replaced") as caught:
        store.create(new_job("after"))
    assert not caught.value.gone


def test_a_held_write_lock_fails_writes_and_the_probe_then_clears(store: SqliteJobStore,
                                                                   path: Path) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.create(new_job("j"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.probe(write=False, lock_timeout_s=0.05)
    assert store.get("j") is None
    other.execute("ROLLBACK")
    other.close()
    store.probe(write=True, lock_timeout_s=0.05)
    assert store.create(new_job("j"))[1]


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_a_write_and_is_classified_full(tiny: Path) -> None:
    store = SqliteJobStore(tiny / "jobs.sqlite3")
    try:
        with open(tiny / "filler", "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"\0" * 4096)
                    out.flush()
            except OSError:
                pass
        big = NewJob("big", "m", {"blob": b"x" * 200_000}, {}, True, 3, "r")
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.create(big)
        assert classify(caught.value) is StoreFault.FULL
        (tiny / "filler").unlink()
        store.probe(write=True, lock_timeout_s=0.1)
        assert store.create(big)[0].state is JobState.QUEUED
    finally:
        store.close()


def test_stats_are_the_files_size_and_the_oldest_queued_job(store: SqliteJobStore) -> None:
    size, oldest = store.stats()
    assert size > 0 and oldest is None
    store.create(NewJob("a", "m", {}, {}, True, 3, "r", created_at=100.0))
    store.create(NewJob("b", "m", {}, {}, True, 3, "r", created_at=50.0))
    store.start("b")
    assert store.stats()[1] == 100.0


# --- classify and StoreHealth ------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "fault"), [
    (StoreFileChanged("x", gone=True), StoreFault.GONE),
    (StoreFileChanged("x", gone=False), StoreFault.REPLACED),
    (FileNotFoundError(errno.ENOENT, "the results directory is gone"), StoreFault.GONE),
    (OSError(errno.ENOSPC, "No space left on device"), StoreFault.FULL),
    (OSError(errno.EROFS, "Read-only file system"), StoreFault.READ_ONLY),
    (OSError(errno.EIO, "Input/output error"), StoreFault.IO_ERROR),
    (sqlite3.OperationalError("database is locked"), StoreFault.BUSY),
    (sqlite3.OperationalError("database or disk is full"), StoreFault.FULL),
    (sqlite3.OperationalError("attempt to write a readonly database"), StoreFault.READ_ONLY),
    (sqlite3.DatabaseError("disk I/O error"), StoreFault.IO_ERROR),
])
def test_classify(exc: BaseException, fault: StoreFault) -> None:
    assert classify(exc) is fault


def test_every_fault_is_a_declared_metric_label() -> None:
    assert tuple(f.value for f in StoreFault) == metrics.STORE_FAULTS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_transient_fault_clears_when_a_check_passes() -> None:
    clock = Clock()
    health = StoreHealth(Path("/d/jobs.sqlite3"), clock)
    assert health.writable and health.view()["reason"] is None
    health.failed(sqlite3.OperationalError("database is locked"))
    clock.now += 5
    health.failed(sqlite3.OperationalError("database is locked"))  # the same fault: same since
    view = health.view()
    assert not view["writable"] and view["fault"] == "busy" and view["since"] == 1000.0
    assert "/d/jobs.sqlite3" in view["reason"] and "locked by another process" in view["reason"]
    refusal = health.refusal()
    assert isinstance(refusal, Unavailable) and refusal.retry_after_s == 10.0
    assert "/d/jobs.sqlite3" in refusal.message and refusal.details["fault"] == "busy"
    health.passed()
    assert health.writable


def test_a_lost_store_stays_failing_until_a_restart() -> None:
    health = StoreHealth(Path("/d/jobs.sqlite3"), Clock())
    health.failed(StoreFileChanged("job store /d/jobs.sqlite3 is gone", gone=True))
    health.failed(sqlite3.OperationalError("database is locked"))  # does not hide the loss
    health.passed()
    assert not health.writable and health.view()["fault"] == "gone"
    assert health.refusal().retry_after_s == 60.0


def test_oldest_queued_age_is_measured_from_the_clock() -> None:
    clock = Clock()
    health = StoreHealth(Path("/d/jobs.sqlite3"), clock)
    health.measured(4096, 990.0)
    assert health.view()["oldest_queued_age_s"] == 10.0 and health.view()["db_bytes"] == 4096
    health.measured(4096, None)
    assert health.view()["oldest_queued_age_s"] is None
