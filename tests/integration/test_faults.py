"""Real faults in real worker processes: kills, hangs, spins, stops, crashes, segfaults."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CHAOS, FAST, ServerFactory, in_background, wait_for


def test_sigkill_mid_request_still_answers_200(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    (pid,) = srv.worker_pids("chaos")
    call = in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 1.0, "tag": "kill-1"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    os.kill(pid, signal.SIGKILL)
    call["thread"].join(10)
    response = call["result"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["worker"]["attempts"] == 2
    assert body["worker"]["pid"] != pid
    replica = srv.model_health("chaos")["replicas"][0]
    assert replica["restarts"] == 1
    assert "SIGKILL" in replica["last_exit"]


def test_hang_gets_504_at_the_deadline_and_the_next_request_is_served(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 1.5}})
    (pid,) = srv.worker_pids("chaos")
    started = time.monotonic()
    response = srv.predict("chaos", {"action": "hang", "tag": "hang-1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "deadline_exceeded"
    assert 1.4 < elapsed < 3.0
    ok = srv.predict("chaos", {"action": "ok"})
    assert ok.status_code == 200
    assert ok.json()["worker"]["pid"] != pid
    replica = srv.model_health("chaos")["replicas"][0]
    assert "killed: deadline" in replica["last_exit"]


def test_request_timeout_header_lowers_the_deadline(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 20}})
    started = time.monotonic()
    response = srv.predict("chaos", {"action": "hang", "tag": "hdr"},
                           headers={"X-Request-Timeout": "0.5"})
    assert response.status_code == 504
    assert time.monotonic() - started < 2.5
    bad = srv.predict("chaos", {"action": "ok"}, headers={"X-Request-Timeout": "soon"})
    assert bad.status_code == 400
    assert "X-Request-Timeout" in bad.json()["error"]["message"]


def test_spin_holding_the_gil_is_killed_at_the_deadline(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 1.0}})
    response = srv.predict("chaos", {"action": "spin", "tag": "spin-1"})
    assert response.status_code == 504
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


def test_a_hung_worker_does_not_block_the_other_replica(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "replicas": 2, "timeout_s": 4}})
    hang = in_background(srv.predict, "chaos", {"action": "hang", "tag": "block"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    started = time.monotonic()
    for _ in range(5):
        assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    assert time.monotonic() - started < 2.0
    hang["thread"].join(10)
    assert hang["result"].status_code == 504


def test_sigstop_worker_is_killed_and_replaced_after_heartbeat_timeout(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "heartbeat_timeout_s": 1.5}})
    (pid,) = srv.worker_pids("chaos")
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    health = srv.wait_state("chaos", "recovering", "ready", timeout_s=10)
    wait_for(lambda: (pids := srv.worker_pids("chaos")) and pids[0] != pid, 10)
    assert time.monotonic() - stopped_at >= 1.4
    health = srv.wait_state("chaos", "ready")
    assert "killed: heartbeat" in health["replicas"][0]["last_exit"]
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    assert '"event":"worker.killed"' in srv.logs()


def test_raise_is_a_500_and_the_worker_lives_on(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    (pid,) = srv.worker_pids("chaos")
    response = srv.predict("chaos", {"action": "raise"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "model_error"
    assert "chaos: raised on request" in error["message"]
    assert srv.worker_pids("chaos") == [pid]
    assert srv.predict("chaos", {"action": "ok"}).json()["worker"]["pid"] == pid


def test_input_that_kills_two_workers_is_quarantined(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    poison = {"action": "crash", "tag": "poison"}
    first = srv.predict("chaos", poison)
    assert first.status_code == 422, first.text
    error = first.json()["error"]
    assert error["type"] == "input_quarantined"
    assert "2 workers" in error["message"]
    assert int(first.headers["Retry-After"]) > 0
    # A client retrying the same input is refused at once, without another crash.
    restarts = srv.model_health("chaos")["replicas"][0]["restarts"]
    again = srv.predict("chaos", poison)
    assert again.status_code == 422
    assert srv.model_health("chaos")["replicas"][0]["restarts"] == restarts
    assert srv.model_health("chaos")["quarantined_inputs"] == 1
    # Other inputs are served.
    srv.wait_state("chaos", "ready")
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


def test_segfault_is_seen_as_a_signal_and_recovered(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    response = srv.predict("chaos", {"action": "segfault", "tag": "segv"})
    assert response.status_code == 422
    health = srv.wait_state("chaos", "ready")
    assert "SIGSEGV" in health["replicas"][0]["last_exit"]
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


def test_a_batch_with_a_poison_input_serves_the_others(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_batch_size": 8, "max_wait_ms": 200}})
    calls = [in_background(srv.predict, "chaos", {"action": "ok", "tag": f"b{i}"}) for i in range(3)]
    calls.append(in_background(srv.predict, "chaos", {"action": "crash", "tag": "in-batch"}))
    for call in calls:
        call["thread"].join(15)
    statuses = [c["result"].status_code for c in calls]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 422


def test_health_endpoints_answer_fast_while_the_model_is_busy(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 5}})
    busy = [in_background(srv.predict, "chaos", {"action": "spin", "tag": f"busy{i}"}) for i in range(3)]
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    with httpx.Client(base_url=srv.url) as client:
        for path in ("/livez", "/readyz", "/health", "/health/simple"):
            started = time.perf_counter()
            client.get(path)
            assert time.perf_counter() - started < 2.0, path
    for call in busy:
        call["thread"].join(20)


def test_a_lone_request_is_served_when_batches_wait_for_stragglers(serve: ServerFactory) -> None:
    # Regression: with max_wait_ms, a worker coming ready with an empty queue once broke
    # the loop that reads its messages, and every later answer was lost.
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_wait_ms": 5}})
    for i in range(3):
        response = srv.predict("chaos", {"action": "ok", "tag": f"lone{i}"})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("refill_ms", [0, 1500])
def test_after_a_batch_of_n_fewer_than_n_wait_for_the_answered_clients(
        serve: ServerFactory, refill_ms: int) -> None:
    """Closed-loop clients come back one by one; refill_wait_ms gathers them into one batch."""
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_batch_size": 8, "refill_wait_ms": refill_ms}})

    def send(tag: str) -> dict[str, Any]:
        return in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 0.6, "tag": tag})

    def answers(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for call in calls:
            call["thread"].join(15)
        return [c["result"].json() for c in calls]

    alone = send("alone")  # the worker is idle: it runs alone...
    time.sleep(0.1)
    three = [send(f"three-{i}") for i in range(3)]  # ...and these three wait, then run together
    first = answers([alone, *three])
    assert len({a["timings"]["inference_ms"] for a in first[1:]}) == 1
    second = []
    for i in range(3):  # the three clients come back 20 ms apart (the worker may wait for
        second.append(send(f"again-{i}"))  # them a quarter of a batch's time: 150 ms)
        time.sleep(0.02)
    batches = {a["timings"]["inference_ms"] for a in answers(second)}
    if refill_ms:
        assert len(batches) == 1  # held until all three were back: one batch of 3
    else:
        assert len(batches) >= 2  # the first went alone at once


@pytest.mark.parametrize("refill_ms", [0, 1500])
def test_the_queued_wait_for_the_client_just_answered(serve: ServerFactory, refill_ms: int) -> None:
    """A batch of 1 answered while 2 wait: the 2 wait for its client, and 3 run together
    (without the refill the 2 go at once and the client runs alone: batches that take turns)."""
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_batch_size": 8, "refill_wait_ms": refill_ms}})

    def send(tag: str) -> dict[str, Any]:
        return in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 0.6, "tag": tag})

    def inference_ms(call: dict[str, Any]) -> float:
        call["thread"].join(15)
        return float(call["result"].json()["timings"]["inference_ms"])

    first = send("first")  # the worker is idle: it runs alone...
    time.sleep(0.1)
    queued = [send("queued-0"), send("queued-1")]  # ...while these two wait
    inference_ms(first)
    again = send("again")  # the first client sends again at once
    batches = {inference_ms(call) for call in [*queued, again]}
    if refill_ms:
        assert len(batches) == 1  # the two waited for it: one batch of 3
    else:
        assert len(batches) == 2  # the two went at once; the client's request ran after them


def test_a_refill_keeps_the_worker_idle_for_at_most_a_quarter_of_a_batch(serve: ServerFactory) -> None:
    """Clients that do not come back: the refill gives up after a quarter of a batch's time
    (0.1 s here), not after refill_wait_ms of quiet (3 s)."""
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_batch_size": 8, "refill_wait_ms": 3000}})
    calls = [in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 0.4, "tag": f"c{i}"})
             for i in range(3)]
    for call in calls:
        call["thread"].join(15)
        assert call["result"].status_code == 200
    alone = srv.predict("chaos", {"action": "ok", "tag": "alone"})  # one of three comes back
    assert alone.status_code == 200
    assert alone.json()["timings"]["queue_ms"] < 1000
