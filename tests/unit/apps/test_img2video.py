"""The img2video app in-process (no server, no worker): the MP4 it makes, its motions, its
memory estimate, degradation ladder and profiles, and what its params and inputs refuse.

Run as a script for the render + encode speed: ``python tests/unit/test_img2video.py``.
"""

from __future__ import annotations

import io
import struct
import time

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

import watchkeeper as wk
from watchkeeper.apps import img2video
from watchkeeper.apps.img2video import Img2Video, check_video, frame_size, render_frames
from watchkeeper.contract import Blob
from watchkeeper.worker import images
from watchkeeper.worker.profiles import choose_profile, narrow_schema, violations


def photo(height: int, width: int) -> np.ndarray:
    """A textured synthetic 'photo': sky over ground, posts, a disc low in the frame, noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([120 + 60 * x / width, 170 + 0 * x, 230 - 80 * y / height], axis=-1)
    rgb[y > height * 0.6 + height * 0.04 * np.sin(x / width * 12)] = (70, 140, 60)
    for i in range(8):
        x0 = int(width * (i + 0.3) / 8)
        rgb[int(height * 0.45):int(height * 0.6), x0:x0 + max(2, width // 40)] = (60, 60, 90)
    disc = (x - width * 0.55) ** 2 + (y - height * 0.8) ** 2 < (min(height, width) * 0.1) ** 2
    rgb[disc] = (230, 200, 60)
    rgb += np.random.default_rng(0).normal(0, 6, rgb.shape)
    return rgb.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> Img2Video:
    m = Img2Video()
    m.setup("cpu")
    return m


@pytest.fixture(scope="module")
def png() -> bytes:
    return images.png(photo(240, 320)).data


def run(model: Img2Video, image: object, progress: object = wk.no_progress, **params: object) -> dict:
    """Validate like the worker does, then predict."""
    return model.predict(model.Inputs.model_validate({"image": image}), model.Params(**params),
                         progress=progress)


def decode(blob: Blob) -> tuple[dict[str, object], list[np.ndarray]]:
    """The video stream's facts and its frames as RGB arrays."""
    assert blob.media_type == "video/mp4"
    with av.open(io.BytesIO(blob.data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                 "fps": stream.average_rate, "width": stream.width, "height": stream.height}
    return facts, frames


def top_level_boxes(data: bytes) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:  # 64-bit size after the type
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:  # runs to the end of the file
            size = len(data) - pos
        assert size >= 8, f"broken box at {pos}"
        boxes.append(kind.decode("latin-1"))
        pos += size
    assert pos == len(data)
    return boxes


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


# --- the MP4 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "params", "size"),
    [
        (240, 320, {}, (512, 384)),  # defaults: 512p, 16 frames, 8 fps
        (240, 320, {"resolution": "256p", "frames": 8, "fps": 4}, (256, 192)),
        (500, 333, {"resolution": "512p", "frames": 12, "fps": 24}, (340, 512)),  # odd -> even
        (100, 1000, {"resolution": "768p", "frames": 9, "fps": 30, "motion": "parallax"}, (768, 76)),
        (64, 64, {"resolution": "1024p", "frames": 8, "fps": 12, "motion": "pan_left"}, (1024, 1024)),
    ],
)
def test_video_decodes_to_the_asked_frames_size_and_fps(model, height, width, params, size):
    out = run(model, images.png(photo(height, width)).data, **params)
    facts, frames = decode(out["video"])
    n, fps = params.get("frames", 16), params.get("fps", 8)
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "fps": fps,
                     "width": size[0], "height": size[1]}
    assert size[0] % 2 == 0 and size[1] % 2 == 0
    assert len(frames) == n and all(f.shape == (size[1], size[0], 3) for f in frames)
    assert {k: v for k, v in out.items() if k != "video"} == {
        "frames": n, "fps": fps, "width": size[0], "height": size[1],
        "duration_s": pytest.approx(n / fps, abs=1e-3)}


def test_index_comes_before_the_media_faststart(model, png):
    boxes = top_level_boxes(run(model, png, resolution="256p", frames=8)["video"].data)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


def test_frames_survive_the_faststart_rewrite(model, png):
    """The in-memory faststart pass moves the media: decoded frames still match the render."""
    out = run(model, png, resolution="256p", frames=8, motion="zoom_out")
    _, decoded = decode(out["video"])
    rendered = list(render_frames(images.decode(png), (256, 192), "zoom_out", 8))
    for got, want in zip(decoded, rendered, strict=True):
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).mean() < 4


def test_output_is_deterministic(model, png):
    first = run(model, png, resolution="256p", frames=8, motion="parallax")
    again = run(model, png, resolution="256p", frames=8, motion="parallax")
    assert first["video"].data == again["video"].data


def test_frame_size_keeps_the_aspect_and_even_sides():
    assert frame_size((240, 320, 3), 512) == (512, 384)
    assert frame_size((1, 5000, 3), 256) == (256, 2)  # never below 2
    for h, w in [(333, 500), (1001, 999), (7, 3)]:
        width, height = frame_size((h, w, 3), 768)
        assert max(width, height) == 768 and width % 2 == 0 and height % 2 == 0
        assert width / height == pytest.approx(w / h, rel=0.02)


# --- motions -----------------------------------------------------------------------------


@pytest.mark.parametrize("motion", ["zoom_in", "zoom_out", "pan_left", "pan_right", "parallax"])
def test_every_motion_moves(model, png, motion):
    _, frames = decode(run(model, png, resolution="256p", frames=8, motion=motion)["video"])
    first, last = grey(frames[0]), grey(frames[-1])
    assert np.abs(first - last).mean() > 3
    assert np.abs(grey(frames[0]) - grey(frames[1])).mean() < np.abs(first - last).mean()


@pytest.mark.parametrize(("motion", "sign"), [("pan_left", 1), ("pan_right", -1)])
def test_pan_moves_the_picture_against_the_camera(png, motion, sign):
    frames = list(render_frames(images.decode(png), (256, 192), motion, 8))
    (dx, dy), _ = cv2.phaseCorrelate(grey(frames[0]), grey(frames[-1]))
    assert sign * dx > 10 and abs(dy) < 1  # the camera pans left: the picture moves right


@pytest.mark.parametrize("motion", ["zoom_in", "zoom_out"])
def test_zoom_scales_the_picture_about_its_centre(png, motion):
    first, *_, last = render_frames(images.decode(png), (256, 192), motion, 8)
    wide, close = (first, last) if motion == "zoom_in" else (last, first)
    enlarge = cv2.getRotationMatrix2D((127.5, 95.5), 0, img2video.ZOOM_END)
    predicted = cv2.warpAffine(wide, enlarge, (256, 192), flags=cv2.INTER_LINEAR)
    assert np.abs(grey(predicted) - grey(close)).mean() < np.abs(grey(wide) - grey(close)).mean() / 3


def test_parallax_moves_the_near_bottom_more_than_the_far_top(png):
    first, *_, last = render_frames(images.decode(png), (256, 192), "parallax", 8)
    a, b = grey(first), grey(last)
    (top_dx, _), _ = cv2.phaseCorrelate(a[:70], b[:70])
    (bottom_dx, _), _ = cv2.phaseCorrelate(a[-70:], b[-70:])
    assert bottom_dx < top_dx < 0  # the camera moves right: everything goes left, near more
    assert abs(bottom_dx) > 2 * abs(top_dx)


def test_progress_is_reported_per_frame(png):
    model, calls = Img2Video(), []
    model.setup("cpu")
    run(model, png, lambda fraction, message: calls.append((fraction, message)),
        resolution="256p", frames=8)
    fractions = [f for f, _ in calls]
    assert len(calls) == 9 and calls[0][1] == "frame 1/8" and calls[-1] == (1.0, "encoded")
    assert fractions == sorted(fractions) and 0 < fractions[0]


# --- memory, degradation, profiles ---------------------------------------------------------


def test_estimate_grows_with_resolution_and_frames(model):
    def need(resolution: str, frames: int, motion: str = "zoom_in") -> int:
        return model.estimate_memory(Img2Video.Params(resolution=resolution, frames=frames,
                                                      motion=motion))

    by_resolution = [need(r, 16) for r in ("256p", "512p", "768p", "1024p")]
    assert by_resolution == sorted(set(by_resolution))
    by_frames = [need("768p", f) for f in (8, 16, 24, 32)]
    assert by_frames == sorted(set(by_frames))
    assert need("1024p", 32, "parallax") > need("1024p", 32)
    assert 80 * 2**20 < need("1024p", 32) < 200 * 2**20  # measured peak: 98 MB


def test_degrade_ladder_steps_resolution_then_frames(model):
    params = Img2Video.Params(resolution="1024p", frames=32, motion="pan_right", fps=12)
    ladder = []
    while params is not None:
        ladder.append((params.resolution, params.frames))
        assert (params.motion, params.fps) == ("pan_right", 12)  # the rest is kept
        params = model.degrade(params)
    assert ladder == [("1024p", 32), ("768p", 32), ("512p", 32), ("512p", 24), ("512p", 16)]


@pytest.mark.parametrize(
    ("resolution", "frames", "after"),
    [("256p", 32, ("256p", 24)), ("256p", 16, None), ("512p", 20, ("512p", 16)),
     ("512p", 30, ("512p", 24)), ("768p", 8, ("512p", 8)), ("512p", 8, None)],
)
def test_degrade_below_512p_only_reduces_frames(model, resolution, frames, after):
    smaller = model.degrade(Img2Video.Params(resolution=resolution, frames=frames))
    assert (None if smaller is None else (smaller.resolution, smaller.frames)) == after


def test_degrade_steps_need_less_memory(model):
    params = Img2Video.Params(resolution="1024p", frames=32)
    while (smaller := model.degrade(params)) is not None:
        assert model.estimate_memory(smaller) < model.estimate_memory(params)
        params = smaller


def test_12_gb_profile_allows_512p_and_16_frames():
    profile = choose_profile(Img2Video.profiles, 12)
    assert profile.memory_gb == 12
    assert violations({"resolution": "512p", "frames": 16}, profile) == []
    problems = violations({"resolution": "768p", "frames": 24}, profile)
    assert [p["field"] for p in problems] == ["params.resolution", "params.frames"]
    schema = narrow_schema(Img2Video.Params.model_json_schema(), profile)
    assert schema["properties"]["resolution"]["enum"] == ["256p", "512p"]
    assert schema["properties"]["frames"]["maximum"] == 16


def test_24_gb_profile_allows_768p_and_24_frames():
    profile = choose_profile(Img2Video.profiles, 31.7)  # a 32 GB card reports a little less
    assert profile.memory_gb == 24
    assert violations({"resolution": "768p", "frames": 24}, profile) == []
    assert [p["field"] for p in violations({"resolution": "1024p", "frames": 8}, profile)] == [
        "params.resolution"]
    assert [p["field"] for p in violations({"resolution": "256p", "frames": 32}, profile)] == [
        "params.frames"]


def test_40_gb_profile_allows_the_largest_of_each_but_not_together_and_8_gb_gets_the_smallest():
    largest = choose_profile(Img2Video.profiles, 80)
    assert largest.limits == {"resolution": ["256p", "512p", "768p", "1024p"], "frames": 32}
    assert violations({"resolution": "1024p", "frames": 24}, largest) == []
    assert violations({"resolution": "512p", "frames": 32}, largest) == []
    (problem,) = violations({"resolution": "1024p", "frames": 32}, largest)
    assert problem["field"] == "params"
    assert "resolution = '1024p' with frames = 32 is not allowed on this device" in problem["message"]
    assert "frames at most 24; or resolution one of ['256p', '512p'], frames at most 32" in problem["message"]
    assert choose_profile(Img2Video.profiles, 8).memory_gb == 12


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("frames", 33), ("frames", 7), ("fps", 31), ("fps", 3), ("motion", "spin"),
     ("resolution", "2048p"), ("resolution", 512), ("seed", 1)],
)
def test_params_out_of_bounds_refused(field, value):
    with pytest.raises(ValidationError) as info:
        Img2Video.Params(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    "image", [b"not an image", b"GIF89a" + bytes(20), "bm90IGFuIGltYWdl", np.zeros((8, 8), np.uint8)]
)
def test_non_image_refused(image):
    with pytest.raises(ValidationError) as info:
        Img2Video.Inputs.model_validate({"image": image})
    assert info.value.errors()[0]["loc"] == ("image",)


# --- probe and encoder ---------------------------------------------------------------------


def test_probe_passes_and_its_check_catches_wrong_output(model):
    example = model.probe()
    out = model.predict(model.Inputs.model_validate(example.inputs),
                        model.Params(**example.params))
    assert example.params == {"resolution": "256p", "frames": 8, "fps": 8}
    assert example.check(out) is True
    assert not check_video(out, frames=9, size=(256, 192), fps=8)
    assert not check_video(out, frames=8, size=(256, 256), fps=8)
    assert not check_video(out, frames=8, size=(256, 192), fps=12)
    assert not check_video({"video": Blob(out["video"].data, "image/png")}, 8, (256, 192), 8)


def test_setup_picks_libx264(model):
    assert model.encoder == "libx264"


def test_setup_names_the_missing_encoder(monkeypatch):
    monkeypatch.setattr(img2video, "ENCODER_CANDIDATES", ("no_such_h264",))
    with pytest.raises(RuntimeError, match="no_such_h264: not in this FFmpeg build"):
        Img2Video().setup("cpu")


# --- speed (not a test: run this file as a script) ----------------------------------------


def measure_fps(resolution: str = "512p", frames: int = 16, repeat: int = 3) -> dict[str, float]:
    """Frames per second of predict (render + encode) per motion, best of ``repeat``."""
    model = Img2Video()
    model.setup("cpu")
    inputs = model.Inputs(image=photo(768, 1024))
    speeds = {}
    for motion in ("zoom_in", "zoom_out", "pan_left", "pan_right", "parallax"):
        params = model.Params(resolution=resolution, frames=frames, motion=motion)
        best = min(_seconds(model, inputs, params) for _ in range(repeat))
        speeds[motion] = round(frames / best, 1)
    return speeds


def _seconds(model: Img2Video, inputs: object, params: object) -> float:
    start = time.perf_counter()
    model.predict(inputs, params)
    return time.perf_counter() - start


if __name__ == "__main__":
    print("predict frames/s at 512p, 16 frames:", measure_fps())
