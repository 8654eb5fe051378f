"""The entailment model's data: the training scenes, the held-out evaluation set, batches.

Runs in the offline train and evaluate scripts and in the tests (numpy only, no torch).
Scene layouts and their pixels come from separate seeded generators, so the training layouts
can be listed without drawing them, and the evaluation set leaves out every layout the
training used: its scenes are ones the training never saw, and half of its sentences come
from the templates held out of training (``sentences.HELD_OUT``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from watchkeeper.apps.entailment import scenes, sentences
from watchkeeper.apps.entailment.scenes import Scene

__all__ = ["EVAL_SIZE", "Batch", "cell_contents", "layout_key", "held_out_set", "training_layouts",
           "training_pixels", "training_sentences"]

TRAIN_LAYOUT_SEED, TRAIN_PIXEL_SEED, TRAIN_SENTENCE_SEED = 101, 102, 103
EVAL_SEED = 202
TRAIN_SCENES = 24_000
EVAL_SIZE = 3_000
#: Training draws counts and relations (the hard kinds) more often than the evaluation does.
TRAIN_KIND_WEIGHTS = {"count": 2.5, "relation": 1.5, "exists": 0.5, "attribute": 0.5}


@dataclass(frozen=True)
class Batch:
    """Pictures (n, 3, 32, 32) float32, sentences, labels (indices into LABELS), templates."""

    images: np.ndarray
    sentences: list[str]
    labels: np.ndarray
    templates: list[str]


def layout_key(scene: Scene) -> frozenset[scenes.Thing]:
    """What makes two scenes the same layout (the order of its things does not matter)."""
    return frozenset(scene.things)


def training_layouts(n: int = TRAIN_SCENES) -> list[Scene]:
    """The layouts of the training scenes, in order."""
    rng = np.random.default_rng(TRAIN_LAYOUT_SEED)
    return [scenes.random_scene(rng) for _ in range(n)]


def training_pixels(layouts: list[Scene]) -> np.ndarray:
    """The training pictures, shrunk to the model's input, as uint8 (n, 3, 32, 32)."""
    rng = np.random.default_rng(TRAIN_PIXEL_SEED)
    out = np.empty((len(layouts), 3, scenes.SIZE, scenes.SIZE), np.uint8)
    for i, scene in enumerate(layouts):
        out[i] = (scenes.shrink(scenes.render(scene, rng)) * 255).round()
    return out


def training_sentences(layouts: list[Scene], pixels: np.ndarray, size: int,
                       rng: np.random.Generator) -> tuple[Batch, np.ndarray]:
    """A training batch: ``size`` random scenes, each with a sentence of a training template,
    and what their cells hold (``cell_contents``)."""
    picks = rng.integers(len(layouts), size=size)
    items = [sentences.sample_item(layouts[i], rng, held_out=False, kind_weights=TRAIN_KIND_WEIGHTS)
             for i in picks]
    contents = np.stack([cell_contents(layouts[i]) for i in picks])
    return _batch(pixels[picks].astype(np.float32) / 255, items), contents


def cell_contents(scene: Scene) -> np.ndarray:
    """What each cell holds, row by row: 0 when empty, else 1 + shape * colours + colour."""
    out = np.zeros(scenes.GRID * scenes.GRID, np.int64)
    colours = list(scenes.COLOURS)
    for t in scene.things:
        kind = scenes.SHAPES.index(t.shape) * len(colours) + colours.index(t.colour)
        out[t.row * scenes.GRID + t.col] = 1 + kind
    return out


def held_out_set(n: int = EVAL_SIZE, seen: set[frozenset[scenes.Thing]] | None = None) -> Batch:
    """The fixed evaluation set: the first ``n`` items (``seen``: layouts to leave out; by
    default the training's). Odd items use the held-out templates, even ones the others."""
    if seen is None:
        seen = {layout_key(s) for s in training_layouts()}
    rng = np.random.default_rng(EVAL_SEED)
    images: list[np.ndarray] = []
    items: list[sentences.Item] = []
    while len(items) < n:
        scene = scenes.random_scene(rng)
        if layout_key(scene) in seen:
            continue
        images.append(scenes.shrink(scenes.render(scene, rng)))
        items.append(sentences.sample_item(scene, rng, held_out=len(items) % 2 == 1))
    return _batch(np.stack(images), items)


def _batch(images: np.ndarray, items: list[sentences.Item]) -> Batch:
    labels = np.array([sentences.LABELS.index(it.label) for it in items], np.int64)
    return Batch(images, [it.sentence for it in items], labels, [it.template for it in items])
