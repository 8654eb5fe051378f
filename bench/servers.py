"""The servers that bench/serving.py compares, and how each is started, checked and stopped.

watchkeeper (``watchkeeper serve`` via common.BenchServer) and the baselines in
bench/baselines (LitServe, plain FastAPI), each in its own process group on 127.0.0.1; the
entailment workload has watchkeeper only (its limit is bench/direct_entailment.py).
A :class:`Spec` says how to start one, where to POST and what a right answer looks like.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, free_port
from direct_embed import TEXT
from loadgen import CORES, tree, wrk

BASELINES = Path(__file__).resolve().parent / "baselines"


def chaos_body(sleep_ms: float = 0) -> dict[str, Any]:
    """The chaos model's request: ``ok``, or ``sleep`` for ``sleep_ms`` (a stand-in for a model)."""
    inputs = {"action": "sleep", "seconds": sleep_ms / 1000} if sleep_ms else {"action": "ok"}
    return {"inputs": inputs}


def entailment_body() -> dict[str, Any]:
    """The entailment request: the probe scene (a 128-pixel PNG, base64) and a sentence."""
    from direct_entailment import TEXT as SENTENCE

    from watchkeeper.apps.entailment.app import probe_picture
    from watchkeeper.worker import images

    picture = base64.b64encode(images.png(probe_picture()).data).decode()
    return {"inputs": {"image": picture, "text": SENTENCE}}


BODIES = {"embed": {"inputs": {"text": TEXT}}, "noop": chaos_body(), "entailment": entailment_body()}
READY_TIMEOUT_S = 180.0  # start-up: import torch, load the model, warm up
STOP_TIMEOUT_S = 15.0  # SIGTERM -> SIGKILL of a baseline's process group
WARMUP_S = 3  # wrk at the highest concurrency, not counted
THREADS_ENV = "BENCH_THREADS"  # read by bench/baselines/minilm.py

#: watchkeeper's embed configuration (see bench/serving.py; ``--tune`` measures the others).
WK_EMBED: dict[str, Any] = {"app": "watchkeeper.apps.embed:Embed", "replicas": 1, "threads": CORES,
                            "probe_interval_s": 0, "max_queue": 256}
WK_ENTAILMENT: dict[str, Any] = {"app": "watchkeeper.apps.entailment:Entailment", "replicas": 1,
                                 "threads": CORES, "probe_interval_s": 0, "max_queue": 256}
WK_CHAOS: dict[str, Any] = {"app": "watchkeeper.apps.chaos:Chaos", "probe_interval_s": 0, "max_queue": 256}


class Server(Protocol):
    url: str
    pid: int
    log_path: Path

    def wait_ready(self) -> None: ...
    def stop(self) -> None: ...


class Watchkeeper:
    """``watchkeeper serve`` (common.BenchServer) serving one model; ready when /readyz says so."""

    def __init__(self, model: str, keys: dict[str, Any]) -> None:
        self.srv = BenchServer({model: keys})
        self.url, self.pid = self.srv.url, self.srv.proc.pid
        self.log_path = self.srv.dir / "server.log"

    def wait_ready(self) -> None:
        self.srv.wait_ready(READY_TIMEOUT_S)

    def stop(self) -> None:
        self.srv.stop()


class Baseline:
    """A baseline server in its own process group; ``{port}`` in its command is replaced."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], ready_path: str = "/health") -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(a).replace("{port}", str(port)) for a in cmd], stdout=self._log,
            stderr=subprocess.STDOUT, env=os.environ | env, cwd=workdir, start_new_session=True)
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        deadline = time.perf_counter() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: see {self.log_path}")
                try:
                    if client.get(self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f} s: see {self.log_path}")

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.proc.wait(STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)
        finally:
            self._log.close()


@dataclass(frozen=True)
class Spec:
    """A server under test: how to start it, where to post, and what a right answer looks like."""

    name: str
    start: Callable[[], Server]
    path: str
    check: Callable[[Any], bool]


def python_server(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BASELINES / script), "--port", "{port}", *args]


def uvicorn_server(module: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(BASELINES), "--host",
            "127.0.0.1", "--port", "{port}", "--workers", "1", "--log-level", "warning", "--no-access-log"]


def _embedding(vector: Any) -> bool:
    return isinstance(vector, list) and len(vector) == 384


def wk_embed_spec(name: str, keys: dict[str, Any]) -> Spec:
    return Spec(name, lambda: Watchkeeper("embed", keys), "/v1/models/embed/predict",
                lambda j: _embedding(j["outputs"]["embedding"]))


def embed_specs(wk_keys: dict[str, Any]) -> list[Spec]:
    threads = str(wk_keys.get("threads") or max(1, CORES // wk_keys.get("replicas", 1)))
    return [
        wk_embed_spec("watchkeeper", wk_keys),
        Spec("LitServe", lambda: Baseline(python_server("litserve_embed.py", "--threads", threads), {}),
             "/predict", lambda j: _embedding(j["embedding"])),
        Spec("FastAPI", lambda: Baseline(uvicorn_server("fastapi_embed"), {THREADS_ENV: threads}),
             "/predict", lambda j: _embedding(j["embedding"])),
    ]


def entailment_specs() -> list[Spec]:
    """watchkeeper alone: no baseline serves this model (its limit is the direct call)."""
    return [Spec("watchkeeper", lambda: Watchkeeper("entailment", WK_ENTAILMENT),
                 "/v1/models/entailment/predict", lambda j: j["outputs"]["label"] == "yes")]


def noop_specs() -> list[Spec]:
    return [
        Spec("watchkeeper", lambda: Watchkeeper("chaos", WK_CHAOS), "/v1/models/chaos/predict",
             lambda j: j["outputs"]["ok"] is True),
        Spec("LitServe", lambda: Baseline(python_server("litserve_noop.py"), {}), "/predict",
             lambda j: j["ok"] is True),
        Spec("FastAPI", lambda: Baseline(uvicorn_server("fastapi_noop"), {}), "/predict",
             lambda j: j["ok"] is True),
    ]


def check_loopback(spec: Spec, pid: int) -> None:
    """Refuse to measure a server that listens anywhere but the loopback interface."""
    for proc in tree(pid):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in ("127.0.0.1", "::1"):
                where = f"{conn.laddr.ip}:{conn.laddr.port}"
                raise RuntimeError(f"{spec.name}: pid {proc.pid} listens on {where}, not on loopback")


def warm(server: Server, spec: Spec, body: dict[str, Any], script: Path, concurrency: int) -> None:
    """A few requests whose answers are checked, then wrk at the highest concurrency."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(5):
            response = client.post(spec.path, json=body)
            if response.status_code != 200 or not spec.check(response.json()):
                raise RuntimeError(f"{spec.name}: wrong answer {response.status_code}: {response.text[:300]}")
    wrk(server.url + spec.path, script, concurrency, WARMUP_S)


def shutdown(server: Server) -> None:
    """Stop the server, then SIGKILL whatever of its process tree is still there."""
    leftovers = tree(server.pid)
    try:
        server.stop()
    finally:
        for proc in leftovers:
            try:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
            except psutil.NoSuchProcess:
                pass
