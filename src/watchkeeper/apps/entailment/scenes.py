"""Generated scenes for the entailment model: coloured shapes on a 4x4 grid, and their pictures.

Runs in worker processes (the app renders its probe scene) and in the offline train and
evaluate scripts. A scene is up to :data:`MAX_THINGS` shapes, one per cell of a
:data:`GRID` x :data:`GRID` grid, with a little jitter of size, place and colour. Pictures are
drawn with numpy at :data:`SUPERSAMPLE` times the model's resolution and averaged down, so
the model sees anti-aliased :data:`SIZE` x :data:`SIZE` images; the app shrinks any picture to
that size the same way (a box filter). Everything drawn comes from the ``numpy`` generator
passed in, so a seed gives the same scenes on every machine.

Change :data:`GENERATOR_VERSION` whenever what a seed produces changes: the weights' card
records the version they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COLOURS", "GENERATOR_VERSION", "GRID", "SHAPES", "SIZE", "SUPERSAMPLE", "Scene",
           "Thing", "random_scene", "render", "shrink"]

GENERATOR_VERSION = "1"
GRID = 4
#: The model's input: SIZE x SIZE RGB pixels, one cell of the grid every SIZE // GRID.
SIZE = 32
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 230),
    "yellow": (230, 205, 40),
    "white": (235, 235, 235),
}
MIN_THINGS, MAX_THINGS = 2, 6
BACKGROUND = (28, 28, 32)
COLOUR_JITTER = 18
NOISE_SIGMA = 3.0


@dataclass(frozen=True)
class Thing:
    """One shape in a scene: what it is, and its cell (row 0 at the top, column 0 at the left)."""

    shape: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    """The shapes of one picture, at most one per cell."""

    things: tuple[Thing, ...]

    def count(self, shape: str, colour: str | None = None) -> int:
        return sum(1 for t in self.things if t.shape == shape and colour in (None, t.colour))

    def matching(self, shape: str, colour: str | None = None) -> list[Thing]:
        return [t for t in self.things if t.shape == shape and colour in (None, t.colour)]


def random_scene(rng: np.random.Generator) -> Scene:
    """A random scene; kinds repeat often (a few kinds drawn, then each shape picks one)."""
    n = int(rng.integers(MIN_THINGS, MAX_THINGS + 1))
    kinds = [(SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))])
             for _ in range(int(rng.integers(1, n + 1)))]
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    things = []
    for cell in cells:
        shape, colour = kinds[int(rng.integers(len(kinds)))]
        things.append(Thing(shape, colour, int(cell) // GRID, int(cell) % GRID))
    return Scene(tuple(things))


def render(scene: Scene, rng: np.random.Generator, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The picture of ``scene``: RGB uint8, (SIZE * supersample) pixels square, not shrunk."""
    side = SIZE * supersample
    canvas = np.empty((side, side, 3), np.float32)
    canvas[:] = BACKGROUND
    cell = side // GRID
    for thing in scene.things:
        half = cell * rng.uniform(0.28, 0.40)
        slack = cell / 2 - half - 0.5
        cy = (thing.row + 0.5) * cell + rng.uniform(-slack, slack)
        cx = (thing.col + 0.5) * cell + rng.uniform(-slack, slack)
        colour = np.clip(np.array(COLOURS[thing.colour]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3),
                         0, 255)
        top, left = thing.row * cell, thing.col * cell
        v, u = np.mgrid[top:top + cell, left:left + cell].astype(np.float32) + 0.5
        mask = _mask(thing.shape, u - cx, v - cy, half)
        canvas[top:top + cell, left:left + cell][mask] = colour
    noise = rng.normal(0.0, NOISE_SIGMA, (SIZE, SIZE, 3)).astype(np.float32)  # one value a model pixel
    canvas += np.repeat(np.repeat(noise, supersample, axis=0), supersample, axis=1)
    return np.clip(canvas, 0, 255).round().astype(np.uint8)


def _mask(shape: str, u: np.ndarray, v: np.ndarray, half: float) -> np.ndarray:
    """Pixels inside ``shape`` of half-size ``half``, at offsets ``u`` (right) and ``v`` (down)."""
    if shape == "circle":
        return np.asarray(u * u + v * v <= half * half)
    if shape == "square":
        return np.asarray((np.abs(u) <= 0.85 * half) & (np.abs(v) <= 0.85 * half))
    if shape == "triangle":  # apex up, base at the bottom
        return np.asarray((v <= half) & (np.abs(u) <= (v + half) / 2))
    raise ValueError(f"unknown shape {shape!r}")


def shrink(rgb: np.ndarray) -> np.ndarray:
    """Any RGB picture as the model's SIZE x SIZE input (box filter), float32 in [0, 1],
    channels first."""
    h, w = rgb.shape[:2]
    if h == w and h % SIZE == 0:  # a whole multiple (the rendered scenes): a plain average
        k = h // SIZE
        small = rgb.reshape(SIZE, k, SIZE, k, 3).astype(np.float32).mean(axis=(1, 3))
    else:
        from PIL import Image

        small = np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BOX),
                           np.float32)
    return np.ascontiguousarray(small.transpose(2, 0, 1) / 255.0, dtype=np.float32)
