"""Sentences about a scene and what the scene says of them: yes, no or maybe.

Runs in worker processes (the app's tokenizer and probe) and in the offline train and
evaluate scripts. Four kinds of sentence, in the style of the ShapeWorld evaluation:

- counts: "there are two red circles" (yes when exactly two, else no);
- attributes: "the square is blue" (about a shape the scene has exactly one of);
- relations: "a triangle is left of a circle" (cells strictly left, right, above, below);
- statements no picture settles: "the circle is made of wood", "the square is heavy": maybe.

Each kind has several templates; those in :data:`HELD_OUT` are never used for training and
appear only in the evaluation, which checks that the model understands sentences it was
never trained on. Labels are drawn first (a third each), then a sentence that has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from watchkeeper.apps.entailment.scenes import COLOURS, SHAPES, Scene, Thing

__all__ = ["HELD_OUT", "LABELS", "MAX_TOKENS", "TEMPLATES", "Item", "Template", "encode",
           "sample_item", "tokens", "vocabulary"]

LABELS = ("yes", "no", "maybe")
NUMBERS = ("one", "two", "three", "four")
MATERIALS = ("wood", "metal", "glass", "plastic", "stone", "paper", "rubber")
PROPERTIES = ("heavy", "hot", "cold", "old", "new", "expensive", "cheap", "soft", "hard", "wet",
              "fragile", "magnetic")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
MAX_TOKENS = 16
PAD, UNK = "<pad>", "<unk>"
T = TypeVar("T")


@dataclass(frozen=True)
class Template:
    """A sentence pattern: its name, its kind, and its text with ``{slots}``."""

    name: str
    kind: str  # count, exists, attribute, maybe, relation
    text: str
    held_out: bool = False


TEMPLATES = (
    Template("count_there", "count", "there {be} {n} {things}"),
    Template("count_shows", "count", "the picture shows {n} {things}"),
    Template("count_see", "count", "i can see {n} {things}"),
    Template("count_picture", "count", "the picture contains {n} {things}"),
    Template("count_contains", "count", "the scene contains {n} {things}", held_out=True),
    Template("exists_there", "exists", "there is a {thing}"),
    Template("exists_contains", "exists", "the picture contains a {thing}"),
    Template("exists_scene", "exists", "the scene shows a {thing}"),
    Template("exists_in", "exists", "there is a {thing} in the picture"),
    Template("attr_is", "attribute", "the {shape} is {colour}"),
    Template("attr_coloured", "attribute", "the {shape} is coloured {colour}"),
    Template("attr_colour_of", "attribute", "the colour of the {shape} is {colour}"),
    Template("attr_in", "attribute", "the {shape} in the picture is {colour}", held_out=True),
    Template("maybe_made", "maybe", "the {shape} is made of {material}"),
    Template("maybe_is", "maybe", "the {shape} is {property}"),
    Template("maybe_colour_is", "maybe", "the {colour} {shape} is {property}"),
    Template("maybe_in", "maybe", "the {shape} in the picture is {property}", held_out=True),
    Template("maybe_colour_made", "maybe", "the {colour} {shape} is made of {material}", held_out=True),
    Template("rel_left", "relation", "a {thing} is left of a {other}"),
    Template("rel_right", "relation", "a {thing} is right of a {other}"),
    Template("rel_above", "relation", "a {thing} is above a {other}"),
    Template("rel_below", "relation", "a {thing} is below a {other}"),
    Template("rel_to_left", "relation", "a {thing} is to the left of a {other}"),
    Template("rel_to_right", "relation", "a {thing} is to the right of a {other}", held_out=True),
)
HELD_OUT = frozenset(t.name for t in TEMPLATES if t.held_out)
_RELATION_OF = {"rel_left": "left of", "rel_right": "right of", "rel_above": "above",
                "rel_below": "below", "rel_to_left": "left of", "rel_to_right": "right of"}


@dataclass(frozen=True)
class Item:
    """A sentence about a scene, its label (one of LABELS) and the template it came from."""

    sentence: str
    label: str
    template: str


def tokens(sentence: str) -> list[str]:
    """Lower-case words, punctuation dropped."""
    return re.findall(r"[a-z]+", sentence.lower())


def vocabulary() -> list[str]:
    """Every word of the training templates and their fillers, padding and unknown first."""
    words = {w for t in TEMPLATES if not t.held_out for w in tokens(re.sub(r"\{\w+\}", " ", t.text))}
    words |= {"is", "are", *NUMBERS, *COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *MATERIALS,
              *PROPERTIES}
    return [PAD, UNK, *sorted(words)]


def encode(sentences: list[str], vocab: list[str]) -> np.ndarray:
    """Token ids, int64 of shape (len(sentences), MAX_TOKENS), padded with 0, cut at MAX_TOKENS."""
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    ids = np.zeros((len(sentences), MAX_TOKENS), np.int64)
    for row, sentence in enumerate(sentences):
        words = tokens(sentence)[:MAX_TOKENS]
        ids[row, :len(words)] = [index.get(w, unk) for w in words]
    return ids


def sample_item(scene: Scene, rng: np.random.Generator, held_out: bool,
                kind_weights: dict[str, float] | None = None) -> Item:
    """A sentence about ``scene`` from the held-out templates (``held_out``) or the others;
    templates are equally likely, or weighted by their kind's ``kind_weights``."""
    label = LABELS[int(rng.integers(len(LABELS)))]
    pool = [t for t in TEMPLATES if t.held_out == held_out and (t.kind == "maybe") == (label == "maybe")]
    weights = np.array([(kind_weights or {}).get(t.kind, 1.0) for t in pool])
    while True:
        template = pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
        slots = _FILLERS[template.kind](scene, rng, label == "yes", template.name)
        if slots is not None:
            return Item(template.text.format(**slots), label, template.name)


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _noun(shape: str, colour: str | None, plural: bool = False) -> str:
    word = shape + ("s" if plural else "")
    return f"{colour} {word}" if colour else word


def _described(rng: np.random.Generator, scene: Scene) -> tuple[str, str | None]:
    """A shape and maybe a colour, usually of a thing in the scene."""
    if rng.random() < 0.75:
        thing = scene.things[int(rng.integers(len(scene.things)))]
        shape, colour = thing.shape, thing.colour
    else:
        shape, colour = _pick(rng, SHAPES), _pick(rng, list(COLOURS))
    return shape, colour if rng.random() < 0.6 else None


def _count_slots(scene: Scene, rng: np.random.Generator, yes: bool,
                 template: str) -> dict[str, str] | None:
    shape, colour = _described(rng, scene)
    true = scene.count(shape, colour)
    if yes and not 1 <= true <= len(NUMBERS):
        return None
    n = true if yes else _pick(rng, [k for k in range(1, len(NUMBERS) + 1) if k != true])
    return {"be": "is" if n == 1 else "are", "n": NUMBERS[n - 1], "things": _noun(shape, colour, n > 1)}


def _exists_slots(scene: Scene, rng: np.random.Generator, yes: bool,
                  template: str) -> dict[str, str] | None:
    shape, colour = _described(rng, scene)
    if (scene.count(shape, colour) > 0) != yes:
        return None
    return {"thing": _noun(shape, colour)}


def _attribute_slots(scene: Scene, rng: np.random.Generator, yes: bool,
                     template: str) -> dict[str, str] | None:
    unique = [t for t in scene.things if scene.count(t.shape) == 1]
    if not unique:
        return None
    thing = unique[int(rng.integers(len(unique)))]
    colour = thing.colour if yes else _pick(rng, [c for c in COLOURS if c != thing.colour])
    return {"shape": thing.shape, "colour": colour}


def _maybe_slots(scene: Scene, rng: np.random.Generator, yes: bool,
                 template: str) -> dict[str, str] | None:
    thing = scene.things[int(rng.integers(len(scene.things)))]
    return {"shape": thing.shape, "colour": thing.colour, "material": _pick(rng, MATERIALS),
            "property": _pick(rng, PROPERTIES)}


def _holds(a: Thing, b: Thing, relation: str) -> bool:
    drow, dcol = RELATIONS[relation]
    if drow:
        return (a.row - b.row) * drow > 0
    return (a.col - b.col) * dcol > 0


def relation_holds(scene: Scene, first: tuple[str, str | None], second: tuple[str, str | None],
                   relation: str) -> bool:
    """Whether some thing matching ``first`` is ``relation`` some other matching ``second``."""
    return any(_holds(a, b, relation) for a in scene.matching(*first) for b in scene.matching(*second)
               if a is not b)


def _relation_slots(scene: Scene, rng: np.random.Generator, yes: bool,
                    template: str) -> dict[str, str] | None:
    relation = _RELATION_OF[template]
    for _ in range(8):
        first, second = _described(rng, scene), _described(rng, scene)
        if relation_holds(scene, first, second, relation) == yes:
            return {"thing": _noun(*first), "other": _noun(*second)}
    return None


_FILLERS: dict[str, Callable[[Scene, np.random.Generator, bool, str], dict[str, str] | None]] = {
    "count": _count_slots,
    "exists": _exists_slots,
    "attribute": _attribute_slots,
    "maybe": _maybe_slots,
    "relation": _relation_slots,
}
