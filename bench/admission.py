"""Memory admission under an overload of large requests, against the same run with it off.

A model that allocates what its params ask (chaos ``Hungry``: ``mb`` MiB for ``hold_s``)
runs in workers with a hard memory cap (``memory_limit_mb``, RLIMIT_AS, so running out
is a real MemoryError), batched up to 4. Clients send a burst of large requests: most
ask for 100 MB (two fit in the budget, four do not), one in four asks for 350 MB (more
than the cap: it only runs degraded). Prints, for admission on and off: the share of
requests answered 2xx, the share refused early with Retry-After, the out-of-memory errors
workers hit, and the p50/p99 latency of the requests that succeeded.

Run: .venv/bin/python bench/admission.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, machine, percentile, table

HUNGRY = {"app": "watchkeeper.apps.chaos:Hungry", "replicas": 2, "max_batch_size": 4,
          "memory_limit_mb": 300, "timeout_s": 30, "probe_interval_s": 0, "max_queue": 512,
          "quarantine_s": 0}


def payload(i: int) -> dict:
    mb = 350 if i % 4 == 3 else 100
    return {"inputs": {"tag": f"r{i}"}, "params": {"mb": mb, "hold_s": 0.2}}


async def burst(url: str, requests: int, concurrency: int) -> list[tuple[int, float, bool]]:
    """(status, seconds, had Retry-After) for each request, ``concurrency`` at a time."""
    results: list[tuple[int, float, bool]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            response = await client.post("/v1/models/hungry/predict", json=payload(i))
            results.append((response.status_code, time.perf_counter() - start,
                            "retry-after" in response.headers))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return results


def run(admission: bool, requests: int, concurrency: int) -> dict[str, float]:
    srv = BenchServer({"hungry": {**HUNGRY, "memory_admission": admission}})
    try:
        srv.wait_ready()
        results = asyncio.run(burst(srv.url, requests, concurrency))
        health = srv.client.get("/health").json()["models"]["hungry"]
    finally:
        srv.stop()
    log = (srv.dir / "server.log").read_text(errors="replace")
    ok = [seconds for status, seconds, _ in results if 200 <= status < 300]
    early = sum(1 for status, _, retry in results if status in (429, 503) and retry)
    return {
        "ok": len(ok) / len(results),
        "early": early / len(results),
        "other": 1 - (len(ok) + early) / len(results),
        "ooms": log.count('"event":"worker.out_of_memory"'),
        "restarts": sum(r["restarts"] for r in health["replicas"]),
        "p50": percentile(ok, 50),
        "p99": percentile(ok, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    on = run(True, args.requests, args.concurrency)
    off = run(False, args.requests, args.concurrency)
    print(f"memory admission, {args.requests} requests at concurrency {args.concurrency} "
          f"(3 of 4 ask 100 MB, 1 of 4 asks 350 MB; workers capped at 300 MB, batches "
          f"of up to 4); {machine()}\n")
    rows = []
    for name, r in (("admission on", on), ("admission off", off)):
        rows.append([name, f"{r['ok']:.0%}", f"{r['early']:.0%}", f"{r['other']:.0%}",
                     str(int(r["ooms"])), str(int(r["restarts"])),
                     f"{r['p50']:.2f}", f"{r['p99']:.2f}"])
    print(table(["", "2xx", "refused early (Retry-After)", "other errors", "OOMs in workers",
                 "worker restarts", "p50 s (2xx)", "p99 s (2xx)"], rows))
    met = "met" if on["ooms"] == 0 else "NOT met"
    print(f"\ntarget: no OOM with admission on: {met}")


if __name__ == "__main__":
    main()
