"""How fast watchkeeper recovers from a killed or hung worker.

The cartoon app, against the time of a normal request measured in the same run:
  1. SIGKILL of an idle worker -> the next request's success
  2. a hang's deadline -> its 504 (the worker is frozen with SIGSTOP, then gets a request)
  3. that 504 -> the next success (the frozen worker is killed and replaced)
  4. p99 of /livez, /readyz, /health while the model is saturated
The embed app (a 90 MB pretrained model):
  5. SIGKILL -> next success, with workers forked from the loaded template and without
  6. req/s at concurrency 32 while the worker is SIGKILLed every 3 s, and the share of
     requests that got an error, against the same load with no kills

Run: .venv/bin/python bench/recovery.py [--rounds N] [--only cartoon|embed]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, machine, percentile, table, wait_until

CARTOON = {"app": "watchkeeper.apps.cartoon:Cartoon", "timeout_s": 30, "probe_interval_s": 0,
           "max_queue": 256}
HANG_DEADLINE_S = 1.0
HEALTH_PATHS = ("/livez", "/readyz", "/health")
TARGETS = {"kill": 1.0, "deadline": 0.5, "after_504": 1.5, "health_p99_ms": 20.0}


def photo(seed: int) -> str:
    """A 640x480 test photo, different for every seed (so inputs are never the same twice)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, 640, dtype=np.uint8)
    img = np.stack([np.tile(x, (480, 1)), np.tile(x[::-1], (480, 1)),
                    np.full((480, 640), rng.integers(0, 255), np.uint8)], -1)
    img[100:300, 200:400] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def body(seed: int, resolution: int = 512) -> dict:
    return {"inputs": {"image": photo(seed)}, "params": {"resolution": resolution}}


def timed_predict(srv: BenchServer, seed: int, **kw: object) -> tuple[int, float]:
    start = time.perf_counter()
    response = srv.client.post("/v1/models/cartoon/predict", json=body(seed), **kw)  # type: ignore[arg-type]
    return response.status_code, time.perf_counter() - start


def kill_to_success(srv: BenchServer, seed: int) -> float:
    (pid,) = srv.worker_pids("cartoon")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    status, _ = timed_predict(srv, seed)
    assert status == 200, status
    return time.perf_counter() - killed_at


def hang_round(srv: BenchServer, seed: int) -> tuple[float, float]:
    """Freeze the worker, then send it a request: (504 lateness after the deadline, 504 -> next success)."""
    (pid,) = srv.worker_pids("cartoon")
    os.kill(pid, signal.SIGSTOP)  # frozen: it will take the request and never answer
    sent = time.perf_counter()
    status, elapsed = timed_predict(srv, seed, headers={"X-Request-Timeout": str(HANG_DEADLINE_S)})
    got_504 = sent + elapsed
    assert status == 504, status
    status, _ = timed_predict(srv, seed + 1)
    assert status == 200, status
    return elapsed - HANG_DEADLINE_S, time.perf_counter() - got_504


def poll_health(port: int, seconds: float, out: multiprocessing.Queue[dict[str, list[float]]]) -> None:
    """In its own process (so the load generator cannot delay it): time each health call."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples: dict[str, list[float]] = {p: [] for p in HEALTH_PATHS}
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        for path in HEALTH_PATHS:
            start = time.perf_counter()
            conn.request("GET", path)
            conn.getresponse().read()
            samples[path].append((time.perf_counter() - start) * 1000)
        time.sleep(0.01)
    out.put(samples)


async def saturate(url: str, seconds: float, concurrency: int) -> int:
    payloads = [body(1000 + i, 1024) for i in range(concurrency)]
    stop = time.perf_counter() + seconds
    served = 0

    async def load(client: httpx.AsyncClient, payload: dict) -> None:
        nonlocal served
        while time.perf_counter() < stop:
            response = await client.post("/v1/models/cartoon/predict", json=payload)
            served += response.status_code == 200

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(load(client, p) for p in payloads))
    return served


def health_under_load(srv: BenchServer, seconds: float = 6.0, concurrency: int = 8) -> dict[str, float]:
    """p99 of each health path, polled from another process while 8 clients saturate the model."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[dict[str, list[float]]] = ctx.Queue()
    poller = ctx.Process(target=poll_health, args=(srv.port, seconds - 1.0, out))
    threading.Timer(0.5, poller.start).start()
    served = asyncio.run(saturate(srv.url, seconds, concurrency))
    samples = out.get(timeout=30)
    poller.join(10)
    result = {path: percentile(s, 99) for path, s in samples.items()}
    result["served_per_s"] = served / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("cartoon", "embed"))
    args = parser.parse_args()
    print(machine(), "\n")
    if args.only != "embed":
        cartoon(args.rounds)
    if args.only != "cartoon":
        embed(args.rounds)


def cartoon(rounds: int) -> None:
    srv = BenchServer({"cartoon": CARTOON})
    try:
        srv.wait_ready()
        normal = [timed_predict(srv, 10 + i)[1] for i in range(rounds)]
        kills = [kill_to_success(srv, 100 + i) for i in range(rounds)]
        wait_until(lambda: srv.worker_pids("cartoon"))
        hangs = [hang_round(srv, 200 + 2 * i) for i in range(rounds)]
        health = health_under_load(srv)
    finally:
        srv.stop()
    report(rounds, normal, kills, hangs, health)


def report(rounds: int, normal: list[float], kills: list[float],
           hangs: list[tuple[float, float]], health: dict[str, float]) -> None:
    base = sorted(normal)[len(normal) // 2]
    lateness = [h[0] for h in hangs]
    after = [h[1] for h in hangs]
    p99 = max(health[p] for p in HEALTH_PATHS)

    def row(name: str, values: list[float], target: float) -> list[str]:
        med, worst = sorted(values)[len(values) // 2], max(values)
        verdict = "yes" if worst < target else "NO"
        return [name, f"{med:.3f}", f"{worst:.3f}", f"{med / base:.1f}x", f"< {target}", verdict]

    print(f"cartoon app (512 px), {rounds} rounds")
    print(f"normal request: median {base:.3f} s\n")
    print(table(["measure (s)", "median", "max", "vs normal request", "target", "met"], [
        row("SIGKILL -> next success", kills, TARGETS["kill"]),
        row("hang deadline -> 504", lateness, TARGETS["deadline"]),
        row("504 -> next success", after, TARGETS["after_504"]),
    ]))
    print()
    print(table(["health p99 under load (ms)", "/livez", "/readyz", "/health", "target", "met"], [[
        f"cartoon 1024 px saturated, {health['served_per_s']:.1f} req/s served",
        f"{health['/livez']:.1f}", f"{health['/readyz']:.1f}", f"{health['/health']:.1f}",
        f"< {TARGETS['health_p99_ms']:.0f}", "yes" if p99 < TARGETS["health_p99_ms"] else "NO"]]))


# --- embed -------------------------------------------------------------------------------

EMBED = {"app": "watchkeeper.apps.embed:Embed", "probe_interval_s": 0, "max_queue": 256}
KILL_EVERY_S = 3.0
LOAD_SECONDS = 15.0
LOAD_CONCURRENCY = 32


def embed_kill_to_success(srv: BenchServer, i: int) -> float:
    (pid,) = wait_until(lambda: srv.worker_pids("embed"))
    os.kill(pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    response = srv.client.post("/v1/models/embed/predict", json={"inputs": {"text": f"after kill {i}"}})
    assert response.status_code == 200, response.text
    return time.perf_counter() - killed_at


async def embed_load(url: str, seconds: float, concurrency: int) -> tuple[int, int]:
    """(answered 200, answered otherwise or failed) for ``seconds`` of closed-loop load."""
    stop = time.perf_counter() + seconds
    counts = [0, 0]

    async def loop(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            i += 1
            try:
                response = await client.post("/v1/models/embed/predict",
                                             json={"inputs": {"text": f"client {n} sentence {i}"}})
                counts[response.status_code != 200] += 1
            except httpx.HTTPError:
                counts[1] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(loop(client, n) for n in range(concurrency)))
    return counts[0], counts[1]


def killer(srv: BenchServer, until: float, kills: list[float]) -> None:
    """SIGKILL the embed worker every KILL_EVERY_S until ``until`` (in its own thread)."""
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        while time.perf_counter() + KILL_EVERY_S < until:
            time.sleep(KILL_EVERY_S)
            replicas = client.get("/health").json()["models"]["embed"]["replicas"]
            for replica in replicas:
                if replica["pid"] and replica["state"] in ("ready", "busy"):
                    os.kill(replica["pid"], signal.SIGKILL)
                    kills.append(time.perf_counter())


def load_with_kills(srv: BenchServer, kill: bool) -> tuple[float, float, int]:
    """(req/s, error share, kills) over LOAD_SECONDS at LOAD_CONCURRENCY."""
    kills: list[float] = []
    until = time.perf_counter() + LOAD_SECONDS
    thread = threading.Thread(target=killer, args=(srv, until, kills), daemon=True)
    if kill:
        thread.start()
    ok, bad = asyncio.run(embed_load(srv.url, LOAD_SECONDS, LOAD_CONCURRENCY))
    if kill:
        thread.join(10)
    return ok / LOAD_SECONDS, bad / max(1, ok + bad), len(kills)


def embed(rounds: int) -> None:
    recovery: dict[str, list[float]] = {}
    for fork in (True, False):
        srv = BenchServer({"embed": {**EMBED, "fork_from_template": fork}})
        try:
            srv.wait_ready()
            srv.client.post("/v1/models/embed/predict", json={"inputs": {"text": "warm"}})
            recovery["forked from the template" if fork else "spawned, weights loaded again"] = [
                embed_kill_to_success(srv, i) for i in range(rounds)]
            if fork:
                steady = load_with_kills(srv, kill=False)
                killed = load_with_kills(srv, kill=True)
        finally:
            srv.stop()
    print(f"\nembed app (all-MiniLM-L6-v2), {rounds} rounds")
    rows = []
    for how, values in recovery.items():
        met = "yes" if max(values) < 0.3 else "NO"
        rows.append([how, f"{statistics.median(values):.3f}", f"{max(values):.3f}", "< 0.3", met])
    print(table(["SIGKILL -> next success (s)", "median", "max", "target", "met"], rows))
    print()
    print(table(["closed loop, 32 clients, 15 s", "req/s", "errors", "workers killed", "target"], [
        ["no kills", f"{steady[0]:.0f}", f"{steady[1]:.2%}", "0", ""],
        [f"SIGKILL every {KILL_EVERY_S:.0f} s", f"{killed[0]:.0f} ({killed[0] / steady[0]:.2f}x)",
         f"{killed[1]:.2%}", str(killed[2]), "0 errors: " + ("met" if killed[1] == 0 else "NOT met")],
    ]))


if __name__ == "__main__":
    main()
