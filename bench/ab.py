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

With ``--concurrency N`` (N > 1) it compares throughput instead: rounds of wrk at N against
each version in turn (the other SIGSTOPped), and prints B/A as the median of the rounds'
ratios, over the rounds without steal time (``loadgen.STEAL_CLEAN``) when there are any, and
the front process's CPU time per answered request (a steadier figure of cost than req/s here).

Run: .venv/bin/python bench/ab.py A_SRC B_SRC [--model chaos|embed] [--sleep-ms 13] [--requests 800]
     .venv/bin/python bench/ab.py A_SRC B_SRC --model embed --concurrency 32 [--rounds 9]  (make bench-deps)
     .venv/bin/python bench/ab.py src src --b-key [...]   (the same tree, B with an API key on every request)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, KeepAlivePost, machine
from loadgen import STEAL_CLEAN, CpuClock, alternate, pause, resume, resumed, wrk, wrk_rate, wrk_script
from servers import BODIES, READY_TIMEOUT_S, WARMUP_S, WK_CHAOS, WK_EMBED, chaos_body

WARMUP = 30
ROUND_S = 4  # --concurrency: seconds of wrk per version per round


def request_body(model: str, sleep_ms: float) -> bytes:
    return json.dumps(body_of(model, sleep_ms)).encode()


def body_of(model: str, sleep_ms: float) -> dict[str, object]:
    return BODIES["embed"] if model == "embed" else chaos_body(sleep_ms)


def new_key(path: Path) -> str:
    """A key file at ``path`` with one key of every scope; the key."""
    from watchkeeper.front.api_keys import KeyFile, Scope

    return KeyFile(path).add("bench", frozenset(Scope))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_src", help="source tree of version A (the directory holding watchkeeper/)")
    parser.add_argument("b_src", help="source tree of version B")
    parser.add_argument("--model", choices=["chaos", "embed"], default="chaos")
    parser.add_argument("--sleep-ms", type=float, default=13.0, help="chaos only (default 13)")
    parser.add_argument("--requests", type=int, default=800, help="per version (default 800)")
    parser.add_argument("--concurrency", type=int, default=1, help="over 1: compare req/s with wrk")
    parser.add_argument("--rounds", type=int, default=9, help="with --concurrency (default 9)")
    parser.add_argument("--b-key", action="store_true",
                        help="B runs with an API key file and every request to B carries a key")
    args = parser.parse_args()
    keys = WK_EMBED if args.model == "embed" else WK_CHAOS
    trees = [str(Path(src).resolve()) for src in (args.a_src, args.b_src)]
    args.headers, settings = [{}, {}], [{}, {}]
    if args.b_key:
        key_file = Path(tempfile.mkdtemp()) / "keys.json"
        args.headers[1] = {"Authorization": f"Bearer {new_key(key_file)}"}
        settings[1] = {"api_keys_file": str(key_file)}
    servers = [BenchServer({args.model: keys}, env={"PYTHONPATH": tree}, server=extra)
               for tree, extra in zip(trees, settings, strict=True)]
    try:
        for server in servers:
            server.wait_ready(READY_TIMEOUT_S)
        if args.concurrency > 1:
            return compare_throughput(args, servers)
        body = request_body(args.model, args.sleep_ms)
        clients = [KeepAlivePost(f"{s.url}/v1/models/{args.model}/predict", body, headers)
                   for s, headers in zip(servers, args.headers, strict=True)]
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


def compare_throughput(args: argparse.Namespace, servers: list[BenchServer]) -> int:
    """Alternating wrk rounds at ``args.concurrency``, the version not measured paused."""
    urls = [f"{s.url}/v1/models/{args.model}/predict" for s in servers]
    pids = [s.proc.pid for s in servers]
    with tempfile.TemporaryDirectory() as directory:
        scripts = [wrk_script(body_of(args.model, args.sleep_ms), Path(directory), headers, f"{i}.lua")
                   for i, headers in enumerate(args.headers)]

        def rate(i: int) -> tuple[float, float]:
            """(req/s, the front process's CPU microseconds per answered request)."""
            start = CpuClock.now(pids[i])
            per_s = wrk_rate(urls[i], scripts[i], args.concurrency, ROUND_S)
            front_s = CpuClock.now(pids[i]).since(start)[1]
            return per_s, front_s * 1e6 / max(1.0, per_s * ROUND_S)

        for url, script in zip(urls, scripts, strict=True):
            wrk(url, script, args.concurrency, WARMUP_S)
        for pid in pids:
            pause(pid)
        try:
            rounds = alternate({"A": lambda: resumed(pids[0], lambda: rate(0)),
                                "B": lambda: resumed(pids[1], lambda: rate(1))}, args.rounds)
        finally:
            for pid in pids:
                resume(pid)
    clean = rounds.judged(min_share=0)
    ratios = [b[0] / a[0] for a, b in zip(rounds["A"], rounds["B"], strict=True)]
    cpu = {name: statistics.median(v[1] for v in rounds[name]) for name in ("A", "B")}
    workload = f"chaos sleeping {args.sleep_ms:g} ms" if args.model == "chaos" else "embed"
    print(f"# A/B at c={args.concurrency}, {workload}, {args.rounds} rounds of {ROUND_S} s; {machine()}")
    for name, src in (("A", args.a_src), ("B", args.b_src)):
        shown = ", ".join(f"{v:.0f}" + ("" if r in clean else "*") for r, (v, _) in enumerate(rounds[name]))
        print(f"{name} {src}: req/s by round {shown}")
    print(f"B / A: {statistics.median(ratios[r] for r in clean):.3f} (median of {len(clean)} rounds; "
          f"* = left out: steal over {STEAL_CLEAN:.0%}); all rounds {statistics.median(ratios):.3f}")
    print(f"front CPU per request (median of rounds): A {cpu['A']:.1f} us, B {cpu['B']:.1f} us, "
          f"B - A {cpu['B'] - cpu['A']:+.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
