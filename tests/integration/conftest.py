"""Real servers for the integration tests: ``watchkeeper serve`` in a subprocess.

Each test gets its own server on a free port with its own data dir and a config written
from a dict. Stopping a server (SIGTERM) checks that it exits and that no worker outlives it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

CHAOS = "watchkeeper.apps.chaos:Chaos"
FAST = {"timeout_s": 3, "heartbeat_timeout_s": 2, "probe_interval_s": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # e.g. a model's options, as an inline table
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, models: dict[str, dict[str, Any]], server: dict[str, Any],
                 jobs: dict[str, Any] | None = None) -> None:
    lines = ["[server]"] + [f"{k} = {toml_value(v)}" for k, v in server.items()]
    if jobs:
        lines += ["", "[jobs]"] + [f"{k} = {toml_value(v)}" for k, v in jobs.items()]
    for name, keys in models.items():
        lines += ["", f"[models.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def in_background(fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    """Run ``fn`` in a thread; the returned dict gets ``result`` (or ``error``) when done."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args, **kw)
        except Exception as exc:  # surfaced by the test's own asserts
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    client: httpx.Client = field(init=False)
    seen_workers: set[int] = field(default_factory=set)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. an API key for every call

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=self.headers)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def predict(self, model: str, inputs: dict[str, Any], params: dict[str, Any] | None = None,
                **kw: Any) -> httpx.Response:
        body = {"inputs": inputs, "params": params or {}}
        return self.client.post(f"/v1/models/{model}/predict", json=body, **kw)

    def submit_job(self, model: str, inputs: dict[str, Any], params: dict[str, Any] | None = None,
                   **kw: Any) -> dict[str, Any]:
        body = {"inputs": inputs, "params": params or {}}
        response = self.client.post(f"/v1/models/{model}/jobs", json=body, **kw)
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_job(self, job_id: str, *states: str, timeout_s: float = 30) -> dict[str, Any]:
        """Poll the job until it is in one of ``states`` (default: any final state)."""
        wanted = states or ("succeeded", "failed", "cancelled")
        result: dict[str, Any] = wait_for(
            lambda: (j := self.job(job_id))["state"] in wanted and j, timeout_s)
        return result

    def kill(self) -> None:
        """SIGKILL the front (no shutdown at all); its workers die with it (PDEATHSIG)."""
        self.seen_workers.update(child.pid for child in self.children())
        self.proc.kill()
        self.proc.wait()
        self.client.close()
        assert_all_dead(self.seen_workers)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/health").json()
        for model in body["models"].values():
            self.seen_workers.update(r["pid"] for r in model["replicas"] if r["pid"])
            if model["template"].get("pid"):
                self.seen_workers.add(model["template"]["pid"])
        return body

    def model_health(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = self.health()["models"][model]
        return result

    def worker_pids(self, model: str) -> list[int]:
        return [r["pid"] for r in self.model_health(model)["replicas"] if r["pid"]]

    def wait_ready(self, timeout_s: float = 30, path: str = "/readyz") -> None:
        """Wait until ``path`` answers 200 (``/livez``: the front is up, models may not be)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                return self.get(path).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s)
        self.health()

    def wait_state(self, model: str, *states: str, timeout_s: float = 20) -> dict[str, Any]:
        result: dict[str, Any] = wait_for(
            lambda: (h := self.model_health(model))["state"] in states and h, timeout_s
        )
        return result

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM the server; check it exits and leaves no worker behind."""
        if self.proc.poll() is None:
            try:
                self.health()
            except httpx.HTTPError:
                pass
            self.seen_workers.update(child.pid for child in self.children())
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"server did not stop within {timeout_s} s on SIGTERM")
        self.client.close()
        assert_all_dead(self.seen_workers)
        return self.proc.returncode


def assert_all_dead(pids: set[int], timeout_s: float = 10) -> None:
    def dead() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)

    wait_for(dead, timeout_s)


ServerFactory = Callable[..., Server]


class Servers:
    """Starts ``watchkeeper serve`` processes under one directory and stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Server] = []

    def start(self, models: dict[str, dict[str, Any]], *, server: dict[str, Any] | None = None,
              env: dict[str, str] | None = None, wait: bool = True,
              jobs: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Server:
        n = len(self.started)
        port = free_port()
        config = self.root / f"watchkeeper-{n}.toml"
        server_keys = {"port": port, "data_dir": str(self.root / "data"),
                       "cache_dir": str(self.root / "cache"), "grace_period_s": 5, **(server or {})}
        write_config(config, models, server_keys, jobs)
        log_path = self.root / f"server-{n}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
        full_env.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=full_env,
        )
        srv = Server(proc, f"http://127.0.0.1:{port}", log_path, headers=headers or {})
        self.started.append(srv)
        srv.wait_ready(path="/readyz" if wait else "/livez")
        return srv

    def stop_all(self) -> None:
        for srv in self.started:
            srv.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Servers of one test, sharing its data dir (a restart finds the same jobs); all stopped at the end."""
    started = Servers(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def serve(servers: Servers) -> ServerFactory:
    """Start ``watchkeeper serve`` with the given models; stops every server at the end."""
    return servers.start


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Servers shared by a module whose tests do not break workers."""
    servers = Servers(tmp_path_factory.mktemp("servers"))
    yield servers
    servers.stop_all()
