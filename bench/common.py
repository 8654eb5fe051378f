"""Shared helpers of the benchmark scripts: start a real server, time things, print tables."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


class BenchServer:
    """``watchkeeper serve`` in a subprocess with a generated config, on a free port."""

    def __init__(self, models: dict[str, dict[str, Any]], env: dict[str, str] | None = None,
                 server: dict[str, Any] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wk-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lines = ["[server]", f"port = {self.port}", f'data_dir = "{self.dir / "data"}"',
                 f'cache_dir = "{self.dir / "cache"}"', 'log_level = "warning"']
        lines += [f"{k} = {_toml(v)}" for k, v in (server or {}).items()]
        for name, keys in models.items():
            lines += [f"[models.{name}]"] + [f"{k} = {_toml(v)}" for k, v in keys.items()]
        config = self.dir / "watchkeeper.toml"
        config.write_text("\n".join(lines) + "\n")
        self.log = (self.dir / "server.log").open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")} | (env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout_s: float = 120) -> float:
        """Seconds until /readyz answers 200."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.dir / 'server.log'}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise TimeoutError("server not ready")

    def worker_pids(self, model: str) -> list[int]:
        replicas = self.client.get("/health").json()["models"][model]["replicas"]
        return [r["pid"] for r in replicas if r["pid"] and r["state"] in ("ready", "busy")]

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30, interval_s: float = 0.005) -> Any:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("condition not met")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rate(value: float) -> str:
    """A per-second figure for a table: no decimals from 100 up, one below."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def summary(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.3f}  max {max(values):.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (what docs/benchmarks.md shows)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def http_request(method: str, path: str, body: bytes, host: str = "127.0.0.1",
                 headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request with a JSON body (raw-socket clients build it once)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


def content_length(head: bytes) -> int:
    """The Content-Length of an answer's head (0 when it has none)."""
    return next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")), 0)


class KeepAlivePost:
    """One keep-alive HTTP/1.1 connection that POSTs the same JSON body and times each answer.

    For latency at concurrency 1 in short bursts (wrk's shortest run is a second). Lean on
    purpose: the request bytes are built once and the answer is read by Content-Length, so
    the client adds little to what it measures (and what it adds counts against the server).
    """

    def __init__(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = http_request("POST", parts.path, body, parts.netloc, headers)

    def post_ms(self) -> float:
        """Send the request; milliseconds until the whole answer is in. Raises on a non-200."""
        return self.post()[0]

    def post(self) -> tuple[float, bytes]:
        """Send the request: (milliseconds until the whole answer is in, its body). Raises on a non-200."""
        start = time.perf_counter()
        self.sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        length = content_length(head)
        while len(rest) < length:
            rest += self._recv()
        elapsed = (time.perf_counter() - start) * 1000
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"answer {head.splitlines()[0]!r}: {rest[:200]!r}")
        return elapsed, rest

    def warm_up(self, count: int) -> None:
        for _ in range(count):
            self.post()

    def timed(self) -> tuple[float, float]:
        """(answer ms, the worker's ``timings.inference_ms`` from the answer): watchkeeper only."""
        took, body = self.post()
        return took, float(json.loads(body)["timings"]["inference_ms"])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()
