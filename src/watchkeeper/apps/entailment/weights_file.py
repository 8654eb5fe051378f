"""The entailment weights on disk: a safetensors file that carries its vocabulary, and its card.

Runs in worker processes (the app loads the weights) and in the offline train and evaluate
scripts. The file's metadata holds the network's sizes, the vocabulary (as JSON) and the
scene generator's version, so the weights never meet a tokenizer of another version. The
card (``weights/card.json``) records how they were made and each file's sha256, which the
worker checks before loading (``Entailment.files``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CARD", "PACKAGED", "WEIGHTS_NAME", "card", "load", "save"]

WEIGHTS_NAME = "entailment.safetensors"
FOLDER = Path(__file__).resolve().parent / "weights"
PACKAGED = FOLDER / WEIGHTS_NAME
CARD = FOLDER / "card.json"


def card() -> dict[str, Any]:
    """The packaged card."""
    loaded: dict[str, Any] = json.loads(CARD.read_text())
    return loaded


def save(net: Any, vocab: list[str], generator_version: str, path: Path) -> None:
    """Write the network's tensors and its metadata (sizes, vocabulary, generator version)."""
    from safetensors.torch import save_file

    metadata = {**net.config.as_metadata(), "vocabulary": json.dumps(vocab),
                "generator_version": generator_version}
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load(path: Path) -> tuple[Any, list[str]]:
    """The network (in eval mode, on the CPU) and its vocabulary, from a weights file.

    A file whose tensors do not fit the network it describes raises ValueError naming it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from watchkeeper.apps.entailment.network import EntailmentNet, NetConfig

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "vocabulary" not in metadata:
        raise ValueError(f"{path}: no vocabulary in its metadata (not an entailment weights file)")
    vocab = json.loads(metadata["vocabulary"])
    net = EntailmentNet(NetConfig.from_metadata(metadata))
    try:
        net.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: its tensors do not fit the network: {exc}") from None
    return net.eval(), vocab
