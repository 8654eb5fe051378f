"""The web UI process under a real front: kept apart from the API, restarted, gone with the front.

Real processes and real signals: ``watchkeeper serve`` with ``[ui] enabled`` (set through
``WK_UI__*``) starts ``python -m watchkeeper.ui``; the tests SIGKILL it, SIGSTOP it, take its
port, SIGKILL the front, and follow ``/health``'s ``ui``, the UI's own ``/livez``, the log and
the metrics, while predict calls on the chaos model must all answer 200. The keeper's mechanics
over a stand-in process: ``tests/unit/supervision/test_ui_keeper.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import CHAOS, FAST, Server, Servers, free_port, wait_for

if importlib.util.find_spec("watchkeeper.ui") is None:  # pragma: no cover
    pytest.skip("the web UI package (watchkeeper.ui) is not there", allow_module_level=True)

MODELS = {"chaos": {"app": CHAOS, **FAST}}
#: A cold UI imports Gradio: on a loaded machine that can take a while.
UI_UP_S = 90


def ui_env(port: int, **more: str) -> dict[str, str]:
    return {"WK_UI__ENABLED": "true", "WK_UI__PORT": str(port), "WK_UI__CHECK_INTERVAL_S": "0.5",
            "WK_UI__CHECK_TIMEOUT_S": "1", "WK_UI__CHECK_FAILURES": "3", **more}


def ui_view(srv: Server) -> dict[str, Any]:
    view: dict[str, Any] = srv.get("/health").json()["ui"]
    return view


def wait_ui_up(srv: Server, other_than: int | None = None, timeout_s: float = UI_UP_S) -> dict[str, Any]:
    view: dict[str, Any] = wait_for(
        lambda: (v := ui_view(srv))["state"] == "up" and v["pid"] != other_than and v, timeout_s,
        interval_s=0.1)
    return view


def ui_livez(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class PredictLoop:
    """Predict calls on the chaos model, one after another in a thread, until stopped."""

    def __init__(self, srv: Server) -> None:
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=srv.url, timeout=10)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._client.post("/v1/models/chaos/predict", json={"inputs": {"action": "ok"}})
                self.statuses.append(response.status_code)
            except httpx.HTTPError as exc:
                self.statuses.append(type(exc).__name__)
            time.sleep(0.02)

    def stop(self) -> list[int | str]:
        self._stop.set()
        self._thread.join(15)
        self._client.close()
        return self.statuses


def log_events(srv: Server, event: str) -> list[dict[str, Any]]:
    found = []
    for line in srv.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def ui_history(srv: Server) -> list[tuple[Any, ...]]:
    """The keeper's log of the UI (start, up, check failures, kills, exits): what a failure shows."""
    lines = srv.logs().splitlines()
    records = [json.loads(line) for line in lines if line.startswith('{"') and '"ui.' in line]
    return [(r.get("event"), r.get("pid"), r.get("reason"), r.get("last_exit") or r.get("error"))
            for r in records if str(r.get("event", "")).startswith("ui.")]


def ui_restarts_metric(srv: Server, reason: str) -> float:
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(f'watchkeeper_ui_restarts_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def with_ui(module_servers: Servers) -> Iterator[tuple[Server, int]]:
    port = free_port()
    srv = module_servers.start(MODELS, env=ui_env(port))
    wait_ui_up(srv)
    yield srv, port


def context_switches(pid: int) -> int:
    """Every thread's context switches so far (voluntary and not) of process ``pid``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if "ctxt_switches" in line:
                total += int(line.split()[1])
    return total


def test_a_ui_nobody_uses_barely_wakes_up(with_ui: tuple[Server, int]) -> None:
    """Each wake-up of the UI takes a core from the API for a moment: Gradio's queue, left to
    itself, looks for work every millisecond (about 1,000 wake-ups a second)."""
    srv, _ = with_ui
    pid = wait_ui_up(srv)["pid"]
    before, started = context_switches(pid), time.monotonic()
    time.sleep(3)
    per_s = (context_switches(pid) - before) / (time.monotonic() - started)
    assert per_s < 150, f"the idle UI process switched {per_s:.0f} times a second"


def test_a_killed_ui_comes_back_while_the_api_answers_every_request(with_ui: tuple[Server, int]) -> None:
    srv, port = with_ui
    before = ui_view(srv)
    assert ui_livez(port) and before["url"] == f"http://127.0.0.1:{port}"
    loop = PredictLoop(srv)
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        after = wait_ui_up(srv, other_than=before["pid"])
        wait_for(lambda: ui_livez(port), 10)
        back_s = time.monotonic() - killed_at
        time.sleep(0.3)
    finally:
        statuses = loop.stop()
    assert statuses and set(statuses) == {200}, statuses
    assert back_s < UI_UP_S
    assert after["restarts"] == before["restarts"] + 1
    assert after["last_exit"] == "signal SIGKILL" and after["last_restart_reason"] == "exit"
    assert ui_restarts_metric(srv, "exit") >= 1
    assert [r for r in log_events(srv, "ui.exit") if r.get("pid") == before["pid"]]


def test_a_stopped_ui_is_killed_and_replaced(with_ui: tuple[Server, int]) -> None:
    srv, port = with_ui
    before = wait_ui_up(srv)
    loop = PredictLoop(srv)
    try:
        os.kill(before["pid"], signal.SIGSTOP)
        after = wait_ui_up(srv, other_than=before["pid"])
        wait_for(lambda: ui_livez(port), 10)
    finally:
        statuses = loop.stop()
    assert statuses and set(statuses) == {200}, statuses
    assert after["last_restart_reason"] == "unresponsive", (after, ui_history(srv))
    assert after["last_exit"].startswith("signal SIGKILL, killed: unresponsive (3 liveness checks failed")
    assert not psutil.pid_exists(before["pid"]) or psutil.Process(before["pid"]).status() == "zombie"
    assert ui_restarts_metric(srv, "unresponsive") >= 1
    assert log_events(srv, "ui.killed")[-1]["reason"] == "unresponsive"


def test_slow_clients_on_the_ui_port_never_slow_the_api(with_ui: tuple[Server, int]) -> None:
    """A client that sends the UI one byte a second, on 200 connections at once: the API (its
    own port, its own process) answers every request meanwhile; the UI serves again after."""
    srv, port = with_ui
    wait_ui_up(srv)
    loop = PredictLoop(srv)
    slow: list[socket.socket] = []
    try:
        for _ in range(200):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(b"G")
            slow.append(conn)
        for byte in b"ET / HTTP/1.1\r\n":
            time.sleep(1.0)
            for conn in slow:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the UI's server gave up on it: fine
    finally:
        for conn in slow:
            conn.close()
        statuses = loop.stop()
    assert statuses and all(s == 200 for s in statuses), sorted(set(map(str, statuses)))
    wait_for(lambda: ui_livez(port), UI_UP_S)


def test_ui_redirects_to_the_ui_at_the_host_name_used(with_ui: tuple[Server, int]) -> None:
    srv, port = with_ui
    response = srv.get("/ui", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"http://127.0.0.1:{port}/"
    response = srv.get("/ui", headers={"Host": f"localhost:{srv.url.rsplit(':', 1)[1]}"},
                       follow_redirects=False)
    assert response.headers["location"] == f"http://localhost:{port}/"
    assert srv.get("/ui", follow_redirects=True).status_code == 200  # the UI answers there


def test_no_ui_table_means_no_ui_process(serve: Any) -> None:
    srv = serve(MODELS)
    body = srv.get("/health").json()
    assert "ui" not in body
    response = srv.get("/ui", follow_redirects=False)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert "--ui" in response.json()["error"]["suggestion"]
    commands = [" ".join(child.cmdline()) for child in srv.children()]
    assert commands and not [c for c in commands if "watchkeeper.ui" in c], commands


def test_a_ui_port_taken_is_said_and_the_api_serves(serve: Any) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        srv = serve(MODELS, env=ui_env(port))
        view = wait_for(lambda: (v := ui_view(srv))["error"] and v, 30)
        assert view["error"] == f"port {port} on 127.0.0.1 is taken by another process"
        assert view["state"] == "restarting" and view["pid"] is None
        (taken, *_) = log_events(srv, "ui.port_taken")
        assert taken["level"] == "error"
        assert taken["port"] == port
        assert srv.get("/readyz").status_code == 200
        assert srv.get("/health").json()["status"] == "ok"  # the UI is not the API
        assert srv.predict("chaos", {"action": "ok"}).status_code == 200
        assert ui_restarts_metric(srv, "port_taken") >= 1
    wait_ui_up(srv)  # the port freed: the UI starts on the next try


def test_no_ui_outlives_a_killed_front(servers: Servers) -> None:
    srv = servers.start(MODELS, env=ui_env(free_port()))
    ui_pid = wait_ui_up(srv)["pid"]
    srv.kill()  # SIGKILL: no shutdown at all
    psutil.wait_procs([psutil.Process(ui_pid)] if psutil.pid_exists(ui_pid) else [], timeout=10)
    assert not psutil.pid_exists(ui_pid) or psutil.Process(ui_pid).status() == "zombie"
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if "watchkeeper.ui" in " ".join(p.info["cmdline"] or ())
                 and f"127.0.0.1:{srv.url.rsplit(':', 1)[1]}" in " ".join(p.info["cmdline"] or ())]
    assert leftovers == []


def test_serve_ui_prints_both_addresses(tmp_path: Path) -> None:
    config = tmp_path / "watchkeeper.toml"
    api_port, port = free_port(), free_port()
    config.write_text(f'[server]\nport = {api_port}\ndata_dir = "{tmp_path / "data"}"\n'
                      f'[ui]\nport = {port}\n[models.chaos]\napp = "{CHAOS}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper.cli", "serve", "--ui", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert lines[0].split()[1:3] == ["API", f"http://127.0.0.1:{api_port}"]
    assert lines[1].split()[1:4] == ["web", "UI", f"http://127.0.0.1:{port}"]
    assert f"http://127.0.0.1:{api_port}/ui" in lines[1]
