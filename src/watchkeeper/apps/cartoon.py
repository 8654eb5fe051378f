"""Portrait cartoon (a photo in, a cartoon out), done on the CPU with OpenCV.

Runs in worker processes. There are no weights to load: the image is resized so that its
longest side is ``resolution``, smoothed with an edge-preserving (bilateral) filter, its colours
reduced to a small palette, and dark outlines multiplied in. ``style_level`` sets all three
strengths at once. A 1024-pixel output takes well under 300 ms on one core (PNG encoding
included); the worker sets OpenCV to one thread because worker processes share the cores.

The palette comes from k-means on a few thousand sampled pixels, and every pixel is mapped to
its nearest palette colour through a 64x64x64 look-up table, so the cost per pixel does not grow
with the palette size; the output is deterministic.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pydantic import Field

from watchkeeper import contract
from watchkeeper.contract import Example, ImageInput
from watchkeeper.worker import images

__all__ = ["Cartoon", "cartoonise", "check_output", "probe_image", "resize_longest"]

#: Longest side at which the bilateral filter runs; larger images are smoothed downscaled.
SMOOTH_MAX_SIDE = 640
#: Longest side at which the outlines' median blur runs; larger images are blurred downscaled.
OUTLINE_MAX_SIDE = 1024
#: Pixels sampled to fit the palette.
PALETTE_SAMPLE = 4096
PALETTE_ITERATIONS = 8
#: Bits per channel of the nearest-colour look-up table (6 bits: 262144 cells).
LUT_BITS = 6


#: Memory a request needs, per output pixel and in all (see ``Cartoon.estimate_memory``).
BYTES_PER_PIXEL = 16
BASE_BYTES = 8 * 2**20
#: Resolutions the degradation ladder steps down through.
DEGRADE_STEPS = (1536, 1024, 768, 512)


class Cartoon(contract.Model):
    """Photo (ideally a portrait) in, cartoon-style PNG out."""

    class Inputs(contract.Inputs):
        image: ImageInput = Field(description="The photo to cartoonise (PNG, JPEG or WebP).")

    class Params(contract.Params):
        style_level: float = Field(
            0.7,
            ge=0.1,
            le=1.0,
            description="Strength of the style: smoothing, fewer colours, bolder outlines.",
        )
        resolution: int = Field(
            1024,
            ge=512,
            le=2048,
            multiple_of=128,
            description="Longest side of the output in pixels (the input is scaled to it).",
        )

    def setup(self, device: str) -> None:
        """Nothing to load; OpenCV gets one thread because worker processes share the cores."""
        cv2.setNumThreads(1)

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        out = cartoonise(inputs.image, params.style_level, params.resolution)
        return {"image": images.png(out)}

    def estimate_memory(self, params: Any) -> int:
        """16 bytes per pixel of the square of ``resolution`` plus 8 MB: 72 MB at 2048 px,
        where a fresh worker's measured peak was 62-72 MB (docs/operations.md)."""
        return int(params.resolution**2 * BYTES_PER_PIXEL + BASE_BYTES)

    def degrade(self, params: Any) -> Any | None:
        """2048 -> 1536 -> 1024 -> 768 -> 512: one resolution step down at a time."""
        smaller = [r for r in DEGRADE_STEPS if r < params.resolution]
        return params.model_copy(update={"resolution": smaller[0]}) if smaller else None

    def probe(self) -> Example:
        return Example(
            inputs={"image": probe_image()},
            params={"resolution": 512, "style_level": 0.5},
            check=lambda out: check_output(out, longest=512),
        )


def cartoonise(rgb: np.ndarray, style_level: float, resolution: int) -> np.ndarray:
    """The cartoon of an RGB uint8 image, its longest side scaled to ``resolution``."""
    resized = resize_longest(rgb, resolution)
    smooth = _smooth(resized, style_level)
    flat = _quantise(smooth, _palette_size(style_level))
    lines = _outline(resized, style_level)
    return cv2.multiply(flat, cv2.cvtColor(lines, cv2.COLOR_GRAY2RGB), scale=1 / 255)


def resize_longest(rgb: np.ndarray, longest: int) -> np.ndarray:
    """``rgb`` scaled (up or down) so that its longest side is ``longest`` pixels."""
    h, w = rgb.shape[:2]
    scale = longest / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return np.ascontiguousarray(rgb)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, size, interpolation=interpolation)


def _smooth(rgb: np.ndarray, style_level: float) -> np.ndarray:
    """Edge-preserving smoothing, run at most at SMOOTH_MAX_SIDE and scaled back up."""
    h, w = rgb.shape[:2]
    small = resize_longest(rgb, min(max(h, w), SMOOTH_MAX_SIDE))
    sigma_colour = 20 + 60 * style_level
    for _ in range(2 + round(4 * style_level)):  # several small passes: 5x cheaper than d=7
        small = cv2.bilateralFilter(small, 5, sigma_colour, 5)
    if small.shape[:2] == (h, w):
        return small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _palette_size(style_level: float) -> int:
    """Number of colours: about 26 at style 0.1 down to 6 at style 1.0."""
    return round(28 - 22 * style_level)


def _quantise(rgb: np.ndarray, colours: int) -> np.ndarray:
    """Every pixel replaced by its nearest colour of a palette fitted to the image."""
    palette = _fit_palette(_sample(rgb), colours)
    rgbx = np.zeros((len(palette), 4), np.uint8)
    rgbx[:, :3] = palette.round()
    lut = rgbx.view(np.uint32)[_nearest_cells(palette).ravel(), 0]  # one 4-byte gather a pixel
    shift = 8 - LUT_BITS
    r, g, b = (rgb[..., c] >> shift for c in range(3))
    index = (r.astype(np.uint32) << (2 * LUT_BITS)) | (g.astype(np.uint32) << LUT_BITS) | b
    out = np.take(lut, index).view(np.uint8).reshape(*index.shape, 4)
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)


def _nearest_cells(palette: np.ndarray) -> np.ndarray:
    """Nearest palette index of every look-up cell's centre, shaped (cells, cells, cells).

    Squared distances are sums of per-channel terms, so each colour's distance cube is
    three broadcast vectors: no (cells^3 x colours) matrix is ever built.
    """
    shift = 8 - LUT_BITS
    centres = np.arange(1 << LUT_BITS, dtype=np.float32) * (1 << shift) + (1 << shift) / 2
    shape = (1 << LUT_BITS,) * 3
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.uint8)
    distance = np.empty(shape, np.float32)
    closer = np.empty(shape, bool)
    for i, (cr, cg, cb) in enumerate(palette):
        np.add(((centres - cr) ** 2)[:, None, None], ((centres - cg) ** 2)[None, :, None], distance)
        distance += ((centres - cb) ** 2)[None, None, :]
        np.less(distance, best, out=closer)
        np.copyto(best, distance, where=closer)
        labels[closer] = i
    return labels


def _sample(rgb: np.ndarray) -> np.ndarray:
    """About PALETTE_SAMPLE pixels on a regular grid, as float32 rows."""
    h, w = rgb.shape[:2]
    step = max(1, int(np.sqrt(h * w / PALETTE_SAMPLE)))
    return rgb[::step, ::step].reshape(-1, 3).astype(np.float32)


def _fit_palette(samples: np.ndarray, colours: int) -> np.ndarray:
    """A few rounds of k-means, started from samples spread over the brightness range."""
    order = np.argsort(samples.sum(axis=1), kind="stable")
    picks = np.linspace(0, len(samples) - 1, colours).round().astype(int)
    centres = samples[order[picks]].copy()
    for _ in range(PALETTE_ITERATIONS):
        labels = _nearest(samples, centres)
        counts = np.bincount(labels, minlength=colours)
        sums = [np.bincount(labels, weights=samples[:, c], minlength=colours) for c in range(3)]
        used = counts > 0
        centres[used] = np.stack(sums, axis=1)[used] / counts[used, None]
    return centres


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every point (squared Euclidean distance)."""
    distances = (
        (points * points).sum(axis=1)[:, None]
        - 2 * points @ centres.T
        + (centres * centres).sum(axis=1)[None, :]
    )
    return distances.argmin(axis=1)


def _outline(rgb: np.ndarray, style_level: float) -> np.ndarray:
    """Line mask, 255 off the lines and darker on them; kernels scale with the image size.

    The median blur (the costly step) runs at most at OUTLINE_MAX_SIDE; the threshold runs
    at full size, so the lines stay crisp (and the PNG small) on large outputs.
    """
    h, w = rgb.shape[:2]
    small = resize_longest(rgb, min(max(h, w), OUTLINE_MAX_SIDE))
    median = _odd(5 * max(small.shape[:2]) / 1024)
    grey = cv2.medianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), median)
    if grey.shape != (h, w):
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_LINEAR)
    offset = 9 - 6 * style_level  # smaller: more lines
    block = _odd(9 * max(h, w) / 1024)
    mask = cv2.adaptiveThreshold(
        grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, offset
    )
    darkest = round(255 * (0.6 - 0.6 * style_level))  # line darkness grows with the style
    return np.maximum(mask, np.uint8(darkest))


def _odd(size: float) -> int:
    """The odd integer at or above ``size``, at least 3."""
    n = max(3, int(np.ceil(size)))
    return n if n % 2 else n + 1


def probe_image() -> bytes:
    """A 64x64 PNG: a colour gradient with a filled circle, the canary's input."""
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.empty((64, 64, 3), np.uint8)
    rgb[..., 0] = ramp[None, :]
    rgb[..., 1] = ramp[:, None]
    rgb[..., 2] = 255 - ramp[None, :]
    cv2.circle(rgb, (32, 32), 16, (250, 220, 40), thickness=-1)
    return images.png(rgb).data


def check_output(out: dict[str, Any], longest: int) -> bool:
    """True when ``out["image"]`` is an RGB PNG, ``longest`` pixels on its longest side, not flat."""
    blob = out.get("image")
    if not isinstance(blob, contract.Blob) or blob.media_type != "image/png":
        return False
    with Image.open(io.BytesIO(blob.data)) as img:
        if img.format != "PNG" or img.mode != "RGB" or max(img.size) != longest:
            return False
        pixels = np.asarray(img)
    return bool(pixels.std() > 2.0)
