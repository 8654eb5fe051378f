"""Cold start: `watchkeeper serve` to /readyz 200 for `embed`, against a bare script.

The bare script does only what the model itself needs: import it, load the weights, run
the warm-up input once. watchkeeper adds its front (uvicorn, FastAPI), the template
process that loads the weights, the fork of the worker and the worker's warm-up.
Both are timed from the moment the process is started, alternately, --rounds times.

With --ui: `watchkeeper serve` with the web UI on (`[ui] enabled`) against the same without
it, alternately: /readyz 200 must come within 10 % of the time without a UI (the front starts
the UI once the models have settled). Also printed: when the UI's own /livez first answered.

Run: .venv/bin/python bench/coldstart.py [--rounds N] [--ui]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from common import BenchServer, free_port, machine, table

TARGET_RATIO = 1.2
#: /readyz with the web UI on, against without it.
UI_TARGET_RATIO = 1.1
EMBED = {"embed": {"app": "watchkeeper.apps.embed:Embed", "probe_interval_s": 0}}

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
    srv = BenchServer(EMBED)
    try:
        ready_s = srv.wait_ready()
        model = srv.client.get("/health").json()["models"]["embed"]
        breakdown = {**model["template"].get("startup_ms", {}), **model["replicas"][0]["startup_ms"]}
    finally:
        srv.stop()
    return ready_s, breakdown


def with_ui_once(ui: bool) -> tuple[float, float | None]:
    """(s from `watchkeeper serve` start to /readyz 200, to the UI's /livez 200 or None)."""
    port = free_port()
    env = {"WK_UI__ENABLED": "true", "WK_UI__PORT": str(port)} if ui else None
    started = time.perf_counter()
    srv = BenchServer(EMBED, env=env)
    try:
        ready_s = srv.wait_ready()
        ui_s = None
        while ui and time.perf_counter() - started < 180:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                    ui_s = time.perf_counter() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    finally:
        srv.stop()
    return ready_s, ui_s


def compare_ui(rounds: int) -> None:
    off: list[float] = []
    on: list[tuple[float, float | None]] = []
    for _ in range(rounds):
        off.append(with_ui_once(False)[0])
        on.append(with_ui_once(True))
    off_s = statistics.median(off)
    on_s = statistics.median(r for r, _ in on)
    ui_up = [u for _, u in on if u is not None]
    ratio = on_s / off_s
    print(f"cold start of embed with the web UI on and off, median of {rounds}; {machine()}\n")
    print(table(["from process start to", "seconds", "vs UI off", "target", "met"], [
        ["/readyz 200, UI off", f"{off_s:.2f}", "1.00x", "", ""],
        ["/readyz 200, UI on", f"{on_s:.2f}", f"{ratio:.2f}x", f"<= {UI_TARGET_RATIO}x",
         "yes" if ratio <= UI_TARGET_RATIO else "NO"],
        ["the UI's /livez 200 (UI on)",
         f"{statistics.median(ui_up):.2f}" if ui_up else "never", "", "", ""],
    ]))
    print(f"\nratio /readyz UI on / off: {ratio:.3f} (each round: "
          + ", ".join(f"{r:.2f}/{o:.2f}" for (r, _), o in zip(on, off, strict=True)) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ui", action="store_true",
                        help="compare /readyz with the web UI on and off instead of the bare script")
    args = parser.parse_args()
    if args.ui:
        compare_ui(args.rounds)
        return
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
