"""`watchkeeper doctor` on the JSON log of a real server that met real faults (the chaos
models): a crash, a hang, a raising model, a degraded answer, an out-of-memory and a slowdown
of one params shape, each named in the diagnosis."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.integration.conftest import CHAOS, FAST, ServerFactory, Servers

HUNGRY = {"app": "watchkeeper.apps.chaos:Hungry", "device": "cpu", "timeout_s": 10,
          "memory_limit_mb": 120, "probe_interval_s": 0}


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchkeeper.cli", "doctor", *args],
                          capture_output=True, text=True, timeout=60)


def test_doctor_names_each_fault_of_a_real_run(servers: Servers, serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}, "hungry": HUNGRY})
    for _ in range(4):
        assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    for _ in range(4):  # the same params, now slow
        assert srv.predict("chaos", {"action": "sleep", "seconds": 0.6}).status_code == 200
    srv.predict("chaos", {"action": "crash"})
    srv.wait_state("chaos", "ready")
    assert srv.predict("chaos", {"action": "hang"}).status_code == 504
    srv.wait_state("chaos", "ready")
    assert srv.predict("chaos", {"action": "raise"}).status_code == 500
    assert srv.predict("hungry", {"tag": "big"}, {"mb": 200}).json()["degraded"]
    oom = srv.client.post("/v1/models/hungry/predict", json={
        "inputs": {"tag": "d"}, "params": {"mb": 300, "estimate": False}, "allow_degrade": False})
    assert oom.status_code == 503 and oom.json()["error"]["type"] == "out_of_memory", oom.text
    servers.stop_all()

    result = doctor(str(srv.log_path), "--json")
    assert result.returncode == 1, result.stderr
    found: dict[tuple[str, str], dict[str, Any]] = {
        (f["kind"], f["cause"]): f for f in json.loads(result.stdout)["findings"]}
    assert ("restart", "deadline") in found
    assert any(kind == "restart" and cause.startswith("crash: exit code 13") for kind, cause in found)
    assert {("error", "deadline_exceeded"), ("error", "model_error"), ("error", "out_of_memory"),
            ("degraded", "memory"), ("out_of_memory", "memory"), ("slowdown", '{"scale": 1}')} <= set(found)
    assert '{"estimate": false, "hold_s": 0.0, "mb": 300}' in found[("out_of_memory", "memory")]["detail"]
    plain = doctor(str(srv.log_path))
    assert "suggestion:" in plain.stdout and "\x1b[" not in plain.stdout
    assert "slowest requests:" in plain.stdout
