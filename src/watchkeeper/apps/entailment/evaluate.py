"""Accuracy of the entailment weights on the held-out set: overall, per class, confusion matrix.

An offline script (``python -m watchkeeper.apps.entailment.evaluate [--weights FILE] [--n N]``),
also used by the training script (for the card) and the tests. The set is
``data.held_out_set``: scenes the training never saw, half of the sentences from templates
held out of training. Prints a markdown table and the confusion matrix (rows: the truth,
columns: the answer).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from watchkeeper.apps.entailment import data, weights_file
from watchkeeper.apps.entailment.sentences import HELD_OUT, LABELS

__all__ = ["accuracy_report", "confusion_text", "predict", "report_text"]

BATCH = 256


def predict(net: Any, vocab: list[str], batch: data.Batch) -> np.ndarray:
    """The network's answers (indices into LABELS) for a batch, ``BATCH`` items at a time."""
    import torch

    from watchkeeper.apps.entailment.sentences import encode

    answers = []
    with torch.inference_mode():
        for start in range(0, len(batch.sentences), BATCH):
            images = torch.from_numpy(batch.images[start:start + BATCH])
            ids = torch.from_numpy(encode(batch.sentences[start:start + BATCH], vocab))
            answers.append(net(images, ids).argmax(dim=1).numpy())
    return np.concatenate(answers)


def accuracy_report(labels: np.ndarray, answers: np.ndarray, templates: Sequence[str]) -> dict[str, Any]:
    """Accuracy overall, per class, on held-out and training templates, and the confusion matrix."""
    right = labels == answers
    held = np.array([t in HELD_OUT for t in templates])
    confusion = np.zeros((len(LABELS), len(LABELS)), np.int64)
    np.add.at(confusion, (labels, answers), 1)
    return {
        "items": int(len(labels)),
        "overall": round(float(right.mean()), 4),
        "per_class": {name: round(float(right[labels == i].mean()), 4) for i, name in enumerate(LABELS)},
        "held_out_templates": round(float(right[held].mean()), 4) if held.any() else None,
        "training_templates": round(float(right[~held].mean()), 4) if (~held).any() else None,
        "confusion": confusion.tolist(),
    }


def confusion_text(confusion: list[list[int]]) -> str:
    """The confusion matrix as a markdown table (rows: truth, columns: answer)."""
    lines = ["| truth \\ answer | " + " | ".join(LABELS) + " |", "|---|" + "---:|" * len(LABELS)]
    lines += [f"| {name} | " + " | ".join(str(n) for n in row) + " |"
              for name, row in zip(LABELS, confusion, strict=True)]
    return "\n".join(lines)


def report_text(report: dict[str, Any]) -> str:
    """The accuracy table and the confusion matrix, in markdown."""
    rows = [("overall", report["overall"]),
            *((f"truth {k}", v) for k, v in report["per_class"].items()),
            ("sentences from held-out templates", report["held_out_templates"]),
            ("sentences from training templates", report["training_templates"])]
    lines = [f"held-out set: {report['items']} items (scenes the training never saw)", "",
             "| measure | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {value:.1%} |" for name, value in rows if value is not None]
    return "\n".join([*lines, "", "confusion matrix:", "", confusion_text(report["confusion"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=weights_file.PACKAGED,
                        help="safetensors file (default: the packaged weights)")
    parser.add_argument("--n", type=int, default=data.EVAL_SIZE, help="items of the held-out set")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    net, vocab = weights_file.load(args.weights)
    batch = data.held_out_set(args.n)
    report = accuracy_report(batch.labels, predict(net, vocab, batch), batch.templates)
    print(report_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
