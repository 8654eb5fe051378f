"""The data dir under attack: a deleted dir, a replaced or locked store file, a full disk,
two servers on one dir, SIGTERM mid-job, a crash between a result's files and its commit.

Real servers, real workers, a real SQLite file. A held write lock is another process's
``BEGIN IMMEDIATE`` on the store (this test process's own connection): the stand-in for a
store whose writes fail (ENOSPC, EIO) that can be ended at will. A full disk is a small tmpfs.
Runs are counted from the outside, by ``watchkeeper_inference_seconds_count`` (every run of
a job that reached its end; probes are off).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    CHAOS,
    FAST,
    Server,
    ServerFactory,
    Servers,
    free_port,
    wait_for,
    write_config,
)

JOB_MODEL = {"app": CHAOS, **FAST, "replicas": 1}
SLOW_MODEL = {**JOB_MODEL, "timeout_s": 60}


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def runs(srv: Server, model: str = "chaos") -> int:
    """Requests of ``model`` that ran to their end (predicts and job runs), from /metrics."""
    text = srv.get("/metrics").text
    found = re.search(rf'^watchkeeper_inference_seconds_count{{model="{model}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def store_view(srv: Server) -> dict[str, Any]:
    """The job store's part of /health ({} when /health has none)."""
    body = srv.get("/health").json()
    store: dict[str, Any] = body.get("jobs", {}).get("store") or {}
    return store


def seen_within(predicate: Callable[[], Any], seconds: float) -> bool:
    """Whether ``predicate()`` was true at some poll within ``seconds`` (never fails the test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (KeyError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    return False


@contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Another process (this one) holds the store's write lock until the block ends."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def db_row(db: Path, job_id: str) -> tuple[str, int]:
    """(state, attempts) of a job, read from the store file itself."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT state, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    return (str(row[0]), int(row[1]))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root, as in CI): a real full disk."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass


# --- 1. the data dir vanishes, is replaced or fills up ----------------------------------------


def delete_data_dir(data: Path) -> None:
    subprocess.run(["rm", "-rf", str(data)], check=True)


def replace_store_file(data: Path) -> None:
    other = data / "restored.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    os.replace(other, data / "jobs.sqlite3")


@pytest.mark.parametrize("lose", [delete_data_dir, replace_store_file])
def test_a_lost_job_store_fails_health_and_refuses_submits(
        serve: ServerFactory, tmp_path: Path, lose: Callable[[Path], None]) -> None:
    srv = serve({"chaos": JOB_MODEL})
    data = tmp_path / "data"
    assert srv.wait_job(srv.submit_job("chaos", {"action": "ok"})["id"])["state"] == "succeeded"
    running = srv.submit_job("chaos", {"action": "sleep", "seconds": 2, "blob_kb": 4})
    srv.wait_job(running["id"], "running")
    lose(data)
    after = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {"action": "ok"}})
    assert after.status_code == 503, f"a submit after the store was lost got {after.status_code}"
    assert int(after.headers["retry-after"]) >= 1
    assert "jobs.sqlite3" in after.json()["error"]["message"]
    health = srv.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "fail"
    store = health.json()["jobs"]["store"]
    assert store["writable"] is False and "jobs.sqlite3" in store["reason"]
    wait_for(lambda: runs(srv) >= 2, 20)  # the running job's run has ended
    time.sleep(1)
    looked = srv.get(f"/v1/jobs/{running['id']}")  # its result had nowhere to go
    assert looked.status_code == 503 and "jobs.sqlite3" in looked.json()["error"]["message"]
    if lose is delete_data_dir:
        assert not data.exists(), "the data dir was re-created behind the operator's back"


def test_a_full_data_dir_fails_health_and_refuses_submits_until_space_is_freed(
        serve: ServerFactory, tiny_disk: Path) -> None:
    srv = serve({"chaos": JOB_MODEL}, server={"data_dir": str(tiny_disk)},
                jobs={"min_free_disk_mb": 0})
    assert srv.wait_job(srv.submit_job("chaos", {"action": "ok"})["id"])["state"] == "succeeded"
    fill(tiny_disk / "filler")
    # The disk reading and the store's own check each run every 2 s: wait for the store's.
    wait_for(lambda: store_view(srv).get("writable") is False, 15)
    assert srv.get("/health").status_code == 503
    store = store_view(srv)
    assert store["writable"] is False and "space" in store["reason"]
    refused = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {"action": "ok"}})
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    (tiny_disk / "filler").unlink()
    wait_for(lambda: store_view(srv).get("writable") is True, 15)
    job = srv.submit_job("chaos", {"action": "ok", "blob_kb": 64})
    done = srv.wait_job(job["id"])
    assert done["state"] == "succeeded" and srv.get(done["urls"]["result"]).content == pattern(65536)


def test_on_a_really_full_disk_a_result_fails_whole_and_new_jobs_are_refused(
        serve: ServerFactory, tiny_disk: Path) -> None:
    srv = serve({"chaos": JOB_MODEL}, server={"data_dir": str(tiny_disk)},
                jobs={"min_free_disk_mb": 3})
    too_big = srv.submit_job("chaos", {"action": "ok", "blob_kb": 6 * 1024})
    failed = srv.wait_job(too_big["id"])
    assert failed["state"] == "failed" and "could not be written" in failed["error"]["message"]
    leftovers = [p for p in (tiny_disk / "results").rglob("*") if p.is_file()]
    assert leftovers == []  # neither a half file nor a temp file
    fits = srv.submit_job("chaos", {"action": "ok", "blob_kb": 2 * 1024})
    assert srv.wait_job(fits["id"])["state"] == "succeeded"
    refused = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {"action": "ok"}})
    assert refused.status_code == 503  # about 2 MiB left now, under 3


# --- 2. store writes that fail ------------------------------------------------------------------


def test_with_the_store_write_lock_held_a_job_runs_once_and_its_attempt_is_counted(
        serve: ServerFactory, tmp_path: Path) -> None:
    srv = serve({"chaos": SLOW_MODEL})
    blocker = threading.Thread(target=srv.predict, args=("chaos", {"action": "sleep", "seconds": 3}),
                               kwargs={"headers": {"X-Request-Timeout": "30"}}, daemon=True)
    blocker.start()
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 10)
    job = srv.submit_job("chaos", {"action": "sleep", "seconds": 1})  # waits for the worker
    with write_lock_held(tmp_path / "data" / "jobs.sqlite3"):
        noticed = seen_within(lambda: store_view(srv)["writable"] is False, 12)
        time.sleep(4)
    blocker.join(30)
    done = srv.wait_job(job["id"], timeout_s=60)
    job_runs = runs(srv) - 1  # the predict ran once
    assert job_runs == done["attempts"] == 1, (
        f"the job ran {job_runs} times and ended {done['state']} with attempts {done['attempts']}")
    assert done["state"] == "succeeded"
    assert noticed, "/health never said the store was failing while its write lock was held"
    assert store_view(srv)["writable"] is True


def test_a_finish_that_cannot_be_written_is_written_when_the_store_comes_back(
        serve: ServerFactory, tmp_path: Path) -> None:
    srv = serve({"chaos": SLOW_MODEL})
    job = srv.submit_job("chaos", {"action": "sleep", "seconds": 2, "blob_kb": 8})
    srv.wait_job(job["id"], "running")
    with write_lock_held(tmp_path / "data" / "jobs.sqlite3"):
        wait_for(lambda: runs(srv) == 1, 20)  # the run has ended; its finish cannot be written
        noticed = seen_within(lambda: store_view(srv)["writable"] is False, 15)
    done = srv.wait_job(job["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["attempts"] == 1 and runs(srv) == 1
    assert srv.get(done["urls"]["result"]).content == pattern(8 * 1024)
    assert noticed, "/health never said the store was failing while its write lock was held"


# --- 3. two servers on one data dir ------------------------------------------------------------


def test_a_second_server_on_the_same_data_dir_refuses_to_start(servers: Servers,
                                                               tmp_path: Path) -> None:
    first = servers.start({"chaos": SLOW_MODEL})
    job = first.submit_job("chaos", {"action": "sleep", "seconds": 3})
    first.wait_job(job["id"], "running")
    port = free_port()
    config = tmp_path / "second.toml"
    write_config(config, {"chaos": SLOW_MODEL}, {"port": port, "data_dir": str(tmp_path / "data"),
                                                  "cache_dir": str(tmp_path / "cache")})
    log = tmp_path / "second.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
    second = subprocess.Popen([sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        code = second.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    output = log.read_text(errors="replace")
    assert code not in (None, 0), f"the second server did not refuse to start (exit {code})"
    assert str(tmp_path / "data") in output and f"pid {first.proc.pid}" in output
    assert '"worker.start"' not in output and "Uvicorn running" not in output
    done = first.wait_job(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1


# --- 4. SIGTERM gives running jobs the grace period -------------------------------------------


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(servers: Servers,
                                                                   tmp_path: Path) -> None:
    srv = servers.start({"chaos": SLOW_MODEL}, server={"grace_period_s": 30})
    job = srv.submit_job("chaos", {"action": "sleep", "seconds": 8, "blob_kb": 4})
    srv.wait_job(job["id"], "running")
    time.sleep(1.5)
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(60)
    state, attempts = db_row(tmp_path / "data" / "jobs.sqlite3", job["id"])
    assert (state, attempts) == ("succeeded", 1), f"after SIGTERM the job was {state}, attempts {attempts}"
    assert '"worker.killed"' not in srv.logs()
    assert (tmp_path / "data" / "results" / job["id"] / "data.bin").read_bytes() == pattern(4096)


# --- 5. a crash between the result's files and its commit -------------------------------------


def test_a_result_written_before_a_crash_is_adopted_at_restart(servers: Servers,
                                                               tmp_path: Path) -> None:
    first = servers.start({"chaos": SLOW_MODEL}, jobs={"max_attempts": 1})
    job = first.submit_job("chaos", {"action": "sleep", "seconds": 1, "blob_kb": 8})
    first.wait_job(job["id"], "running")
    manifest = tmp_path / "data" / "results" / job["id"] / ".result.json"
    with write_lock_held(tmp_path / "data" / "jobs.sqlite3"):
        wait_for(manifest.is_file, 20)  # the files and manifest are there; the commit cannot happen
        first.kill()
    second = servers.start({"chaos": SLOW_MODEL}, jobs={"max_attempts": 1})
    done = second.wait_job(job["id"])
    assert done["state"] == "succeeded", f"the job ended {done['state']}: {done['error']}"
    assert done["attempts"] == 1 and runs(second) == 0  # adopted, not run again
    assert second.get(done["urls"]["result"]).content == pattern(8 * 1024)
    assert '"job.result_adopted"' in second.logs()


# --- 7. /health shows the job store -------------------------------------------------------------


def test_health_shows_the_job_store(serve: ServerFactory) -> None:
    srv = serve({"chaos": SLOW_MODEL})
    first = srv.submit_job("chaos", {"action": "sleep", "seconds": 5})
    srv.submit_job("chaos", {"action": "ok"})  # waits behind the first
    srv.wait_job(first["id"], "running")
    store = wait_for(lambda: (s := store_view(srv)).get("oldest_queued_age_s") and s, 10)
    assert store["writable"] is True and store["reason"] is None
    assert store["db_bytes"] > 0 and store["oldest_queued_age_s"] > 0
    health = srv.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# --- 6. idempotent retries ---------------------------------------------------------------------


def test_an_idempotent_retry_is_a_replay_whatever_changed_since(tiny_disk: Path,
                                                                serve: ServerFactory) -> None:
    """The key is looked up first, and the request hashed as the client sent it: a retry
    after the model's schema filled in defaults, or once new jobs are refused, is a replay."""
    srv = serve({"chaos": JOB_MODEL}, server={"data_dir": str(tiny_disk)},
                jobs={"min_free_disk_mb": 3}, env={"WK_CHAOS_SETUP_DELAY_S": "3"}, wait=False)
    body = {"inputs": {"action": "ok"}}
    key = {"Idempotency-Key": "retry-1"}
    first = srv.client.post("/v1/models/chaos/jobs", json=body, headers=key)
    assert first.status_code == 202 and srv.model_health("chaos")["state"] == "starting"
    srv.wait_ready()  # the model's schema now fills params with defaults
    again = srv.client.post("/v1/models/chaos/jobs", json=body, headers=key)
    assert again.status_code == 202, f"a retry once the model started got {again.status_code}"
    (tiny_disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024))  # under min_free_disk_mb now
    new = srv.client.post("/v1/models/chaos/jobs", json=body)
    assert new.status_code == 503
    replay = srv.client.post("/v1/models/chaos/jobs", json=body, headers=key)
    assert replay.status_code == 202, f"a retry once submits are refused got {replay.status_code}"
    assert first.json()["id"] == again.json()["id"] == replay.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert srv.wait_job(first.json()["id"])["state"] == "succeeded"
