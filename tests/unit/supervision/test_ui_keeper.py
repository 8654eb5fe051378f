"""The web UI's keeper over a real stand-in process: started, watched, restarted, stopped.

The stand-in (written below, run with the same interpreter) serves ``GET /livez`` with
``http.server`` as the UI does, and records how it was started (its arguments, process group,
priority, environment), so the keeper's real mechanics run: the launcher, the process group,
the pidfd, the liveness checks over TCP, SIGKILL, SIGSTOP, SIGTERM. The real UI under a real
front: ``tests/integration/test_ui_process.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchkeeper.config import ServerConfig, UiConfig
from watchkeeper.front import metrics
from watchkeeper.supervision import ui_keeper
from watchkeeper.supervision.ui_keeper import UiKeeper, UiState, api_url, ui_url

STAND_IN = r'''
import argparse, http.server, json, os, signal, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="ok")
parser.add_argument("--record", required=True)
parser.add_argument("--api")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
parser.add_argument("--allowed-host", action="append", default=[])
args = parser.parse_args()
child = None
if args.mode == "child":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid
with open(args.record, "a") as out:
    out.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), "pgid": os.getpgid(0),
                          "nice": os.nice(0), "analytics": os.environ.get("GRADIO_ANALYTICS_ENABLED"),
                          "allowed": args.allowed_host, "api": args.api, "child": child}) + "\n")
if args.mode == "exit":
    sys.exit(3)
if args.mode == "silent":
    time.sleep(600)
if args.mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/livez" else b"no"
        self.send_response(200 if self.path == "/livez" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer((args.host, args.port), Handler).serve_forever()
'''

SERVER = ServerConfig(host="127.0.0.1", port=8123, allowed_hosts=["wk.example"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StandIn:
    """Where the stand-in's script and its records live."""

    def __init__(self, root: Path) -> None:
        self.script = root / "stand_in.py"
        self.script.write_text(STAND_IN)
        self.record = root / "record.jsonl"

    def program(self, mode: str = "ok") -> list[str]:
        return [sys.executable, str(self.script), "--mode", mode, "--record", str(self.record)]

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def stand_in(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path)


def ui_config(**kw: Any) -> UiConfig:
    values: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": free_port(),
                              "check_interval_s": 0.2, "check_timeout_s": 0.3, "check_failures": 2,
                              "start_timeout_s": 10.0, "restart_backoff_max_s": 1.0}
    return UiConfig(**(values | kw))


async def until(predicate: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.02)
    return value


def run(keeper: UiKeeper, test: Callable[[], Awaitable[None]]) -> None:
    """Run ``test`` with ``keeper`` kept; the keeper stopped whatever happens."""
    async def main() -> None:
        keeper.start()
        try:
            await test()
        finally:
            await keeper.stop()

    asyncio.run(main())


def restarts(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("watchkeeper_ui_restarts_total", {"reason": reason}) or 0.0


def test_it_starts_the_ui_with_its_arguments_in_a_group_of_its_own(stand_in: StandIn) -> None:
    ui = ui_config()
    keeper = UiKeeper(ui, SERVER, program=stand_in.program())

    async def test() -> None:
        await until(lambda: keeper.state is UiState.UP)
        (record,) = stand_in.records()
        assert record["pid"] == keeper.pid == record["pgid"]  # its own process group
        assert record["argv"][-6:] == ["--host", "127.0.0.1", "--port", str(ui.port),
                                       "--allowed-host", "wk.example"]
        assert record["api"] == "http://127.0.0.1:8123"
        assert record["analytics"] == "False"
        assert record["nice"] >= os.nice(0) + ui_keeper.UI_NICENESS  # below the front
        view = keeper.view()
        assert view["state"] == "up" and view["url"] == f"http://127.0.0.1:{ui.port}"
        assert view["restarts"] == 0 and view["last_exit"] is None and view["error"] is None

    run(keeper, test)
    assert keeper.view()["state"] == "stopped" and keeper.pid is None
    assert not psutil.pid_exists(stand_in.records()[0]["pid"])


def test_a_killed_ui_is_started_again(stand_in: StandIn) -> None:
    keeper = UiKeeper(ui_config(), SERVER, program=stand_in.program())
    before = restarts("exit")

    async def test() -> None:
        first = await until(lambda: keeper.state is UiState.UP and keeper.pid)
        os.kill(first, signal.SIGKILL)
        second = await until(lambda: keeper.state is UiState.UP and keeper.pid != first and keeper.pid)
        view = keeper.view()
        assert view["restarts"] == 1 and view["last_exit"] == "signal SIGKILL"
        assert view["last_restart_reason"] == "exit" and view["last_exit_at"] is not None
        assert second != first

    run(keeper, test)
    assert restarts("exit") == before + 1


def test_a_stopped_ui_is_killed_with_its_group_and_replaced(stand_in: StandIn) -> None:
    keeper = UiKeeper(ui_config(), SERVER, program=stand_in.program("child"))

    async def test() -> None:
        first = await until(lambda: keeper.state is UiState.UP and keeper.pid)
        child = stand_in.records()[0]["child"]
        os.kill(first, signal.SIGSTOP)
        await until(lambda: keeper.state is UiState.UP and keeper.pid != first)
        view = keeper.view()
        assert view["last_restart_reason"] == "unresponsive"
        assert view["last_exit"].startswith("signal SIGKILL, killed: unresponsive (2 liveness checks")
        await until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie")

    run(keeper, test)


def test_a_ui_that_never_answers_is_killed_after_the_start_timeout(stand_in: StandIn) -> None:
    keeper = UiKeeper(ui_config(start_timeout_s=0.5), SERVER, program=stand_in.program("silent"))

    async def test() -> None:
        await until(lambda: keeper.view()["last_restart_reason"] == "start_timeout")
        assert "killed: start_timeout (no answer to /livez within 0.5 s" in keeper.view()["last_exit"]

    run(keeper, test)


def test_restarts_back_off_up_to_the_cap(stand_in: StandIn) -> None:
    keeper = UiKeeper(ui_config(restart_backoff_max_s=1.0), SERVER, program=stand_in.program("exit"))

    async def test() -> None:
        started = time.monotonic()
        await until(lambda: len(stand_in.records()) >= 4, timeout_s=20)
        # waits of 0.5, 1.0 (the cap), 1.0 between the four starts
        assert time.monotonic() - started >= 2.4
        assert keeper.view()["last_exit"] == "exit code 3"
        assert keeper.view()["state"] in ("restarting", "starting")

    run(keeper, test)


def test_a_taken_port_is_said_and_the_ui_starts_once_it_is_free(stand_in: StandIn) -> None:
    ui = ui_config()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", ui.port))
    squatter.listen()
    keeper = UiKeeper(ui, SERVER, program=stand_in.program())
    before = restarts("port_taken")

    async def test() -> None:
        await until(lambda: keeper.view()["error"])
        view = keeper.view()
        assert view["error"] == f"port {ui.port} on 127.0.0.1 is taken by another process"
        assert view["state"] == "restarting" and view["pid"] is None
        assert stand_in.records() == []  # no UI started into a taken port
        squatter.close()
        await until(lambda: keeper.state is UiState.UP, timeout_s=10)
        assert keeper.view()["error"] is None and keeper.view()["restarts"] == 0

    try:
        run(keeper, test)
    finally:
        squatter.close()
    assert restarts("port_taken") > before


def test_stop_kills_a_ui_that_ignores_sigterm(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_keeper, "UI_STOP_TIMEOUT_S", 0.5)
    keeper = UiKeeper(ui_config(), SERVER, program=stand_in.program("stubborn"))

    async def test() -> None:
        await until(lambda: keeper.state is UiState.UP)
        started = time.monotonic()
        await keeper.stop()
        assert 0.4 < time.monotonic() - started < 3
        assert keeper.view()["last_exit"].startswith("signal SIGKILL, killed: stopped")

    run(keeper, test)
    assert not psutil.pid_exists(stand_in.records()[0]["pid"])


def test_the_first_start_waits_for_the_gate(stand_in: StandIn) -> None:
    open_gate = False
    keeper = UiKeeper(ui_config(), SERVER, gate=lambda: open_gate, program=stand_in.program())

    async def test() -> None:
        nonlocal open_gate
        await asyncio.sleep(0.5)
        assert stand_in.records() == [] and keeper.view()["state"] == "starting"
        open_gate = True
        await until(lambda: keeper.state is UiState.UP)

    run(keeper, test)


def test_the_ui_dies_with_its_front(stand_in: StandIn, tmp_path: Path) -> None:
    """A front SIGKILLed takes its UI along (PR_SET_PDEATHSIG, set by the launcher)."""
    port = free_port()
    code = (
        "import asyncio, sys\n"
        "from watchkeeper.config import ServerConfig, UiConfig\n"
        "from watchkeeper.supervision.ui_keeper import UiKeeper\n"
        "async def main():\n"
        f"    UiKeeper(UiConfig(enabled=True, host='127.0.0.1', port={port}), ServerConfig(),\n"
        f"             program={stand_in.program()!r}).start()\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    front = psutil.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not stand_in.records() and time.monotonic() < deadline:
            time.sleep(0.05)
        (record,) = stand_in.records()
        front.kill()
        front.wait(10)
        psutil.wait_procs([psutil.Process(record["pid"])], timeout=10)
        assert not psutil.pid_exists(record["pid"])
    finally:
        if front.poll() is None:
            front.kill()


@pytest.mark.parametrize(("host", "api", "ui"), [
    ("0.0.0.0", "http://127.0.0.1:8000", "http://127.0.0.1:7860"),
    ("::", "http://127.0.0.1:8000", "http://127.0.0.1:7860"),
    ("10.1.2.3", "http://10.1.2.3:8000", "http://10.1.2.3:7860"),
    ("::1", "http://[::1]:8000", "http://[::1]:7860"),
])
def test_addresses(host: str, api: str, ui: str) -> None:
    server = ServerConfig(host=host)
    assert api_url(server) == api
    assert ui_url(UiConfig(), server) == ui
    assert ui_url(UiConfig(host="127.0.0.1", port=9000), server) == "http://127.0.0.1:9000"


def test_ui_restart_reasons_are_a_closed_set() -> None:
    assert set(metrics.UI_RESTART_REASONS) == {"exit", "unresponsive", "start_timeout", "port_taken"}
    with pytest.raises(ValueError, match="undeclared reason"):
        metrics.count_ui_restart("bored")
