"""Durable jobs against real servers: real workers, real SIGKILLs, a real SQLite file.

The chaos model's ``work`` action sleeps in steps and reports progress after each (so it
can be cancelled between steps); ``sleep`` never reports (so it can only be killed);
``stall`` reports once and then hangs; ``blob_kb`` adds a file output of a known pattern.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, Servers, wait_for
from watchkeeper.front.api_keys import KeyFile, KeyLimits, Scope

JOB_MODEL = {"app": CHAOS, **FAST, "replicas": 1}


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def read_events(client: httpx.Client, job_id: str, last_event_id: int | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Read the job's event stream: (id, event, data) dicts, until it ends or ``limit``."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                    current = {}
                    if limit is not None and len(events) >= limit:
                        break
                continue
            field, _, value = line.partition(": ")
            decode = {"id": int, "data": orjson.loads}.get(field, str)
            current[field] = decode(value)
    return events


# --- the happy path ---------------------------------------------------------------------


def test_job_reports_progress_and_serves_its_file_with_ranges(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    job = srv.submit_job("chaos", {"action": "work", "seconds": 0.5, "steps": 5, "blob_kb": 64})
    assert job["state"] == "queued" and job["urls"]["events"] == f"/v1/jobs/{job['id']}/events"
    events = read_events(srv.client, job["id"])
    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert states == ["queued", "running", "succeeded"]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) == 5
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    done = srv.job(job["id"])
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["result"]["outputs"]["ok"]
    (file,) = done["result"]["files"]
    assert (file["name"], file["size"]) == ("data", 64 * 1024)
    whole = srv.get(done["urls"]["result"])
    assert whole.status_code == 200 and whole.content == pattern(64 * 1024)
    part = srv.get(done["urls"]["result"], headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == pattern(64 * 1024)[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{64 * 1024}"


def test_job_errors_are_clear(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    assert srv.get("/v1/jobs/nope").status_code == 404
    bad = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {}, "params": {"scale": 99}})
    assert bad.status_code == 422 and "params.scale" in bad.text
    assert srv.client.post("/v1/models/nope/jobs", json={"inputs": {}}).status_code == 404
    listed = srv.get("/v1/jobs", params={"state": "sleeping"})
    assert listed.status_code == 422 and "allowed: queued, running" in listed.text
    job = srv.submit_job("chaos", {"action": "work", "seconds": 2, "steps": 4})
    early = srv.get(f"/v1/jobs/{job['id']}/result")
    assert early.status_code == 409 and early.json()["error"]["type"] == "conflict"
    failing = srv.submit_job("chaos", {"action": "raise"})
    failed = srv.wait_job(failing["id"])
    assert failed["state"] == "failed" and failed["error"]["type"] == "model_error"
    assert [j["id"] for j in srv.get("/v1/jobs", params={"state": "failed"}).json()["jobs"]] == [
        failing["id"]]


# --- durability -------------------------------------------------------------------------


def test_job_survives_sigkill_of_its_worker(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    job = srv.submit_job("chaos", {"action": "work", "seconds": 2, "steps": 20, "blob_kb": 8})
    running = srv.wait_job(job["id"], "running")
    wait_for(lambda: srv.job(job["id"])["progress"] > 0, 10)
    (pid,) = srv.worker_pids("chaos")
    os.kill(pid, signal.SIGKILL)
    done = srv.wait_job(job["id"], timeout_s=30)
    assert running["attempts"] == 1
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert srv.get(done["urls"]["result"]).content == pattern(8 * 1024)


def test_job_survives_sigkill_of_the_whole_server(servers: Servers, tmp_path: Path) -> None:
    first = servers.start({"chaos": JOB_MODEL})
    job = first.submit_job("chaos", {"action": "work", "seconds": 3, "steps": 30, "blob_kb": 8})
    queued = first.submit_job("chaos", {"action": "work", "seconds": 0.2, "steps": 2})
    first.wait_job(job["id"], "running")
    first.kill()
    second = servers.start({"chaos": JOB_MODEL})
    done = second.wait_job(job["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert second.get(done["urls"]["result"]).content == pattern(8 * 1024)
    assert second.wait_job(queued["id"])["state"] == "succeeded"
    assert "job.recovered" in second.logs()
    results = tmp_path / "data" / "results" / job["id"]
    # one result and its manifest, no temporary file
    assert sorted(p.name for p in results.iterdir()) == [".result.json", "data.bin"]


def test_jobs_of_a_model_no_longer_served_wait_and_are_named_at_start(servers: Servers) -> None:
    first = servers.start({"chaos": JOB_MODEL, "retired": JOB_MODEL})
    running = first.submit_job("retired", {"action": "work", "seconds": 3, "steps": 30})
    queued = first.submit_job("retired", {"action": "work", "seconds": 0.2, "steps": 2})
    first.wait_job(running["id"], "running")
    first.kill()
    second = servers.start({"chaos": JOB_MODEL})  # the config no longer serves "retired"
    unserved = [line for line in second.logs().splitlines() if '"jobs.unserved"' in line]
    assert len(unserved) == 1 and orjson.loads(unserved[0])["models"] == {"retired": 2}
    assert second.job(queued["id"])["state"] == "queued"  # kept, not failed or deleted
    listed = second.get("/v1/jobs", params={"state": "queued", "model": "retired"}).json()["jobs"]
    assert {job["id"] for job in listed} == {running["id"], queued["id"]}
    cancelled = second.client.delete(f"/v1/jobs/{queued['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


def test_graceful_stop_puts_a_running_job_back_with_its_attempt_refunded(servers: Servers) -> None:
    first = servers.start({"chaos": JOB_MODEL}, server={"grace_period_s": 0.5})
    job = first.submit_job("chaos", {"action": "work", "seconds": 3, "steps": 30})
    first.wait_job(job["id"], "running")
    first.stop()
    second = servers.start({"chaos": JOB_MODEL})
    done = second.wait_job(job["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["attempts"] == 1


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL}, jobs={"max_attempts": 2})
    job = srv.submit_job("chaos", {"action": "crash"})
    done = srv.wait_job(job["id"], timeout_s=30)
    assert done["state"] == "failed" and done["attempts"] == 2
    assert done["error"]["type"] in ("worker_crashed", "input_quarantined")


def test_progress_is_a_heartbeat_a_stalled_job_is_killed_early(serve: ServerFactory) -> None:
    model = {**JOB_MODEL, "timeout_s": 60}
    srv = serve({"chaos": model}, jobs={"max_attempts": 1})
    job = srv.submit_job("chaos", {"action": "stall"})
    started = time.monotonic()
    done = srv.wait_job(job["id"], timeout_s=20)
    assert done["state"] == "failed"
    assert time.monotonic() - started < 15  # heartbeat_timeout_s 2, far below timeout_s 60
    assert '"reason": "heartbeat"' in srv.logs() or '"reason":"heartbeat"' in srv.logs()


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_job_it_never_runs(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    running = srv.submit_job("chaos", {"action": "work", "seconds": 3, "steps": 30})
    queued = srv.submit_job("chaos", {"action": "work", "seconds": 0.2, "steps": 2})
    srv.wait_job(running["id"], "running")
    cancelled = srv.client.delete(f"/v1/jobs/{queued['id']}").json()
    assert cancelled["state"] == "cancelled"
    srv.client.delete(f"/v1/jobs/{running['id']}")
    srv.wait_job(running["id"])
    time.sleep(0.5)
    never = srv.job(queued["id"])
    assert never["state"] == "cancelled" and never["attempts"] == 0 and never["started_at"] is None


@pytest.mark.parametrize("action", ["work", "sleep"])
def test_cancel_a_running_job_frees_its_worker_within_2_s(serve: ServerFactory, action: str) -> None:
    """``work`` stops at its next progress report; ``sleep`` never reports: it is killed."""
    srv = serve({"chaos": {**JOB_MODEL, "timeout_s": 60}})
    job = srv.submit_job("chaos", {"action": action, "seconds": 30, "steps": 300})
    srv.wait_job(job["id"], "running")
    (pid,) = srv.worker_pids("chaos")
    asked = time.monotonic()
    answer = srv.client.delete(f"/v1/jobs/{job['id']}")
    assert answer.status_code == 200 and answer.json()["cancel_requested"]
    done = srv.wait_job(job["id"], timeout_s=5)
    ok = srv.predict("chaos", {"action": "ok"}, headers={"X-Request-Timeout": "2"})
    assert ok.status_code == 200 and time.monotonic() - asked < 2.0
    assert done["state"] == "cancelled" and done["error"]["type"] == "cancelled"
    killed = srv.worker_pids("chaos") != [pid]
    assert killed == (action == "sleep")


# --- idempotency and events -------------------------------------------------------------------


def test_idempotency_key_returns_the_same_job(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    body = {"inputs": {"action": "work", "seconds": 0.2, "steps": 2}}
    first = srv.client.post("/v1/models/chaos/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = srv.client.post("/v1/models/chaos/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {"action": "ok"}},
                            headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and "different request" in other.json()["error"]["message"]
    assert len(srv.get("/v1/jobs").json()["jobs"]) == 1
    bad = srv.client.post("/v1/models/chaos/jobs", json=body, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 400


def test_event_stream_resumes_after_last_event_id(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL})
    job = srv.submit_job("chaos", {"action": "work", "seconds": 1.5, "steps": 10})
    head = read_events(srv.client, job["id"], limit=3)  # then the client goes away mid-job
    assert [e["id"] for e in head] == [1, 2, 3]
    rest = read_events(srv.client, job["id"], last_event_id=head[-1]["id"])
    assert [e["id"] for e in rest] == list(range(4, 4 + len(rest)))
    assert rest[-1]["data"]["state"] == "succeeded"
    everything = read_events(srv.client, job["id"])
    assert everything == head + rest
    assert read_events(srv.client, job["id"], last_event_id=everything[-1]["id"]) == []


# --- disk ---------------------------------------------------------------------------------------


def test_new_jobs_are_refused_when_the_disk_is_nearly_full(serve: ServerFactory) -> None:
    srv = serve({"chaos": JOB_MODEL}, jobs={"min_free_disk_mb": 1e12})
    refused = srv.client.post("/v1/models/chaos/jobs", json={"inputs": {"action": "ok"}})
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert "min_free_disk_mb" in error["message"] and error["details"]["free_mb"] > 0
    assert srv.get("/v1/jobs").json()["jobs"] == []
    wait_for(lambda: srv.health()["jobs"]["accepting"] is False, 10)


def test_finished_jobs_and_their_files_are_deleted_after_result_ttl_h(serve: ServerFactory,
                                                                       tmp_path: Path) -> None:
    srv = serve({"chaos": JOB_MODEL}, jobs={"result_ttl_h": 0.0005})  # 1.8 s
    job = srv.submit_job("chaos", {"action": "ok", "blob_kb": 4})
    assert srv.wait_job(job["id"])["state"] == "succeeded"
    results = tmp_path / "data" / "results" / job["id"]
    assert results.is_dir()
    wait_for(lambda: srv.get(f"/v1/jobs/{job['id']}").status_code == 404, 10)
    assert not results.exists()
    assert "result_ttl_h" in srv.get(f"/v1/jobs/{job['id']}").json()["error"]["message"]
    assert '"jobs.expired"' in srv.logs()


def test_event_streams_end_when_the_server_begins_to_shut_down(serve: ServerFactory) -> None:
    srv = serve({"chaos": {**JOB_MODEL, "timeout_s": 60}}, server={"grace_period_s": 10})
    job = srv.submit_job("chaos", {"action": "work", "seconds": 30, "steps": 30})
    srv.wait_job(job["id"], "running")
    box: dict[str, Any] = {}

    def follow() -> None:
        box["events"] = read_events(httpx.Client(base_url=srv.url), job["id"])
        box["ended"] = time.monotonic()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    asked = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    reader.join(8)
    assert "ended" in box and box["ended"] - asked < 3  # not held for the 10 s grace period
    assert box["events"][0]["data"]["state"] == "queued"
    srv.proc.wait(30)


# --- owners, quotas and what errors say (API keys) ------------------------------------------

KEY_SCOPES = {"client": {Scope.PREDICT, Scope.JOBS}, "other": {Scope.JOBS},
              "ops": {Scope.ADMIN, Scope.READ, Scope.JOBS, Scope.PREDICT}}


@pytest.fixture(scope="module")
def keyed(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, dict[str, str]]:
    """One server with API keys: ``tiny`` may have one job queued or running."""
    keys_file = KeyFile(tmp_path_factory.mktemp("keys") / "keys.json")
    keys = {name: keys_file.add(name, frozenset(scopes)) for name, scopes in KEY_SCOPES.items()}
    keys["tiny"] = keys_file.add("tiny", frozenset({Scope.JOBS}), KeyLimits(max_queued_jobs=1))
    srv = module_servers.start({"chaos": {"app": CHAOS, **FAST, "replicas": 2}},
                               server={"api_keys_file": str(keys_file.path)},
                               headers=as_key(keys["ops"]))
    return srv, keys


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_key_cannot_see_fetch_or_cancel_anothers_job(keyed: tuple[Server, dict[str, str]]) -> None:
    srv, keys = keyed
    mine = httpx.post(srv.url + "/v1/models/chaos/jobs", headers=as_key(keys["client"]),
                      json={"inputs": {"action": "sleep", "seconds": 0.2}}).json()
    assert mine["owner"] == "client"
    job_url = f"{srv.url}/v1/jobs/{mine['id']}"
    for method, url in (("GET", job_url), ("GET", job_url + "/result"), ("GET", job_url + "/events"),
                        ("DELETE", job_url)):
        response = httpx.request(method, url, headers=as_key(keys["other"]))
        assert response.status_code == 404, (method, url, response.text)
    listed = httpx.get(srv.url + "/v1/jobs", headers=as_key(keys["other"])).json()
    assert mine["id"] not in {j["id"] for j in listed["jobs"]}
    assert httpx.get(job_url, headers=as_key(keys["client"])).status_code == 200
    assert httpx.get(job_url, headers=as_key(keys["ops"])).status_code == 200  # admin sees all
    everyone = httpx.get(srv.url + "/v1/jobs", headers=as_key(keys["ops"])).json()
    assert mine["id"] in {j["id"] for j in everyone["jobs"]}


def test_idempotency_keys_are_per_owner(keyed: tuple[Server, dict[str, str]]) -> None:
    srv, keys = keyed
    body = {"inputs": {"tag": "same"}}
    a = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body,
                   headers={"Idempotency-Key": "k-1", **as_key(keys["client"])}).json()
    b = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body,
                   headers={"Idempotency-Key": "k-1", **as_key(keys["other"])}).json()
    assert a["id"] != b["id"]


def test_a_key_over_its_queued_jobs_gets_429(keyed: tuple[Server, dict[str, str]]) -> None:
    srv, keys = keyed
    body = {"inputs": {"action": "sleep", "seconds": 3}}
    first = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body,
                       headers={"Idempotency-Key": "t-1", **as_key(keys["tiny"])})
    assert first.status_code == 202, first.text
    second = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body, headers=as_key(keys["tiny"]))
    assert second.status_code == 429, second.text
    assert int(second.headers["retry-after"]) >= 1
    assert "1 queued or running" in second.json()["error"]["message"]
    replay = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body,
                        headers={"Idempotency-Key": "t-1", **as_key(keys["tiny"])})
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]  # never refused
    other = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body, headers=as_key(keys["client"]))
    assert other.status_code == 202  # a quota is per key


def test_model_errors_are_summarised_for_non_admin_keys(keyed: tuple[Server, dict[str, str]]) -> None:
    srv, keys = keyed
    body = {"inputs": {"action": "raise"}}
    client = httpx.post(srv.url + "/v1/models/chaos/predict", json=body, headers=as_key(keys["client"]))
    assert client.status_code == 500
    error = client.json()["error"]
    assert error["message"] == "the model raised RuntimeError"
    assert client.headers["x-request-id"] in error["suggestion"]
    assert "raised on request" not in client.text  # the exception's own text stays in the log
    admin = httpx.post(srv.url + "/v1/models/chaos/predict", json=body, headers=as_key(keys["ops"]))
    assert admin.status_code == 500 and "raised on request" in admin.text
    # A job's stored error, in its JSON and in its events, too.
    job = httpx.post(srv.url + "/v1/models/chaos/jobs", json=body, headers=as_key(keys["client"])).json()
    wait_for(lambda: srv.get(f"/v1/jobs/{job['id']}").json()["state"] == "failed", 30)
    seen = httpx.get(f"{srv.url}/v1/jobs/{job['id']}", headers=as_key(keys["client"])).json()
    assert seen["error"]["message"] == "the model raised RuntimeError"
    events = httpx.get(f"{srv.url}/v1/jobs/{job['id']}/events", headers=as_key(keys["client"]))
    assert "RuntimeError" in events.text and "raised on request" not in events.text
    assert "raised on request" in srv.get(f"/v1/jobs/{job['id']}").text  # the admin's view
