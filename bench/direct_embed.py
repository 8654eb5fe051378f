"""The embed model called directly, no server: the baselines that bench/serving.py compares to.

Runs as a subprocess of the benchmark (``DirectEmbed`` starts it), so that it has its own torch
threads and its CPU can be told apart from the servers'. It loads ``Embed``, warms up, prints
``ready``, then answers each command on stdin with one JSON line on stdout:

  batch S W  ``Embed.encode`` of 32 sentences, call after call for S seconds: {"items_per_s": x}
  one S W    ``Embed.predict`` of one item, call after call for S seconds: {"samples_ms": [...]}

each after W calls that are not counted.

It stays loaded between commands, so ``one`` rounds can be interleaved with rounds against a
server: both then see the same machine (this one is shared; a direct call's p50 moved between
9.8 and 14.1 ms from one minute to the next).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

TEXT = "A man is playing a guitar on the street corner."
BATCH = 32
READY_TIMEOUT_S = 180.0
WARMUP_CALLS = 10


class DirectEmbed:
    """The benchmark's end: start the subprocess, send commands, read answers."""

    #: The script the subprocess runs (a subclass for another model names its own).
    SCRIPT = __file__

    def __init__(self, threads: int) -> None:
        self.proc = subprocess.Popen([sys.executable, self.SCRIPT, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        if self._line(READY_TIMEOUT_S) != "ready":
            self.close()
            raise RuntimeError("the direct-call subprocess did not start")

    def items_per_s(self, seconds: float) -> float:
        return float(self._ask("batch", seconds, WARMUP_CALLS)["items_per_s"])

    def one_item_ms(self, seconds: float, warmup: int = WARMUP_CALLS) -> list[float]:
        """Latencies of ``predict`` calls for ``seconds`` after ``warmup`` calls not counted."""
        return [float(x) for x in self._ask("one", seconds, warmup)["samples_ms"]]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> DirectEmbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, command: str, seconds: float, warmup: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command} {seconds} {warmup}\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line(seconds + 60))
        return answer

    def _line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                return self.proc.stdout.readline().strip()
            if self.proc.poll() is not None:
                raise RuntimeError(f"the direct-call subprocess exited with {self.proc.returncode}")
        raise TimeoutError(f"no answer from the direct-call subprocess in {timeout_s:.0f} s")


# --- the subprocess ----------------------------------------------------------------------------

def load(threads: int) -> Any:
    """Embed, loaded and warmed up, with ``threads`` torch threads (as the servers get)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    from watchkeeper.apps.embed import Embed

    torch.set_num_threads(threads)
    model = Embed()
    model.setup("cpu")
    for _ in range(WARMUP_CALLS):
        model.encode([TEXT] * BATCH)
    return model


def batch_rate(model: Any, seconds: float, warmup: int) -> dict[str, float]:
    texts = [TEXT] * BATCH
    for _ in range(warmup):
        model.encode(texts)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(texts)
        calls += 1
    return {"items_per_s": calls * BATCH / (time.perf_counter() - start)}


def one_item(model: Any, seconds: float, warmup: int) -> dict[str, list[float]]:
    inputs, params = model.Inputs(text=TEXT), model.Params(normalize=True)
    for _ in range(warmup):
        model.predict(inputs, params)
    samples: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(samples) < 10:
        began = time.perf_counter()
        model.predict(inputs, params)
        samples.append(round((time.perf_counter() - began) * 1000, 4))
    return {"samples_ms": samples}


def serve(threads: int) -> int:
    model = load(threads)
    commands = {"batch": batch_rate, "one": one_item}
    print("ready", flush=True)
    for line in sys.stdin:
        command, seconds, warmup = line.split()
        print(json.dumps(commands[command](model, float(seconds), int(warmup))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[sys.argv.index("--threads") + 1])))
