"""The entailment model called directly, no server: its in-process limit for bench/serving.py.

Runs as a subprocess of the benchmark (``DirectEntailment`` starts it), with its own torch
threads. It loads ``Entailment`` with the packaged weights, warms up, prints ``ready``, then
answers each command on stdin with one JSON line on stdout:

  batch S W  ``Entailment.predict_batch`` of 32 items, call after call for S seconds: {"items_per_s": x}
  one S W    ``Entailment.predict`` of one item, call after call for S seconds: {"samples_ms": [...]}

each after W calls that are not counted. The item is the benchmark's request body: the probe
scene and "there are two red circles".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from direct_embed import DirectEmbed

TEXT = "there are two red circles"
BATCH = 32
WARMUP_CALLS = 10


class DirectEntailment(DirectEmbed):
    """The benchmark's end: the same commands as DirectEmbed, answered by this script."""

    SCRIPT = __file__


def load(threads: int) -> tuple[Any, Any, Any]:
    """Entailment set up with the packaged weights, its validated item and params."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    from watchkeeper.apps.entailment import Entailment, weights_file
    from watchkeeper.apps.entailment.app import probe_picture

    torch.set_num_threads(threads)
    model = Entailment()
    model.options = Entailment.Options()
    model._files = {weights_file.WEIGHTS_NAME: weights_file.PACKAGED}
    model.setup("cpu")
    inputs = model.Inputs.model_validate({"image": probe_picture(), "text": TEXT})
    return model, inputs, model.Params()


def timed(call: Any, seconds: float, warmup: int) -> list[float]:
    """Milliseconds of each ``call()`` for ``seconds`` (at least 10), after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(samples) < 10:
        began = time.perf_counter()
        call()
        samples.append(round((time.perf_counter() - began) * 1000, 4))
    return samples


def serve(threads: int) -> int:
    model, inputs, params = load(threads)
    batch = ([inputs] * BATCH, [params] * BATCH)
    timed(lambda: model.predict_batch(*batch), 0, WARMUP_CALLS)
    print("ready", flush=True)
    for line in sys.stdin:
        command, seconds, warmup = line.split()
        if command == "batch":
            samples = timed(lambda: model.predict_batch(*batch), float(seconds), int(warmup))
            answer: dict[str, Any] = {"items_per_s": BATCH * 1000 * len(samples) / sum(samples)}
        else:
            answer = {"samples_ms": timed(lambda: model.predict(inputs, params), float(seconds),
                                          int(warmup))}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[sys.argv.index("--threads") + 1])))
