"""Image to video (a photo in, a short MP4 clip out), done offline on the CPU.

Runs in worker processes. The diffusion model such services run, I2VGen-XL (30-120 s a
request and about 12 GB on a GPU), is replaced by a camera move over the still image: a
zoom, a pan, or a gentle parallax in which a guessed depth map moves near pixels more than
far ones. What the service around it has to handle is the same: a request whose memory
grows with resolution and frames, a degradation ladder (1024p -> 768p -> 512p, then
32 -> 24 -> 16 frames) and per-device parameter limits (``profiles``: 12 GB -> 512p and
16 frames, 24 GB -> 768p and 24, 40 GB -> 1024p and 32 but more than 24 frames only up to
512p, the limits used in production image-to-video services and their page).

Frames are rendered one at a time with OpenCV (``warpAffine``, or ``remap`` for parallax,
linear interpolation, cosine easing) from a working copy of the image scaled once to the
output size times the largest zoom, and fed straight to the H.264 encoder (PyAV's bundled
FFmpeg, libx264, yuv420p, CRF 23, preset veryfast): a request never holds all its frames.
The MP4 is written into memory with ``movflags=+faststart`` (the ``moov`` index before the
media, so a browser starts playing before the download ends). FFmpeg's faststart pass
re-opens its output to read it back; :class:`_Reader` gives it a second, independently
positioned view of the same ``BytesIO``, so nothing touches the disk.

Progress: ``predict`` takes the contract's ``progress`` callback and calls it after every
frame is handed to the encoder (up to 95 %) and once when the MP4 is finished, so a job
shows ``frame 12/32`` and can be cancelled between frames.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import av
import cv2
import numpy as np
from pydantic import Field

from watchkeeper import contract
from watchkeeper.contract import Example, ImageInput
from watchkeeper.worker import images

__all__ = ["Img2Video", "ENCODER_CANDIDATES", "check_video", "encode_mp4", "frame_size",
           "pick_encoder", "probe_image", "render_frames"]

Motion = Literal["zoom_in", "zoom_out", "pan_left", "pan_right", "parallax"]
Resolution = Literal["256p", "512p", "768p", "1024p"]

#: Longest side of the output, in pixels, of each resolution.
RESOLUTIONS: dict[str, int] = {"256p": 256, "512p": 512, "768p": 768, "1024p": 1024}
#: The degradation ladder: each resolution's next step down, then frame counts.
SMALLER_RESOLUTION = {"1024p": "768p", "768p": "512p"}
DEGRADE_FRAMES = (24, 16)

#: H.264 encoders tried in order; "h264" is whatever FFmpeg's default H.264 encoder is.
ENCODER_CANDIDATES = ("libx264", "h264")
#: libx264 settings: quality-based rate control, and fast enough to stay below a second a clip.
X264_OPTIONS = {"crf": "23", "preset": "veryfast"}
#: Encoder threads: worker processes share the cores, as OpenCV's single thread does.
ENCODER_THREADS = 1

#: Zoom (view shrink factor) reached by zoom_in / left from by zoom_out, geometric in time.
ZOOM_END = 1.3
#: Zoom held during a pan: the pan travels across the margin it leaves.
PAN_ZOOM = 1.2
#: Zoom held during parallax; the nearest pixels shift across most of its margin.
PARALLAX_ZOOM = 1.12
#: Share of the parallax margin travelled by the farthest (0) and nearest (1) pixels.
PARALLAX_FAR, PARALLAX_NEAR = 0.15, 0.9
#: Longest side at which the depth guess is blurred (then scaled up: it is smooth anyway).
DEPTH_SIDE = 64

#: Memory one request needs (see ``Img2Video.estimate_memory``), per pixel of the square
#: bound of the output: for every request, per frame (libx264's look-ahead and the MP4 held in
#: memory), and for parallax's float32 maps; plus a fixed part.
BYTES_PER_PIXEL = 64
BYTES_PER_PIXEL_FRAME = 1.5
PARALLAX_BYTES_PER_PIXEL = 20
BASE_BYTES = 8 * 2**20


class Img2Video(contract.Model):
    """A still image in, a short MP4 of a camera move over it out."""

    class Inputs(contract.Inputs):
        image: ImageInput = Field(description="The still image to animate (PNG, JPEG or WebP).")

    class Params(contract.Params):
        resolution: Resolution = Field(
            "512p",
            description="Longest side of the video: 256, 512, 768 or 1024 pixels (the other "
                        "side follows the image's aspect ratio, rounded to an even number).",
        )
        frames: int = Field(16, ge=8, le=32, description="Number of frames in the video.")
        fps: int = Field(8, ge=4, le=30, description="Frames per second of the video.")
        motion: Motion = Field(
            "zoom_in",
            description="Camera move: zoom in or out on the centre, pan left or right, or "
                        "parallax (a sideways move in which nearer parts of the image, guessed "
                        "from brightness and height, move more than farther ones).",
        )

    #: Per-GPU limits on this model's params, as production image-to-video services set them
    #: (lists: allowed values). On 40 GB, as their page does, more than 24 frames only up to
    #: 512p: a list of sets, one of which must allow the resolution and the frames together.
    profiles: ClassVar[Mapping[float, Mapping[str, Any] | Sequence[Mapping[str, Any]]]] = {
        12: {"resolution": ["256p", "512p"], "frames": 16},
        24: {"resolution": ["256p", "512p", "768p"], "frames": 24},
        40: [{"resolution": ["256p", "512p", "768p", "1024p"], "frames": 24},
             {"resolution": ["256p", "512p"], "frames": 32}],
    }

    #: The H.264 encoder in use, chosen by ``setup``.
    encoder: str = ENCODER_CANDIDATES[0]

    def setup(self, device: str) -> None:
        """OpenCV gets one thread (worker processes share the cores); checks H.264 encodes."""
        cv2.setNumThreads(1)
        self.encoder = pick_encoder()

    def predict(self, inputs: Any, params: Any,
                progress: contract.ProgressFn = contract.no_progress) -> dict[str, Any]:
        width, height = frame_size(inputs.image.shape, RESOLUTIONS[params.resolution])
        n, fps = params.frames, params.fps
        frames = render_frames(inputs.image, (width, height), params.motion, n)
        rendered = _reporting(frames, n, progress)
        data = encode_mp4(rendered, (width, height), fps, self.encoder)
        progress(1.0, "encoded")
        return {"video": contract.Blob(data, "video/mp4"), "frames": n, "fps": fps,
                "width": width, "height": height, "duration_s": round(n / fps, 3)}

    def estimate_memory(self, params: Any) -> int:
        """64 bytes per output pixel (a square bound), 1.5 more per pixel and frame, 20 more
        per pixel for parallax, and 8 MB.

        Measured: the peak RSS growth of ``predict`` after the probe's warm-up, in a fresh
        process with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_=65536``, so freed
        memory is returned and the high-water mark is the real need), square noisy input,
        MB measured / estimated: 256p/8 frames 6.7 / 12.8, 256p/32 9.4 / 15, 512p/16 24.5 / 30,
        512p/32 27.6 / 36, 768p/24 57 / 64, 1024p/8 69 / 84, 1024p/16 89 / 96, 1024p/32 98 / 120;
        parallax 512p/16 30 / 35, 768p/24 68 / 76, 1024p/32 115 / 140. A 4:3 input at
        1024p/32 peaked at 75. Frames are encoded as they are rendered, so there is no frame
        store: the frame count adds libx264's look-ahead (steep up to about 16 frames, then
        flat) and the growing MP4.
        """
        pixels = RESOLUTIONS[params.resolution] ** 2
        per_pixel = BYTES_PER_PIXEL + BYTES_PER_PIXEL_FRAME * params.frames
        if params.motion == "parallax":
            per_pixel += PARALLAX_BYTES_PER_PIXEL
        return int(pixels * per_pixel + BASE_BYTES)

    def degrade(self, params: Any) -> Any | None:
        """1024p -> 768p -> 512p, then 32 -> 24 -> 16 frames: resolution first, then length.

        Resolutions below 512p and frame counts at or below 16 are not reduced further.
        """
        if params.resolution in SMALLER_RESOLUTION:
            return params.model_copy(update={"resolution": SMALLER_RESOLUTION[params.resolution]})
        fewer = [f for f in DEGRADE_FRAMES if f < params.frames]
        return params.model_copy(update={"frames": fewer[0]}) if fewer else None

    def probe(self) -> Example:
        return Example(
            inputs={"image": probe_image()},
            params={"resolution": "256p", "frames": 8, "fps": 8},
            check=lambda out: check_video(out, frames=8, size=(256, 192), fps=8),
        )



def _reporting(frames: Iterator[np.ndarray], total: int,
               progress: contract.ProgressFn) -> Iterator[np.ndarray]:
    """``frames``, reporting progress after each one is handed to the encoder."""
    for i, frame in enumerate(frames, start=1):
        yield frame
        progress(0.95 * i / total, f"frame {i}/{total}")


# --- rendering -----------------------------------------------------------------------------


def frame_size(shape: tuple[int, ...], longest: int) -> tuple[int, int]:
    """(width, height) with the longest side ``longest`` and the image's aspect ratio,
    both even (yuv420p halves each dimension for the colour planes)."""
    h, w = shape[:2]
    scale = longest / max(h, w)
    return _even(w * scale), _even(h * scale)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def render_frames(
    rgb: np.ndarray, size: tuple[int, int], motion: str, n: int
) -> Iterator[np.ndarray]:
    """The ``n`` RGB frames of ``motion`` over ``rgb``, each ``size`` (width, height), lazily."""
    width, height = size
    working = _working_copy(rgb, (round(width * ZOOM_END), round(height * ZOOM_END)))
    if motion == "parallax":
        yield from _parallax(working, size, n)
        return
    for i in range(n):
        cx, zoom = _camera(motion, _ease(i / max(n - 1, 1)))
        matrix = _view_matrix(working.shape, size, cx, zoom)
        yield cv2.warpAffine(working, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT101)


def _working_copy(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` scaled once to ``size``: area-averaged down (no aliasing later), cubic up."""
    h, w = rgb.shape[:2]
    if (w, h) == size:
        return np.ascontiguousarray(rgb)
    shrinking = size[0] * size[1] < w * h
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _ease(t: float) -> float:
    """Cosine ease-in-out: starts and stops at rest."""
    return 0.5 - 0.5 * math.cos(math.pi * t)


def _camera(motion: str, s: float) -> tuple[float, float]:
    """The view's horizontal centre (0..1 of the image width) and zoom at eased time ``s``."""
    if motion == "zoom_in":
        return 0.5, ZOOM_END**s  # geometric: the apparent speed stays even
    if motion == "zoom_out":
        return 0.5, ZOOM_END ** (1 - s)
    margin = 0.5 - 0.5 / PAN_ZOOM
    if motion == "pan_right":
        return 0.5 - margin + 2 * margin * s, PAN_ZOOM
    if motion == "pan_left":
        return 0.5 + margin - 2 * margin * s, PAN_ZOOM
    raise ValueError(f"unknown motion {motion!r}")


def _view_matrix(
    src_shape: tuple[int, ...], size: tuple[int, int], cx: float, zoom: float
) -> np.ndarray:
    """The affine map from output pixels to source pixels of a view centred at (cx, 0.5)
    showing 1/zoom of the source's width and height (pixel centres line up)."""
    src_h, src_w = src_shape[:2]
    width, height = size
    ax, ay = src_w / (width * zoom), src_h / (height * zoom)
    bx = src_w * (cx + (0.5 / width - 0.5) / zoom) - 0.5
    by = src_h * (0.5 + (0.5 / height - 0.5) / zoom) - 0.5
    return np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)


def _parallax(working: np.ndarray, size: tuple[int, int], n: int) -> Iterator[np.ndarray]:
    """A sideways camera move: each pixel shifts in proportion to its guessed nearness."""
    width, height = size
    matrix = _view_matrix(working.shape, size, 0.5, PARALLAX_ZOOM)
    base = cv2.warpAffine(working, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT101)
    xs = np.arange(width, dtype=np.float32) * np.float32(matrix[0, 0]) + np.float32(matrix[0, 2])
    ys = np.arange(height, dtype=np.float32) * np.float32(matrix[1, 1]) + np.float32(matrix[1, 2])
    map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (height, width)))
    margin_px = (0.5 - 0.5 / PARALLAX_ZOOM) * working.shape[1]
    travel = (PARALLAX_FAR + (PARALLAX_NEAR - PARALLAX_FAR) * _depth_guess(base)) * margin_px
    map_x = np.empty((height, width), np.float32)
    for i in range(n):
        offset = 2 * _ease(i / max(n - 1, 1)) - 1  # -1 .. 1: the camera moves left to right
        np.multiply(travel, np.float32(offset), out=map_x)
        map_x += xs[None, :]
        yield cv2.remap(working, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _depth_guess(rgb: np.ndarray) -> np.ndarray:
    """Nearness in 0..1 (float32, the image's shape): lower in the frame and brighter is
    nearer, blurred heavily so that the shifts bend the image instead of tearing it."""
    h, w = rgb.shape[:2]
    scale = DEPTH_SIDE / max(h, w)
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    luma = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), small_size,
                      interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    height_cue = np.linspace(0, 1, small_size[1], dtype=np.float32)[:, None]
    depth = cv2.GaussianBlur(0.65 * height_cue + 0.35 * luma, (0, 0), DEPTH_SIDE / 16)
    near, far = float(depth.max()), float(depth.min())
    depth = ((depth - far) / max(near - far, 1e-6)).astype(np.float32)
    return cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)


# --- encoding ------------------------------------------------------------------------------


def pick_encoder() -> str:
    """The first H.264 encoder of ENCODER_CANDIDATES that encodes a tiny clip here.

    Raises RuntimeError naming what is missing (the worker then fails its start-up).
    """
    tried = []
    for name in ENCODER_CANDIDATES:
        if name not in av.codecs_available:
            tried.append(f"{name}: not in this FFmpeg build")
            continue
        try:
            encode_mp4(iter([np.zeros((16, 16, 3), np.uint8)] * 2), (16, 16), 8, name)
        except (av.error.FFmpegError, ValueError) as exc:
            tried.append(f"{name}: {exc}")
            continue
        return name
    raise RuntimeError(
        "no H.264 encoder in PyAV's FFmpeg (needed: libx264; "
        + "; ".join(tried) + "). Install the PyAV wheel from PyPI, which bundles libx264."
    )


def encode_mp4(frames: Iterator[np.ndarray], size: tuple[int, int], fps: int,
               encoder: str = ENCODER_CANDIDATES[0]) -> bytes:
    """An H.264 / yuv420p MP4 of RGB ``frames`` (each ``size``), the index first (faststart)."""
    buf = io.BytesIO()
    options = dict(X264_OPTIONS) if encoder == "libx264" else {}
    options["threads"] = str(ENCODER_THREADS)
    with av.open(buf, mode="w", format="mp4", container_options={"movflags": "+faststart"},
                 io_open=lambda url, flags, opts: _Reader(buf)) as container:
        stream = container.add_stream(encoder, rate=fps, options=options)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return buf.getvalue()


class _Reader(io.RawIOBase):
    """A read-only view of ``buf`` with its own position, for FFmpeg's faststart pass.

    The MP4 muxer moves its index to the front by re-opening its output and reading it back
    while it writes. Each read here puts the writer's position back where it was.
    """

    def __init__(self, buf: io.BytesIO) -> None:
        super().__init__()
        self._buf = buf
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        ends = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._buf.getbuffer().nbytes}
        self._pos = ends[whence] + offset
        return self._pos

    def readinto(self, target: Any) -> int:
        writer_at = self._buf.tell()
        try:
            self._buf.seek(self._pos)
            count = self._buf.readinto(target)
        finally:
            self._buf.seek(writer_at)
        self._pos += count
        return count


# --- probe -------------------------------------------------------------------------------


def probe_image() -> bytes:
    """An 80x60 PNG: a colour gradient, a disc and a bar, the canary's input."""
    y, x = np.mgrid[0:60, 0:80].astype(np.float32)
    rgb = np.stack([x / 79 * 255, y / 59 * 255, 255 - x / 79 * 255], axis=-1).astype(np.uint8)
    cv2.circle(rgb, (40, 30), 14, (250, 220, 40), thickness=-1)
    cv2.rectangle(rgb, (8, 44), (72, 52), (30, 30, 30), thickness=-1)
    return images.png(rgb).data


def check_video(out: dict[str, Any], frames: int, size: tuple[int, int], fps: int) -> bool:
    """True when ``out["video"]`` is an H.264 / yuv420p MP4 of ``frames`` frames of ``size``
    (width, height) at ``fps``, and the picture moves."""
    blob = out.get("video")
    if not isinstance(blob, contract.Blob) or blob.media_type != "video/mp4":
        return False
    with av.open(io.BytesIO(blob.data), mode="r") as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.name != "h264" or ctx.pix_fmt != "yuv420p" or stream.average_rate != fps:
            return False
        decoded = [f.to_ndarray(format="gray") for f in container.decode(stream)]
    if len(decoded) != frames or any(f.shape != (size[1], size[0]) for f in decoded):
        return False
    moved = np.abs(decoded[0].astype(np.int16) - decoded[-1].astype(np.int16)).mean()
    return bool(moved > 1.0)
