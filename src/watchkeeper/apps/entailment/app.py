"""Visual entailment (a picture and a sentence in; yes, no or maybe out), batched on the CPU.

Runs in worker processes. The network (``network``) was trained by ``train`` on generated
scenes of coloured shapes (``scenes``, ``sentences``); its weights ship in the package
(``weights/entailment.safetensors``) and are declared with their sha256 from the card, so the
worker copies them into the model cache and checks them before ``setup``. The option
``weights`` loads another file instead (checked against ``weights_sha256`` when given).

The answer has the shape of the production OFA visual-entailment service: ``label`` and
``scores`` (softmax over yes, no and maybe). The probe is a check, not a ping: a fixed scene
and three sentences whose answers are known (one yes, one no, one maybe); a wrong answer to
any of them fails it, so weights that load but answer wrongly never make the worker ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from watchkeeper import contract
from watchkeeper.apps.entailment.scenes import SUPERSAMPLE, Scene, Thing, render, shrink
from watchkeeper.apps.entailment.sentences import LABELS, encode
from watchkeeper.apps.entailment.weights_file import PACKAGED, WEIGHTS_NAME, card, load
from watchkeeper.contract import Example, ImageInput, ModelFile

__all__ = ["PROBE_SCENE", "PROBE_SENTENCES", "Entailment", "probe_picture"]

MAX_TEXT = 300

#: The probe's scene: two red circles, a blue square to the right, a green triangle below.
PROBE_SCENE = Scene((
    Thing("circle", "red", 0, 0),
    Thing("circle", "red", 1, 2),
    Thing("square", "blue", 0, 3),
    Thing("triangle", "green", 3, 1),
))
PROBE_SEED = 15
#: The probe's sentences and their right answers (the first one is the Example's input).
PROBE_SENTENCES = (
    ("there are two red circles", "yes"),
    ("the square is green", "no"),
    ("the triangle is made of wood", "maybe"),
)


@cache
def probe_picture(supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The probe scene's picture (RGB uint8, 32 * ``supersample`` pixels square)."""
    return render(PROBE_SCENE, np.random.default_rng(PROBE_SEED), supersample)


class Entailment(contract.Model):
    """Does the picture say the sentence is true (yes), false (no), or not say (maybe)?"""

    class Inputs(contract.Inputs):
        image: ImageInput = Field(description="The picture (PNG, JPEG or WebP); it is shrunk to "
                                              "32x32 pixels, as the model was trained.")
        text: contract.CleanText = Field(
            min_length=1, max_length=MAX_TEXT,
            description="The sentence (the hypothesis) to check against the picture, e.g. "
            "'there are two red circles'.")

    class Params(contract.Params):
        threshold: float | None = Field(
            None, ge=0, le=1,
            description="When set, answer maybe unless the yes or the no score reaches it.")

    class Options(contract.Options):
        weights: Path | None = Field(None, description="Another weights file (safetensors, "
                                                       "written by the training script).")
        weights_sha256: str | None = Field(
            None, pattern=r"^[0-9a-fA-F]{64}$",
            description="The sha256 that file must have (unset: not checked).")

    max_batch_size = 32

    @classmethod
    def files(cls, options: Any) -> list[ModelFile]:
        """The weights: the packaged file (checked against the card), or the ``weights`` option."""
        name = WEIGHTS_NAME
        if options.weights is not None:
            return [ModelFile(name, options.weights_sha256, path=Path(options.weights))]
        digest = card()["files"][name]["sha256"]
        return [ModelFile(name, digest, source=PACKAGED)]

    def setup(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # no OpenMP pool here: a worker forked from it would hang
        try:
            net, self.vocab = load(self.file(WEIGHTS_NAME))
        finally:
            torch.set_num_threads(threads)
        self.net = net.to(self.device)

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        return self.predict_batch([inputs], [params])[0]

    def predict_batch(self, inputs: Sequence[Any], params: Sequence[Any]) -> list[dict[str, Any]]:
        scores = self.scores([one.image for one in inputs], [one.text for one in inputs])
        return [_answer(row, p.threshold) for row, p in zip(scores, params, strict=True)]

    def scores(self, pictures: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """Softmax scores, float32 (len(texts), 3) in LABELS order, in one forward pass."""
        torch = self.torch
        images = torch.from_numpy(np.stack([shrink(p) for p in pictures])).to(self.device)
        ids = torch.from_numpy(encode(list(texts), self.vocab)).to(self.device)
        with torch.inference_mode():
            probabilities = torch.softmax(self.net(images, ids).float(), dim=1)
        result: np.ndarray = probabilities.cpu().numpy()
        return result

    def probe(self) -> Example:
        """The probe scene with 'there are two red circles' (yes); the check also asks the
        other two sentences (no, maybe) and fails naming every wrong answer."""
        from watchkeeper.worker import images

        text, _ = PROBE_SENTENCES[0]
        return Example({"image": images.png(probe_picture()).data, "text": text},
                       check=self._check_probe)

    def _check_probe(self, outputs: dict[str, Any]) -> bool:
        rest = PROBE_SENTENCES[1:]
        scores = self.scores([probe_picture()] * len(rest), [text for text, _ in rest])
        answers = [outputs, *(_answer(row, None) for row in scores)]
        wrong = [f"{text!r} got {out['label']} (expected {want}; scores "
                 + ", ".join(f"{k} {v:.2f}" for k, v in out["scores"].items()) + ")"
                 for (text, want), out in zip(PROBE_SENTENCES, answers, strict=True)
                 if out["label"] != want]
        if wrong:
            raise AssertionError("wrong answers on the probe scene: " + "; ".join(wrong))
        return True


def _answer(row: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """The label and the scores of one item, as the OFA service returns them."""
    scores = {name: round(float(row[i]), 6) for i, name in enumerate(LABELS)}
    label = LABELS[int(np.argmax(row))]
    if threshold is not None and max(scores["yes"], scores["no"]) < threshold:
        label = "maybe"
    return {"label": label, "scores": scores}
