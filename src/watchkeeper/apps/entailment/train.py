"""Training the entailment network on generated scenes: the packaged weights and their card.

An offline script: ``python -m watchkeeper.apps.entailment.train`` (about 4 minutes on 2
cores) writes ``weights/entailment.safetensors`` and ``weights/card.json`` in the package,
or in ``--out``. Everything is seeded (scenes, sentences, initial weights, batch order) and
torch runs with 2 threads, so the same command gives the same accuracy figures (bit-identical
weights need the same torch build and CPU). Steps: draw the training scenes once; then
``--steps`` batches of random scenes, each with a fresh sentence from the training templates;
the loss is the answer's plus (weighted by ``CELL_LOSS``) what each cell of the picture holds;
AdamW with a warm-up and a cosine decay; finally the held-out evaluation, whose figures go
into the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from watchkeeper.apps.entailment import data, evaluate, weights_file
from watchkeeper.apps.entailment.scenes import GENERATOR_VERSION
from watchkeeper.apps.entailment.sentences import HELD_OUT, encode, vocabulary

__all__ = ["main", "train"]

TORCH_SEED = 7
THREADS = 2
STEPS = 5000
BATCH = 128
LEARNING_RATE = 2e-3
WARMUP_STEPS = 150
WEIGHT_DECAY = 0.01
LOG_EVERY = 250
#: Weight of the second loss: what each cell holds (see network).
CELL_LOSS = 0.5


def learning_rate(step: int, steps: int) -> float:
    """Linear warm-up, then a cosine decay to a tenth."""
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(steps: int, log: Any = print) -> tuple[Any, list[str]]:
    """The trained network (eval mode) and its vocabulary."""
    import torch

    from watchkeeper.apps.entailment.network import EntailmentNet, NetConfig

    torch.manual_seed(TORCH_SEED)
    vocab = vocabulary()
    layouts = data.training_layouts()
    pixels = data.training_pixels(layouts)
    log(f"{len(layouts)} training scenes drawn")
    net = EntailmentNet(NetConfig(vocab_size=len(vocab)))
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(data.TRAIN_SENTENCE_SEED)
    net.train()
    running = 0.0
    for step in range(steps):
        batch, contents = data.training_sentences(layouts, pixels, BATCH, rng)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps)
        logits, cells = net.forward_with_cells(torch.from_numpy(batch.images),
                                               torch.from_numpy(encode(batch.sentences, vocab)))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(batch.labels))
        loss = loss + CELL_LOSS * torch.nn.functional.cross_entropy(
            cells.flatten(0, 1), torch.from_numpy(contents).flatten())
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % LOG_EVERY == 0:
            log(f"step {step + 1}/{steps}: loss {running:.4f}")
    return net.eval(), vocab


def write_card(path: Path, weights: Path, command: str, steps: int, seconds: float,
               report: dict[str, Any], vocab: list[str]) -> None:
    """The card: how the weights were made, how well they do, and their digest."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {
        "model": "watchkeeper entailment (CNN image encoder, GRU text encoder, 2-layer transformer fusion)",
        "training_command": command,
        "generator_version": GENERATOR_VERSION,
        "seeds": {"layouts": data.TRAIN_LAYOUT_SEED, "pixels": data.TRAIN_PIXEL_SEED,
                  "sentences": data.TRAIN_SENTENCE_SEED, "torch": TORCH_SEED, "eval": data.EVAL_SEED},
        "training": {"scenes": data.TRAIN_SCENES, "steps": steps, "batch": BATCH,
                     "threads": THREADS, "seconds": round(seconds, 1)},
        "held_out_templates": sorted(HELD_OUT),
        "vocabulary": vocab,
        "accuracy": report,
        "files": {weights.name: {"sha256": digest, "bytes": weights.stat().st_size}},
    }
    path.write_text(json.dumps(card, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    parser.add_argument("--out", type=Path, default=weights_file.FOLDER,
                        help="folder of the weights and card (default: the package's)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    net, vocab = train(args.steps, log=lambda m: print(f"[{time.perf_counter() - started:6.1f} s] {m}",
                                                       flush=True))
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / weights_file.WEIGHTS_NAME
    weights_file.save(net, vocab, GENERATOR_VERSION, weights)
    batch = data.held_out_set()
    report = evaluate.accuracy_report(batch.labels, evaluate.predict(net, vocab, batch), batch.templates)
    command = "python -m watchkeeper.apps.entailment.train" + (
        f" --steps {args.steps}" if args.steps != STEPS else "")
    write_card(args.out / "card.json", weights, command, args.steps, seconds, report, vocab)
    print(f"trained in {seconds:.0f} s\n{evaluate.report_text(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
