"""What idle CPUs cost a multi-process server at concurrency 1: watchkeeper and LitServe.

Both servers answer requests one at a time with no model (watchkeeper's ``chaos`` model,
LitServe's no-op API from bench/serving.py); the request asks them to sleep S ms first, a
stand-in for a model's time that leaves the CPUs idle. Each server's overhead is its p50
answer time minus S. Back to back (S = 0) both processes stay busy; with S of a small
model's time (embed: ~13 ms here) the CPUs halt between the hops, and on this virtual
machine each hop (client -> front -> worker -> front -> client) then wakes a halted vCPU
and runs on cold caches: the same code costs several times as much.

Blocks of requests alternate between the two servers (both are up; one idles while the
other answers), so both see the same minutes of the shared machine; the first few of each
block are not counted. The client is
``common.KeepAlivePost`` (one keep-alive connection per server; its own time counts in).

Run: .venv/bin/python bench/idle_gap.py [--requests N]      (needs LitServe: make bench-deps)
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KeepAlivePost, machine, percentile, table
from loadgen import alternate, progress
from servers import Server, chaos_body, noop_specs, shutdown
from serving import missing_tools

SLEEPS_MS = (0, 2, 13, 50)
WARMUP = 30
BLOCK = 20  # requests to one server in a row (back to back), then as many to the other...
SKIP = 3  # ...after this many that are not counted (the first after the other server's turn)


def block(client: KeepAlivePost) -> list[float]:
    """BLOCK requests in a row (after SKIP not counted): answer times, ms."""
    return [client.post_ms() for _ in range(BLOCK + SKIP)][SKIP:]


def overheads(urls: dict[str, str], sleep_ms: int, requests: int) -> dict[str, float]:
    """p50 answer time - sleep for each server, with requests alternating between them."""
    body = json.dumps(chaos_body(sleep_ms)).encode()
    clients = {name: KeepAlivePost(url, body) for name, url in urls.items()}
    try:
        for client in clients.values():
            client.warm_up(WARMUP)
        steps = {name: partial(block, client) for name, client in clients.items()}
        blocks = alternate(steps, max(1, requests // BLOCK))
        return {name: percentile(sum(values, []), 50) - sleep_ms for name, values in blocks.values.items()}
    finally:
        for client in clients.values():
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per server and model time (default 300)")
    args = parser.parse_args()
    problem = missing_tools()
    if problem:
        print(f"{problem}: run `make bench-deps`", file=sys.stderr)
        return 2
    specs = noop_specs()[:2]  # watchkeeper (chaos), LitServe (no-op)
    servers: dict[str, tuple[Server, str]] = {}
    try:
        for spec in specs:
            server = spec.start()
            servers[spec.name] = (server, server.url + spec.path)
            server.wait_ready()
        urls = {name: url for name, (_, url) in servers.items()}
        rows = []
        for sleep_ms in SLEEPS_MS:
            figures = overheads(urls, sleep_ms, args.requests)
            shown = ", ".join(f"{name} +{value:.2f} ms" for name, value in figures.items())
            progress(f"model time {sleep_ms} ms: {shown}")
            rows.append([f"{sleep_ms} ms", *(f"{figures[name]:.2f}" for name in urls)])
    finally:
        for server, _ in servers.values():
            shutdown(server)
    print(f"# idle gaps at c=1; {machine()}\n")
    print(f"p50 answer time minus the model's time, ms; {args.requests} requests per server and row, "
          f"in blocks of {BLOCK} alternating between the servers.\n")
    print(table(["model time (a sleep)", *(f"{name} overhead ms" for name in urls)], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
