"""Compare two versions of watchkeeper at concurrency 1, request by request.

For work on the hot path: start ``watchkeeper serve`` from two source trees (``PYTHONPATH``
set to each tree's ``src``; e.g. a ``git worktree`` of main and your change) and send one
request to each in turn, the order flipping every pair, so both see the same machine: on
this shared machine, runs minutes apart differ by more than most changes do, while pairs
of requests a few milliseconds apart do not (an A/A run reads within about 0.05 ms).

Prints each version's p50 answer time, the median of the pairs' differences, and the p50
of answer time minus the worker's ``timings.inference_ms`` (the time outside the model).
The default workload is the ``chaos`` model sleeping 13 ms (about embed's time per request,
so the CPUs idle between hops as they do under a real model); ``--sleep-ms 0`` is back to
back, ``--model embed`` the real model.

Run: .venv/bin/python bench/ab.py A_SRC B_SRC [--model chaos|embed] [--sleep-ms 13] [--requests 800]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, KeepAlivePost, machine
from loadgen import alternate
from servers import BODIES, READY_TIMEOUT_S, WK_CHAOS, WK_EMBED, chaos_body

WARMUP = 30


def request_body(model: str, sleep_ms: float) -> bytes:
    return json.dumps(BODIES["embed"] if model == "embed" else chaos_body(sleep_ms)).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_src", help="source tree of version A (the directory holding watchkeeper/)")
    parser.add_argument("b_src", help="source tree of version B")
    parser.add_argument("--model", choices=["chaos", "embed"], default="chaos")
    parser.add_argument("--sleep-ms", type=float, default=13.0, help="chaos only (default 13)")
    parser.add_argument("--requests", type=int, default=800, help="per version (default 800)")
    args = parser.parse_args()
    keys = WK_EMBED if args.model == "embed" else WK_CHAOS
    trees = [str(Path(src).resolve()) for src in (args.a_src, args.b_src)]
    servers = [BenchServer({args.model: keys}, env={"PYTHONPATH": tree}) for tree in trees]
    try:
        for server in servers:
            server.wait_ready(READY_TIMEOUT_S)
        body = request_body(args.model, args.sleep_ms)
        clients = [KeepAlivePost(f"{s.url}/v1/models/{args.model}/predict", body) for s in servers]
        for client in clients:
            client.warm_up(WARMUP)
        samples = alternate({"A": clients[0].timed, "B": clients[1].timed}, args.requests)
        a, b = samples["A"], samples["B"]
    finally:
        for server in servers:
            server.stop()
    p50 = [statistics.median(t for t, _ in s) for s in (a, b)]
    outside = [statistics.median(t - i for t, i in s) for s in (a, b)]
    pairs = statistics.median(tb - ta for (ta, _), (tb, _) in zip(a, b, strict=True))
    workload = f"chaos sleeping {args.sleep_ms:g} ms" if args.model == "chaos" else "embed"
    print(f"# A/B at c=1, {workload}, {args.requests} requests each; {machine()}")
    print(f"A {args.a_src}: p50 {p50[0]:.3f} ms, outside the model {outside[0]:.3f} ms")
    print(f"B {args.b_src}: p50 {p50[1]:.3f} ms, outside the model {outside[1]:.3f} ms")
    print(f"B - A: {pairs:+.3f} ms (median of the pairs), "
          f"{outside[1] - outside[0]:+.3f} ms outside the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
