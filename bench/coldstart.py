"""Cold start: `watchkeeper serve` to /readyz 200 for `embed`, against a bare script.

The bare script does only what the model itself needs: import it, load the weights, run
the warm-up input once. watchkeeper adds its front (uvicorn, FastAPI), the template
process that loads the weights, the fork of the worker and the worker's warm-up.
Both are timed from the moment the process is started, alternately, --rounds times.

Run: .venv/bin/python bench/coldstart.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, machine, table

TARGET_RATIO = 1.2

BARE = """
import time
start = time.perf_counter()
from watchkeeper.apps.embed import Embed
model = Embed()
model.setup("cpu")
loaded = time.perf_counter()
example = model.warmup()
inputs, params = model.Inputs.model_validate(example.inputs), model.Params.model_validate(example.params)
assert example.check(model.predict(inputs, params))
print("READY", loaded - start, time.perf_counter() - loaded, flush=True)
"""


def bare_once() -> tuple[float, float, float]:
    """(total s from process start, load s, warm-up s) of the bare script."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            total = time.perf_counter() - started
            _, load_s, warm_s = line.split()
            proc.wait(30)
            return total, float(load_s), float(warm_s)
    raise RuntimeError("the bare script did not finish")


def served_once() -> tuple[float, dict[str, float]]:
    """(s from `watchkeeper serve` start to /readyz 200, startup breakdown in ms)."""
    srv = BenchServer({"embed": {"app": "watchkeeper.apps.embed:Embed", "probe_interval_s": 0}})
    try:
        ready_s = srv.wait_ready()
        model = srv.client.get("/health").json()["models"]["embed"]
        breakdown = {**model["template"].get("startup_ms", {}), **model["replicas"][0]["startup_ms"]}
    finally:
        srv.stop()
    return ready_s, breakdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare: list[tuple[float, float, float]] = []
    served: list[tuple[float, dict[str, float]]] = []
    for _ in range(args.rounds):
        bare.append(bare_once())
        served.append(served_once())
    bare_s = statistics.median(b[0] for b in bare)
    served_s = statistics.median(s[0] for s in served)
    ratio = served_s / bare_s
    print(f"cold start of embed (all-MiniLM-L6-v2), median of {args.rounds}; {machine()}\n")
    print(table(["from process start to", "seconds", "vs bare", "target", "met"], [
        ["bare script: model loaded and warmed up", f"{bare_s:.2f}", "1.00x", "", ""],
        ["watchkeeper serve: /readyz 200", f"{served_s:.2f}", f"{ratio:.2f}x",
         f"<= {TARGET_RATIO}x", "yes" if ratio <= TARGET_RATIO else "NO"],
    ]))
    phases = ["import", "setup", "fork", "warmup"]
    rows = [[f"{p}" + (" (template)" if p in ("import", "setup") else " (worker)"),
             f"{statistics.median(s[1].get(p, 0.0) for s in served):.0f}"] for p in phases]
    rows.append(["bare script: load / warm-up",
                 f"{statistics.median(b[1] for b in bare) * 1000:.0f} / "
                 f"{statistics.median(b[2] for b in bare) * 1000:.0f}"])
    print()
    print(table(["watchkeeper start-up phase (as /health reports it)", "ms"], rows))


if __name__ == "__main__":
    main()
