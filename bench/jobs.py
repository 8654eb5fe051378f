"""Durable jobs: what an fsynced submit costs, whether server kills lose jobs, img2video speed.

Three measures, each on real servers (`watchkeeper serve` subprocesses) in the same run:
  1. submit latency (time to the 202) of 100 concurrent submits of chaos `ok` jobs, --rounds
     bursts of 100, against GET /livez and POST /v1/models/chaos/predict `ok` at the same
     concurrency (bursts interleaved); every job must end `succeeded`. The client is plain
     asyncio on 100 warm keep-alive connections: httpx's AsyncClient spent about 8 ms of CPU
     per request with 100 connections open, more than the server did. Its CPU is printed.
  2. jobs lost after --kills random SIGKILLs of the whole server: 60 chaos `work` jobs
     (0.3-1 s, 3-5 progress steps, a 1-64 KiB file), 2 replicas, jobs.max_attempts 20; then
     each time: wait 0.5-2.5 s after /readyz, release 8 submits, SIGKILL the front 0-20 ms
     later (its workers die with it), start it again on the same config and data dir. Two
     threads keep submitting shorter jobs throughout (a refused or broken submit is "not
     accepted", not lost). Once no job is queued or running, every accepted job must have
     succeeded with the right file bytes, or failed with a reason.
  3. img2video, 512p, 32 frames, 16 fps, from a 1024x768 PNG: frames/s of a served job
     (its started_at to finished_at), median of 3, against the same render in-process.
  4. store faults mid-run (needs root: the data dir is a 64 MiB tmpfs): the same chaos `work`
     jobs and submitting threads as 2, while the store's write lock is held by another
     process (8 s, then 6 s), the disk is filled (6 s, then 5 s) and the server SIGKILLed
     twice; then the data dir is deleted mid-run. Counts: jobs that read `succeeded` without
     their result, jobs run more often than their `attempts` say (runs counted from the
     server's `job.run_started` log lines), /health failing (naming the fault) during each
     fault, and submits accepted after the data dir was deleted.
The share of the CPU that other processes used meanwhile is printed: workers run at nice 5.

Run: .venv/bin/python bench/jobs.py [--rounds N] [--kills N] [--only submit|kills|video|faults]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, content_length, http_request, machine, percentile, table, wait_until

CHAOS = {"app": "watchkeeper.apps.chaos:Chaos", "probe_interval_s": 0, "max_queue": 256, "replicas": 2}
VIDEO = {"app": "watchkeeper.apps.img2video:Img2Video", "probe_interval_s": 0, "device": "cpu",
         "device_memory_gb": 40}  # this machine's RAM would choose the 12 GB profile: 16 frames
VIDEO_PARAMS = {"resolution": "512p", "frames": 32, "fps": 16}
CONCURRENCY, BATCH, VOLLEY, MAX_ATTEMPTS, VIDEO_JOBS = 100, 60, 8, 20, 3
SERVERS: list[JobServer] = []


class JobServer(BenchServer):
    """A BenchServer that remembers its processes and can be SIGKILLed and started again."""

    def __init__(self, models: dict[str, dict[str, Any]], env: dict[str, str] | None = None) -> None:
        self.env, self.seen = env or {}, dict[int, psutil.Process]()
        super().__init__(models, env)
        SERVERS.append(self)

    def track(self) -> list[psutil.Process]:
        """The front and its descendants now (all kept, to check at the end that all are gone)."""
        try:
            front = psutil.Process(self.proc.pid)
            procs = [front, *front.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.seen.update((p.pid, p) for p in procs)
        return procs

    def sigkill(self) -> int:
        """SIGKILL the front only; its workers must die with it. Returns how many did not."""
        procs = self.track()
        self.proc.kill()
        self.proc.wait(10)
        alive = psutil.wait_procs(procs, timeout=5)[1]
        for proc in alive:
            proc.kill()
        return len(alive)

    def respawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")} | self.env
        self.proc = subprocess.Popen(self.proc.args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        self.track()
        super().stop()
        psutil.wait_procs(list(self.seen.values()), timeout=10)

    def cpu(self) -> float:
        return sum(map(cpu_s, self.track()))


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process and of the children it reaped (0 when it is gone)."""
    try:
        return sum(proc.cpu_times()[:4])
    except psutil.NoSuchProcess:
        return 0.0


def cpu_watch(srv: JobServer | None) -> Callable[[], float]:
    """A function that says what share of the machine's CPU other processes (not this one,
    not ``srv``'s) used since this call."""

    def sample() -> tuple[float, float, float]:
        t, mine = psutil.cpu_times(), time.process_time() + (srv.cpu() if srv else 0.0)
        return time.perf_counter(), t.user + t.nice + t.system + t.irq + t.softirq, mine

    wall0, busy0, mine0 = sample()

    def others() -> float:
        wall, busy, mine = sample()
        return max(0.0, busy - busy0 - (mine - mine0)) / ((wall - wall0) * (os.cpu_count() or 1))

    return others


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.1f}"


def list_jobs(srv: BenchServer, state: str) -> list[dict[str, Any]]:
    response = srv.client.get("/v1/jobs", params={"state": state, "limit": 1000})
    response.raise_for_status()
    return list(response.json()["jobs"])


def wait_idle(srv: BenchServer, timeout_s: float) -> None:
    """Until no job is queued or running."""
    wait_until(lambda: not list_jobs(srv, "queued") and not list_jobs(srv, "running"),
               timeout_s=timeout_s, interval_s=0.1)


# --- 1. submit latency under 100 concurrent submits --------------------------------------------

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def request(conn: Conn, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection; (status, body)."""
    reader, writer = conn
    writer.write(http_request(method, path, body))
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head[9:12]), await reader.readexactly(content_length(head))


async def burst(conns: list[Conn], method: str, path: str, bodies: list[bytes],
                want: int) -> list[tuple[float, Any]]:
    """Every body at once, one per connection: (seconds to the answer, its JSON) of each."""

    async def one(conn: Conn, body: bytes) -> tuple[float, Any]:
        start = time.perf_counter()
        status, data = await request(conn, method, path, body)
        if status != want:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return time.perf_counter() - start, orjson.loads(data)

    return await asyncio.gather(*(one(c, b) for c, b in zip(conns, bodies, strict=True)))


async def submit_rounds(srv: JobServer, rounds: int) -> dict[str, Any]:
    kinds = {"livez": ("GET", "/livez", 200), "predict": ("POST", "/v1/models/chaos/predict", 200),
             "submit": ("POST", "/v1/models/chaos/jobs", 202)}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu, ids = dict.fromkeys(kinds, 0.0), list[str]()
    conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(CONCURRENCY)]
    try:
        await burst(conns, "GET", "/livez", [b""] * CONCURRENCY, 200)  # warms every connection
        for r in range(rounds):
            for kind, (method, path, want) in kinds.items():
                bodies = [b"" if method == "GET" else orjson.dumps(
                    {"inputs": {"action": "ok", "tag": f"{kind} {r} {i}"}}) for i in range(CONCURRENCY)]
                cpu_start = time.process_time()
                answers = await burst(conns, method, path, bodies, want)
                cpu[kind] += time.process_time() - cpu_start
                times[kind] += [a[0] for a in answers]
                if kind == "submit":
                    ids += [a[1]["id"] for a in answers]
                    await asyncio.to_thread(wait_idle, srv, 60)  # next burst on a quiet server
    finally:
        for _, writer in conns:
            writer.close()
    succeeded = {j["id"] for j in list_jobs(srv, "succeeded")}
    return {"times": times, "cpu": cpu, "submitted": len(ids), "succeeded": len(succeeded & set(ids))}


def submit_latency(rounds: int) -> dict[str, Any]:
    srv = JobServer({"chaos": CHAOS})
    try:
        srv.wait_ready()
        others = cpu_watch(srv)
        result = asyncio.run(submit_rounds(srv, rounds))
        result["others"] = others()
    finally:
        srv.stop()
    t, n = result["times"], rounds * CONCURRENCY
    print(f"## 1. submit latency, {rounds} bursts of {CONCURRENCY} concurrent requests (chaos `ok`)\n")
    print(table(["request", "p50 ms", "p99 ms", "max ms", "client CPU ms/request"], [
        [name, ms(t[kind], 50), ms(t[kind], 99), ms(t[kind], 100), f"{result['cpu'][kind] / n * 1000:.2f}"]
        for name, kind in [("GET /livez", "livez"), ("POST .../predict (ok)", "predict"),
                           ("POST .../jobs -> 202 (ok)", "submit")]]))
    print(f"\njobs submitted {result['submitted']}, ended succeeded {result['succeeded']}; "
          f"other processes used {result['others']:.0%} of the machine's CPU meanwhile\n")
    return result


# --- 2. jobs lost after random server kills -----------------------------------------------------


class Feeder:
    """Submits chaos `work` jobs and keeps what came of each; its threads keep submitting
    short jobs while the server is killed and restarted."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url, self.accepted, self.outcomes = url, dict[str, int](), Counter[str]()  # id -> file size
        self.sent: list[tuple[float, str]] = []  # (time.monotonic() when sent, outcome)
        self.lock, self.done = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def submit(self, client: httpx.Client, rng: random.Random, seconds: tuple[float, float],
               label: str = "") -> None:
        """One submit: accepted, server down (no connection), broken in flight, or its status."""
        size, sent = rng.randint(1, 64) * 1024, time.monotonic()
        inputs = {"action": "work", "seconds": round(rng.uniform(*seconds), 3),
                  "steps": rng.randint(3, 5), "blob_kb": size // 1024, "tag": f"{rng.random():.12f}"}
        try:
            response = client.post("/v1/models/chaos/jobs", json={"inputs": inputs})
            ok = response.status_code == 202
            outcome = "accepted" if ok else refusal(response)
        except httpx.ConnectError:
            outcome = "server down"
        except httpx.TransportError:
            outcome = "broken in flight"
        with self.lock:
            self.sent.append((sent, outcome))
            self.outcomes[label + outcome] += 1
            if outcome == "accepted":
                self.accepted[response.json()["id"]] = size

    def run(self, seed: int) -> None:
        rng = random.Random(1000 + seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.done.is_set():
                self.submit(client, rng, (0.05, 0.3))
                time.sleep(rng.uniform(0.05, 0.4))

    def volley(self, n: int, seed: int) -> list[threading.Thread]:
        """``n`` submits released together on warm connections, for a kill to find in flight."""
        clients = [httpx.Client(base_url=self.url, timeout=30) for _ in range(n)]
        for client in clients:
            client.get("/livez")
        go = threading.Event()

        def fire(i: int) -> None:
            go.wait()
            try:
                self.submit(clients[i], random.Random(seed * 100 + i), (0.05, 0.3), "just before a kill: ")
            finally:
                clients[i].close()

        threads = [threading.Thread(target=fire, args=(i,), daemon=True) for i in range(n)]
        for thread in threads:
            thread.start()
        go.set()
        return threads


def kill_loop(srv: JobServer, kills: int) -> tuple[Feeder, dict[str, Any]]:
    """The batch, then the kills while the feeder submits, then until no job is queued or running."""
    rng, feeder = random.Random(42), Feeder(srv.url)
    stats: dict[str, Any] = {"running": [], "ready_s": [], "survivors": []}
    for _ in range(BATCH):
        feeder.submit(srv.client, rng, (0.3, 1.0))
    for thread in feeder.threads:
        thread.start()
    try:
        for k in range(kills):
            srv.track()
            time.sleep(rng.uniform(0.5, 2.5))
            stats["running"].append(len(list_jobs(srv, "running")))
            volley = feeder.volley(VOLLEY, k)
            time.sleep(rng.uniform(0.0, 0.02))
            stats["survivors"].append(srv.sigkill())
            for thread in volley:
                thread.join(60)
            srv.respawn()
            stats["ready_s"].append(srv.wait_ready())
    finally:
        feeder.done.set()
        for thread in feeder.threads:
            thread.join(60)
    drain = time.perf_counter()
    wait_idle(srv, 240)
    stats["drain_s"] = time.perf_counter() - drain
    return feeder, stats


def refusal(response: httpx.Response) -> str:
    """A refused submit in a few words: its status, error type and (a store's) fault."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:80]}"
    fault = (error.get("details") or {}).get("fault")
    return f"HTTP {response.status_code} {error.get('type')}" + (f" (store {fault})" if fault else "")


def check_job(srv: BenchServer, job_id: str, size: int, tally: Counter[str]) -> int:
    """Count one accepted job's ending in ``tally``; returns the attempts it used."""
    response = srv.client.get(f"/v1/jobs/{job_id}")
    if response.status_code == 404:
        tally["LOST: missing (404)"] += 1
        return 0
    job = response.json()
    if job["state"] == "failed" and job["error"]:
        tally[f"failed: {job['error']['type']}"] += 1
    elif job["state"] != "succeeded":
        tally[f"LOST: {job['state']}, error {job['error']}"] += 1
    else:
        files = (job["result"] or {}).get("files") or [{}]
        data = srv.client.get(files[0]["url"]).content if "url" in files[0] else b""
        expected = (bytes(range(256)) * (size // 256 + 1))[:size]  # chaos `blob_kb` output
        tally["succeeded" if data == expected else "LOST: succeeded, result wrong or missing"] += 1
    return int(job["attempts"])


def server_kills(kills: int) -> dict[str, Any]:
    srv = JobServer({"chaos": CHAOS}, {"WK_JOBS__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                                       "WK_SERVER__LOG_LEVEL": "info"})
    tally = Counter[str]()
    try:
        srv.wait_ready()
        feeder, stats = kill_loop(srv, kills)
        attempts = [check_job(srv, job_id, size, tally) for job_id, size in feeder.accepted.items()]
        ended = {j["id"] for s in ("succeeded", "failed", "cancelled") for j in list_jobs(srv, s)}
        log = (srv.dir / "server.log").read_text(errors="replace").splitlines()
    finally:
        srv.stop()
    result = {"kills": kills, "accepted": len(feeder.accepted), "max_attempts": max(attempts, default=0),
              "lost": sum(n for k, n in tally.items() if k.startswith("LOST")),
              "unacked": len(ended - set(feeder.accepted)),
              "problems": [line for line in log if not line.startswith("{") or '"level":"error"' in line]}
    report_kills(result, feeder.outcomes, tally, stats)
    return result


def report_kills(r: dict[str, Any], outcomes: Counter[str], tally: Counter[str],
                 stats: dict[str, Any]) -> None:
    print(f"## 2. {r['kills']} SIGKILLs of the whole server (chaos `work` jobs, 2 replicas, "
          f"jobs.max_attempts {MAX_ATTEMPTS})\n")
    print(table(["", "count"], [[f"submits: {k}", n] for k, n in sorted(outcomes.items())] + [
        [f"accepted jobs that ended {k}", n] for k, n in sorted(tally.items())] + [
        ["jobs stored and ended whose 202 never arrived", r["unacked"]],
        ["most attempts any job used", r["max_attempts"]],
        ["jobs running at the kills (total)", sum(stats["running"])],
        ["workers that outlived their front", sum(stats["survivors"])],
        ["restart -> /readyz, median s", f"{statistics.median(stats['ready_s']):.2f}"],
        ["last restart -> no job queued or running, s", f"{stats['drain_s']:.1f}"],
        ["**lost** (target 0)", r["lost"]]]) + "\n")
    for line in r["problems"][:20]:  # tracebacks (not JSON) and errors
        print("    server log:", line)
    print("\n" if r["problems"] else "", end="")


# --- 3. img2video frames per second -----------------------------------------------------------


def test_png() -> bytes:
    """A 1024x768 PNG: colour gradients, a disc, a box and stripes."""
    y, x = np.mgrid[0:768, 0:1024].astype(np.float32)
    rgb = np.stack([255 * x / 1024, 255 * y / 768, 128 + 100 * np.sin(x / 40) * np.cos(y / 50)], -1)
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((600, 400, 850, 650), fill=(240, 200, 40))
    draw.rectangle((120, 150, 420, 380), fill=(40, 60, 160), outline=(255, 255, 255), width=6)
    for i in range(12):
        draw.line((i * 90, 768, i * 90 + 200, 500), fill=(20, 20, 20), width=5)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def run_job(srv: BenchServer, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a job and poll it until it has ended."""
    url = srv.client.post(f"/v1/models/{model}/jobs", json=body).json()["urls"]["self"]

    def ended() -> dict[str, Any] | None:
        job = srv.client.get(url).json()
        return None if job["state"] in ("queued", "running") else job

    return dict(wait_until(ended, timeout_s=120, interval_s=0.02))


def served_video(png: bytes, rounds: int) -> dict[str, Any]:
    """Seconds started_at -> finished_at, worker CPU seconds, MP4 sizes and checks of each job."""
    srv = JobServer({"img2video": VIDEO})
    body = {"inputs": {"image": base64.b64encode(png).decode()}, "params": VIDEO_PARAMS}
    out: dict[str, Any] = {"seconds": [], "cpu": [], "sizes": [], "ok": []}
    try:
        srv.wait_ready()
        others, worker = cpu_watch(srv), psutil.Process(srv.worker_pids("img2video")[0])
        for _ in range(rounds):
            cpu = cpu_s(worker)
            job = run_job(srv, "img2video", body)
            out["cpu"].append(cpu_s(worker) - cpu)
            if job["state"] != "succeeded":
                raise RuntimeError(f"img2video job {job['state']}: {job['error']}")
            data = srv.client.get(job["urls"]["result"]).content
            out["seconds"].append(job["finished_at"] - job["started_at"])
            out["sizes"].append(len(data))
            out["ok"].append(data[4:8] == b"ftyp" and job["result"]["outputs"]["frames"] == 32
                             and not job["degraded"])
        out["others"] = others()
    finally:
        srv.stop()
    return out


def inprocess_video(png: bytes, rounds: int) -> dict[str, Any]:
    """Seconds and CPU seconds of validate + predict in this process, after one untimed run."""
    from watchkeeper.apps.img2video import Img2Video

    model = Img2Video()
    model.setup("cpu")
    out: dict[str, Any] = {"seconds": [], "cpu": []}
    others = cpu_watch(None)
    for i in range(rounds + 1):
        start, cpu = time.perf_counter(), time.process_time()
        inputs = model.Inputs.model_validate({"image": png})
        video = model.predict(inputs, model.Params.model_validate(VIDEO_PARAMS))["video"]
        if i:
            out["seconds"].append(time.perf_counter() - start)
            out["cpu"].append(time.process_time() - cpu)
        assert video.data[4:8] == b"ftyp"
    out["others"] = others()
    return out


def video(rounds: int) -> dict[str, Any]:
    png = test_png()
    runs = {"served": served_video(png, rounds), "local": inprocess_video(png, rounds)}
    frames = VIDEO_PARAMS["frames"]
    fps = {key: frames / statistics.median(r["seconds"]) for key, r in runs.items()}
    print(f"## 3. img2video {VIDEO_PARAMS['resolution']}, {frames} frames at {VIDEO_PARAMS['fps']} fps, "
          f"from a 1024x768 PNG ({len(png) // 1024} KiB), median of {rounds}\n")
    names = {"served": "served job (started_at -> finished_at; worker CPU)",
             "local": "in-process (validate + predict)"}
    print(table(["render", "seconds (each)", "frames/s", "vs in-process", "CPU s", "others' CPU"], [
        [names[key], " ".join(f"{s:.2f}" for s in r["seconds"]), f"{fps[key]:.1f}",
         f"{fps[key] / fps['local']:.2f}x", f"{statistics.median(r['cpu']):.2f}", f"{r['others']:.0%}"]
        for key, r in runs.items()]))
    served = runs["served"]
    print(f"\nresults: MP4 (ftyp at byte 4, 32 frames, not degraded) {sum(served['ok'])} of "
          f"{len(served['ok'])}, sizes {', '.join(f'{s / 1024:.0f} KiB' for s in served['sizes'])}\n")
    return {**fps, "mp4_ok": all(served["ok"])}


# --- 4. store faults mid-run -----------------------------------------------------------------

FAULT_DISK_MB, LOCK_TIMEOUT_S = 64, 2  # jobs.store_write_timeout_s: a held lock fails writes in 2 s
FAULTS = (("lock", 8.0), ("kill", 0.0), ("fill", 6.0), ("lock", 6.0), ("kill", 0.0), ("fill", 5.0))


@contextmanager
def tmpfs(size_mb: int) -> Iterator[Path | None]:
    """A small tmpfs (a disk that really fills up), or None where mounting is not allowed."""
    mount = Path(tempfile.mkdtemp(prefix="wk-bench-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    try:
        yield None if done.returncode else mount
    finally:
        if not done.returncode:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


class HealthLog:
    """/health sampled every 0.2 s in a thread: (time.monotonic(), status, store fault)."""

    def __init__(self, url: str) -> None:
        self.url, self.samples, self.done = url, list[tuple[float, int, str | None]](), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while not self.done.is_set():
                try:
                    response = client.get("/health")
                    store = response.json()["jobs"].get("store") or {}
                    self.samples.append((time.monotonic(), response.status_code, store.get("fault")))
                except (httpx.HTTPError, ValueError, KeyError):
                    self.samples.append((time.monotonic(), 0, None))
                time.sleep(0.2)

    def saw(self, start: float, end: float, fault: str) -> bool:
        """/health answered 503 naming ``fault`` between ``start`` and ``end`` (+ one check)."""
        return any(start <= t <= end + 3 and status == 503 and seen == fault
                   for t, status, seen in self.samples)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def hold_lock(db: Path, seconds: float) -> None:
    """Another process's write lock on the store (this one's connection) for ``seconds``."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def fill_disk(root: Path, seconds: float) -> None:
    """Fill the filesystem of ``root`` to the last page for ``seconds``, then free it."""
    filler = root / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError:
                pass
    time.sleep(seconds)
    filler.unlink()


def inject(srv: JobServer, disk: Path, fault: str, seconds: float, health: HealthLog) -> bool:
    """One fault; True when /health named it while it lasted (a kill: the server came back)."""
    start = time.monotonic()
    if fault == "kill":
        srv.sigkill()
        srv.respawn()
        srv.wait_ready()
        return True
    if fault == "lock":
        hold_lock(disk / "data" / "jobs.sqlite3", seconds)
    else:
        fill_disk(disk, seconds)
    return health.saw(start, time.monotonic(), {"lock": "busy", "fill": "full"}[fault])


def runs_per_job(log: Path) -> Counter[str]:
    """How many times each job was sent to a worker, from the server's job.run_started lines."""
    runs = Counter[str]()
    for line in log.read_text(errors="replace").splitlines():
        if '"job.run_started"' in line:
            runs[orjson.loads(line)["job_id"]] += 1
    return runs


def fault_loop(srv: JobServer, disk: Path, health: HealthLog) -> tuple[Feeder, list[list[Any]]]:
    rng, feeder, seen = random.Random(7), Feeder(srv.url), list[list[Any]]()
    for _ in range(BATCH // 2):
        feeder.submit(srv.client, rng, (0.3, 1.0))
    for thread in feeder.threads:
        thread.start()
    try:
        for fault, seconds in FAULTS:
            time.sleep(rng.uniform(1.0, 2.5))
            held = f"{seconds:g} s" if seconds else "-"
            seen.append([fault, held, inject(srv, disk, fault, seconds, health)])
    finally:
        feeder.done.set()
        for thread in feeder.threads:
            thread.join(60)
    wait_idle(srv, 240)
    return feeder, seen


def delete_phase(srv: JobServer, disk: Path, health: HealthLog) -> dict[str, Any]:
    """Submit, delete the data dir mid-run, keep submitting: nothing may be accepted after,
    and nothing may read `succeeded` without its result."""
    feeder = Feeder(srv.url)
    for thread in feeder.threads:
        thread.start()
    time.sleep(3)
    deleted = time.monotonic()
    shutil.rmtree(disk / "data")
    time.sleep(6)
    feeder.done.set()
    for thread in feeder.threads:
        thread.join(60)
    after = [outcome for t, outcome in feeder.sent if t > deleted]
    tally = Counter[str]()
    for job_id, size in feeder.accepted.items():
        if srv.client.get(f"/v1/jobs/{job_id}").status_code == 503:
            tally["answered 503 (the store is gone)"] += 1
        else:
            check_job(srv, job_id, size, tally)
    return {"accepted_after": after.count("accepted"), "refused": len(after) - after.count("accepted"),
            "reads": tally, "noticed": health.saw(deleted, time.monotonic(), "gone")}


def store_faults() -> dict[str, Any] | None:
    with tmpfs(FAULT_DISK_MB) as disk:
        if disk is None:
            print("## 4. store faults: skipped (cannot mount a tmpfs here; run as root)\n")
            return None
        env = {"WK_SERVER__DATA_DIR": str(disk / "data"), "WK_JOBS__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
               "WK_JOBS__MIN_FREE_DISK_MB": "0", "WK_JOBS__STORE_WRITE_TIMEOUT_S": str(LOCK_TIMEOUT_S),
               "WK_SERVER__LOG_LEVEL": "info"}
        srv, tally = JobServer({"chaos": CHAOS}, env), Counter[str]()
        try:
            srv.wait_ready()
            health = HealthLog(srv.url)
            feeder, seen = fault_loop(srv, disk, health)
            attempts = {job_id: check_job(srv, job_id, size, tally)
                        for job_id, size in feeder.accepted.items()}
            runs = runs_per_job(srv.dir / "server.log")
            deleted = delete_phase(srv, disk, health)
            health.stop()
        finally:
            srv.stop()
    result = {"seen": seen, "outcomes": feeder.outcomes, "tally": tally, "deleted": deleted,
              "runs": sum(runs[j] for j in attempts), "attempts": sum(attempts.values()),
              "over": sum(1 for j, n in attempts.items() if runs[j] > n),
              "no_result": tally["LOST: succeeded, result wrong or missing"],
              "lost": sum(n for k, n in tally.items() if k.startswith("LOST"))}
    report_faults(result)
    return result


def report_faults(r: dict[str, Any]) -> None:
    print(f"## 4. store faults mid-run (chaos `work` jobs, 2 replicas, data dir on a {FAULT_DISK_MB} MiB "
          f"tmpfs, jobs.store_write_timeout_s {LOCK_TIMEOUT_S})\n")
    print(table(["fault, in order", "held", "/health failed naming it (a kill: server back)"],
                [[f, h, "yes" if ok else "NO"] for f, h, ok in r["seen"]]) + "\n")
    d = r["deleted"]
    print(table(["", "count"], [[f"submits: {k}", n] for k, n in sorted(r["outcomes"].items())] + [
        [f"accepted jobs that ended {k}", n] for k, n in sorted(r["tally"].items())] + [
        ["runs sent to a worker (job.run_started) / attempts counted", f"{r['runs']} / {r['attempts']}"],
        ["**jobs run more times than their attempts say** (target 0)", r["over"]],
        ["**jobs that read succeeded without their result** (target 0)", r["no_result"]],
        ["**lost** (target 0)", r["lost"]],
        ["then the data dir deleted mid-run: submits sent after it, refused", d["refused"]],
        ["**submits accepted after the deletion** (target 0)", d["accepted_after"]],
        ["/health failed naming `gone`", "yes" if d["noticed"] else "NO"]] + [
        [f"jobs of that run, read after the deletion: {k}", n]
        for k, n in sorted(d["reads"].items())]) + "\n")


# --- main -------------------------------------------------------------------------------------


def summary(sub: dict[str, Any] | None, kills: dict[str, Any] | None, vid: dict[str, Any] | None,
            faults: dict[str, Any] | None = None) -> None:
    rows = []
    if sub:
        t = sub["times"]
        rows += [[f"submit p{q} at c={CONCURRENCY}, ms", ms(t["submit"], q),
                  f"predict {ms(t['predict'], q)}, /livez {ms(t['livez'], q)}", ""] for q in (50, 99)]
        rows.append(["jobs succeeded / submitted", f"{sub['succeeded']} / {sub['submitted']}", "",
                     "all" if sub["succeeded"] == sub["submitted"] else "NOT all"])
    if kills:
        met = "met" if kills["lost"] == 0 else "NOT met"
        rows.append([f"jobs lost after {kills['kills']} server SIGKILLs", f"{kills['lost']} of "
                     f"{kills['accepted']}", f"most attempts {kills['max_attempts']}", f"0: {met}"])
    if faults:
        bad = faults["over"] + faults["no_result"] + faults["lost"] + faults["deleted"]["accepted_after"]
        rows.append(["store faults: run > attempts / succeeded without result / lost / accepted "
                     "after deletion", f"{faults['over']} / {faults['no_result']} / {faults['lost']} / "
                     f"{faults['deleted']['accepted_after']}", f"of {sum(faults['tally'].values())} jobs",
                     "0: met" if bad == 0 else "0: NOT met"])
    if vid:
        rows.append(["img2video 512p/32 frames, frames/s served", f"{vid['served']:.1f}",
                     f"in-process {vid['local']:.1f} ({vid['served'] / vid['local']:.2f}x)",
                     "MP4 ok" if vid["mp4_ok"] else "MP4 NOT ok"])
    print("## summary\n")
    print(table(["measure", "value", "baseline (same run)", "check"], rows))


def cleanup(keep: bool) -> None:
    """Stop every server, kill and count what outlived it; delete the temp dirs unless ``keep``."""
    for srv in SERVERS:
        srv.stop()
    left = [p for srv in SERVERS for p in srv.seen.values() if p.is_running()]
    for proc in left:
        proc.kill()
    seen = sum(len(srv.seen) for srv in SERVERS)
    print(f"\nprocesses left behind by the servers: {len(left)} (of {seen} seen)")
    for srv in SERVERS:
        if keep:
            print(f"kept for inspection: {srv.dir} (server.log, data/)")
        else:
            shutil.rmtree(srv.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="bursts of 100 requests in 1.")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--only", choices=("submit", "kills", "video", "faults"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers in `finally`
    print(f"# durable jobs benchmark; {machine()}\n")
    sub = kills = vid = faults = None
    keep = True  # the servers' dirs, after an error
    try:
        if args.only in (None, "submit"):
            sub = submit_latency(args.rounds)
        if args.only in (None, "kills"):
            kills = server_kills(args.kills)
        if args.only in (None, "faults"):
            faults = store_faults()
        if args.only in (None, "video"):
            vid = video(VIDEO_JOBS)
        summary(sub, kills, vid, faults)
        keep = bool(kills and (kills["lost"] or kills["problems"])) or bool(
            faults and (faults["over"] or faults["no_result"] or faults["lost"]))
    finally:
        cleanup(keep)


if __name__ == "__main__":
    main()
