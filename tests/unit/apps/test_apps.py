"""The built-in apps in-process: cartoon and the chaos doubles (no server, no worker).

Chaos actions that never return or kill the process (hang, spin, crash, segfault) run only in
a child interpreter here, never in the test process.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import psutil
import pytest
from PIL import Image
from pydantic import ValidationError

from watchkeeper.apps.cartoon import Cartoon, check_output, probe_image
from watchkeeper.apps.chaos import CRASH_EXIT_CODE, Chaos, FailingProbe, FailingSetup
from watchkeeper.contract import Blob
from watchkeeper.errors import PayloadTooLarge
from watchkeeper.worker import images


def photo(height: int, width: int) -> np.ndarray:
    """A smooth synthetic 'photo': gradients, a bright disc and a little noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / max(width, 1), y / max(height, 1), 0.5 + 0.0 * x], axis=-1) * 255
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 4) ** 2
    rgb[disc] = (240, 200, 170)
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    return rgb.clip(0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def decode_png(blob: Blob) -> np.ndarray:
    assert blob.media_type == "image/png"
    with Image.open(io.BytesIO(blob.data)) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        return np.asarray(img)


@pytest.fixture(scope="module")
def cartoon() -> Cartoon:
    model = Cartoon()
    model.setup("cpu")
    return model


def run(model, inputs: dict, params: dict | None = None) -> dict:
    """Validate like the worker does, then predict."""
    return model.predict(model.Inputs.model_validate(inputs), model.Params(**(params or {})))


# --- cartoon: output size ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "resolution"),
    [
        (64, 64, 512),  # upscaled, square
        (300, 200, 1024),  # portrait, upscaled
        (900, 1600, 512),  # landscape, downscaled
        (1000, 1000, 1024),  # close to the target
        (120, 1200, 2048),  # very wide
        (1024, 768, 1024),  # already the right size
    ],
)
def test_cartoon_longest_side_is_resolution(cartoon, height, width, resolution):
    data = encode(photo(height, width), "PNG")
    out = decode_png(run(cartoon, {"image": data}, {"resolution": resolution})["image"])
    assert max(out.shape[:2]) == resolution
    assert out.shape[2] == 3
    expected_ratio = width / height
    assert out.shape[1] / out.shape[0] == pytest.approx(expected_ratio, rel=0.01)


def test_cartoon_defaults_and_output_is_not_flat(cartoon):
    out = run(cartoon, {"image": encode(photo(200, 300), "PNG")})
    pixels = decode_png(out["image"])
    assert pixels.shape == (683, 1024, 3)
    assert pixels.std() > 10
    assert set(out) == {"image"}


def test_cartoon_is_deterministic_and_style_changes_it(cartoon):
    data = encode(photo(256, 256), "PNG")
    first = run(cartoon, {"image": data}, {"resolution": 512, "style_level": 0.3})
    again = run(cartoon, {"image": data}, {"resolution": 512, "style_level": 0.3})
    bolder = run(cartoon, {"image": data}, {"resolution": 512, "style_level": 1.0})
    assert first["image"].data == again["image"].data
    assert not np.array_equal(decode_png(first["image"]), decode_png(bolder["image"]))


def test_cartoon_reduces_colours(cartoon):
    data = encode(photo(256, 256), "PNG")
    out = decode_png(
        run(cartoon, {"image": data}, {"resolution": 512, "style_level": 1.0})["image"]
    )
    source = images.decode(data)

    def colours(a: np.ndarray) -> int:
        return len(np.unique(a.reshape(-1, 3), axis=0))

    assert colours(out) < colours(source) / 10


# --- cartoon: params bounds --------------------------------------------------------------


@pytest.mark.parametrize("level", [0.1, 0.55, 1.0])
def test_style_level_in_bounds_accepted(level):
    assert Cartoon.Params(style_level=level).style_level == level


@pytest.mark.parametrize("level", [0.0, 0.09, 1.01, 5, -1])
def test_style_level_out_of_bounds_rejected(level):
    with pytest.raises(ValidationError) as info:
        Cartoon.Params(style_level=level)
    assert info.value.errors()[0]["loc"] == ("style_level",)


@pytest.mark.parametrize("resolution", [512, 640, 1024, 1920, 2048])
def test_resolution_multiples_of_128_accepted(resolution):
    assert Cartoon.Params(resolution=resolution).resolution == resolution


@pytest.mark.parametrize("resolution", [600, 1000, 1025, 2000])
def test_resolution_not_multiple_of_128_rejected(resolution):
    with pytest.raises(ValidationError) as info:
        Cartoon.Params(resolution=resolution)
    assert info.value.errors()[0]["type"] == "multiple_of"


@pytest.mark.parametrize("resolution", [384, 0, 2176, 4096])
def test_resolution_out_of_range_rejected(resolution):
    with pytest.raises(ValidationError):
        Cartoon.Params(resolution=resolution)


def test_unknown_param_rejected():
    with pytest.raises(ValidationError):
        Cartoon.Params(strength=0.5)


def test_params_schema_publishes_bounds_and_descriptions():
    props = Cartoon.Params.model_json_schema()["properties"]
    assert props["style_level"]["minimum"] == 0.1 and props["style_level"]["maximum"] == 1.0
    assert props["resolution"]["multipleOf"] == 128
    assert props["resolution"]["default"] == 1024
    assert all(p.get("description") for p in props.values())


# --- cartoon: image inputs ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_formats_accepted_as_bytes_and_base64(fmt):
    rgb = photo(48, 80)
    data = encode(rgb, fmt)
    for value in (
        data,
        base64.b64encode(data).decode(),
        f"data:image/x;base64,{base64.b64encode(data).decode()}",
    ):
        image = Cartoon.Inputs.model_validate({"image": value}).image
        assert image.shape == (48, 80, 3) and image.dtype == np.uint8
        # lossy formats differ a little, but it is the same picture
        assert np.abs(image.astype(int) - rgb.astype(int)).mean() < 12


def test_grey_and_rgba_images_become_rgb():
    grey = encode(photo(20, 30)[..., 0], "PNG")
    rgba = encode(np.dstack([photo(20, 30), np.full((20, 30), 128, np.uint8)]), "PNG")
    for data in (grey, rgba):
        assert Cartoon.Inputs.model_validate({"image": data}).image.shape == (20, 30, 3)


@pytest.mark.parametrize(
    "value", [b"hello", base64.b64encode(b"hello").decode(), b"GIF89a" + bytes(20)]
)
def test_non_image_rejected_naming_allowed_formats(value):
    with pytest.raises(ValidationError) as info:
        Cartoon.Inputs.model_validate({"image": value})
    message = str(info.value)
    assert "PNG" in message and "JPEG" in message and "WebP" in message


def test_truncated_image_rejected():
    data = encode(photo(64, 64), "PNG")[:60]
    with pytest.raises(ValidationError, match="could not be decoded"):
        Cartoon.Inputs.model_validate({"image": data})


def test_bad_base64_and_missing_image_rejected():
    with pytest.raises(ValidationError, match="base64"):
        Cartoon.Inputs.model_validate({"image": "%%% not base64 %%%"})
    with pytest.raises(ValidationError):
        Cartoon.Inputs.model_validate({})
    with pytest.raises(ValidationError):
        Cartoon.Inputs.model_validate({"image": encode(photo(8, 8), "PNG"), "extra": 1})


def png_header(width: int, height: int) -> bytes:
    """A PNG with the given size and no pixel data: Pillow reads its size, never decodes it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(8000, 8000), (20000, 20000)])  # over ours; over Pillow's too
def test_huge_image_is_payload_too_large(size):
    with pytest.raises(PayloadTooLarge):
        Cartoon.Inputs.model_validate({"image": png_header(*size)})


def test_decoded_image_is_writable():
    image = Cartoon.Inputs.model_validate({"image": encode(photo(8, 8), "PNG")}).image
    assert image.flags.writeable
    image[0, 0] = 0


def test_line_wrapped_base64_accepted():
    data = encode(photo(64, 64), "PNG")
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, like the `base64` tool
    assert "\n" in wrapped
    assert Cartoon.Inputs.model_validate({"image": wrapped}).image.shape == (64, 64, 3)


def test_arrays_must_be_rgb_uint8():
    ok = photo(4, 4)
    assert Cartoon.Inputs.model_validate({"image": ok}).image is ok
    for bad in (ok[..., 0], ok.astype(np.float32), np.dstack([ok, ok[..., :1]])):
        with pytest.raises(ValidationError, match="RGB uint8"):
            Cartoon.Inputs.model_validate({"image": bad})


# --- cartoon: probe and warm-up ------------------------------------------------------------


def test_probe_passes_on_real_output(cartoon):
    example = cartoon.probe()
    assert example.params == {"resolution": 512, "style_level": 0.5}
    assert Image.open(io.BytesIO(example.inputs["image"])).size == (64, 64)
    out = run(cartoon, example.inputs, example.params)
    assert example.check(out) is True


def test_probe_check_fails_on_bad_outputs():
    check = Cartoon().probe().check
    flat = np.full((512, 512, 3), 128, np.uint8)
    assert check({"image": images.png(flat)}) is False
    wrong_size = photo(256, 256)
    assert check({"image": images.png(wrong_size)}) is False
    rgba = np.dstack([photo(512, 512), np.full((512, 512), 255, np.uint8)])
    assert check({"image": images.png(rgba)}) is False
    assert check({"image": Blob(encode(photo(512, 512), "JPEG"), "image/jpeg")}) is False
    assert check({}) is False
    assert check_output({"image": images.png(photo(300, 512))}, longest=512) is True


def test_warmup_is_the_probe(cartoon):
    warm = cartoon.warmup()
    assert warm is not None and warm.inputs == {"image": probe_image()}


def test_cartoon_1024_is_fast(cartoon):
    """Well under 300 ms of CPU on one core for a 1024-pixel output (CPU time, not wall:
    other processes may share the machine)."""
    inputs = Cartoon.Inputs.model_validate({"image": encode(photo(600, 800), "JPEG")})
    params = Cartoon.Params(resolution=1024)
    cartoon.predict(inputs, params)
    spent = []
    for _ in range(3):
        start = time.process_time()
        cartoon.predict(inputs, params)
        spent.append(time.process_time() - start)
    assert min(spent) < 0.3


# --- chaos ---------------------------------------------------------------------------------


@pytest.fixture()
def chaos() -> Chaos:
    model = Chaos()
    model.setup("cpu")
    return model


def test_chaos_ok_echoes(chaos):
    out = run(chaos, {"action": "ok", "echo": {"a": [1, 2]}, "tag": "x"})
    assert out == {"ok": True, "echo": {"a": [1, 2]}, "pid": os.getpid()}
    assert run(chaos, {})["ok"] is True


def test_chaos_sleep(chaos):
    start = time.monotonic()
    out = run(chaos, {"action": "sleep", "seconds": 0.05, "echo": 7})
    assert time.monotonic() - start >= 0.05
    assert out["ok"] is True and out["echo"] == 7


def test_chaos_raise(chaos):
    with pytest.raises(RuntimeError, match="chaos: raised on request"):
        run(chaos, {"action": "raise"})


def test_chaos_alloc_leaks_resident_memory(chaos):
    # The blocks stay referenced by the model (a leak) and every byte was written. (The
    # process's RSS is not checked: in a test process it may reuse pages freed earlier.)
    assert run(chaos, {"action": "alloc", "mb": 48}) == {"ok": True, "allocated_mb": 48}
    leaked = chaos._leaked
    assert sum(block.nbytes for block in leaked) == 48 * 2**20
    assert all(int(block[::4096].min()) == 1 for block in leaked)
    assert run(chaos, {"action": "alloc", "mb": 8}) == {"ok": True, "allocated_mb": 56}
    assert run(chaos, {"action": "alloc", "mb": 0}) == {"ok": True, "allocated_mb": 56}


def test_chaos_batch_keeps_order(chaos):
    assert Chaos.max_batch_size == 8
    items = [Chaos.Inputs(echo=i, tag=str(i)) for i in range(8)]
    outs = chaos.predict_batch(items, [Chaos.Params()] * 8)
    assert [o["echo"] for o in outs] == list(range(8))


@pytest.mark.parametrize(
    "inputs",
    [
        {"action": "explode"},
        {"seconds": -1},
        {"seconds": 3601},
        {"mb": -1},
        {"mb": 65537},
        {"tag": "x" * 201},
        {"unknown": 1},
    ],
)
def test_chaos_inputs_bounds(inputs):
    with pytest.raises(ValidationError):
        Chaos.Inputs.model_validate(inputs)


@pytest.mark.parametrize("scale", [0, 11, -3])
def test_chaos_params_bounds(scale):
    with pytest.raises(ValidationError):
        Chaos.Params(scale=scale)
    assert Chaos.Params(scale=10).scale == 10 and Chaos.Params().scale == 1


def test_chaos_probe_and_warmup(chaos):
    for example in (chaos.probe(), chaos.warmup()):
        assert example is not None and example.check(run(chaos, example.inputs)) is True


def test_chaos_setup_delay(monkeypatch):
    monkeypatch.setenv("WK_CHAOS_SETUP_DELAY_S", "0.1")
    start = time.monotonic()
    Chaos().setup("cpu")
    assert time.monotonic() - start >= 0.1
    monkeypatch.setenv("WK_CHAOS_SETUP_DELAY_S", "soon")
    with pytest.raises(ValueError, match="WK_CHAOS_SETUP_DELAY_S"):
        Chaos().setup("cpu")


def test_failing_setup_raises():
    with pytest.raises(RuntimeError, match="chaos: setup fails on purpose"):
        FailingSetup().setup("cpu")


def test_failing_probe_follows_the_file(tmp_path, monkeypatch):
    flag = tmp_path / "probe-fails"
    monkeypatch.setenv("WK_CHAOS_PROBE_FAIL_FILE", str(flag))
    model = FailingProbe()
    model.setup("cpu")
    probe, warmup = model.probe(), model.warmup()
    assert probe.check(run(model, probe.inputs)) is True
    flag.touch()
    assert probe.check(run(model, probe.inputs)) is False
    assert warmup.check(run(model, warmup.inputs)) is True  # warm-up still passes
    flag.unlink()
    assert probe.check(run(model, probe.inputs)) is True


CHILD = """
import sys
from watchkeeper.apps.chaos import Chaos
m = Chaos(); m.setup("cpu")
print("ready", flush=True)
m.predict(Chaos.Inputs(action=sys.argv[1]), Chaos.Params())
print("returned", flush=True)
"""


@pytest.mark.parametrize(
    ("action", "returncode"), [("crash", CRASH_EXIT_CODE), ("segfault", -signal.SIGSEGV)]
)
def test_chaos_kills_its_process(action, returncode):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, action],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.strip() == "ready"
    assert child.returncode == returncode


@pytest.mark.parametrize("action", ["hang", "spin"])
def test_chaos_never_returns(action):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, action], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
        if action == "spin":
            assert psutil.Process(child.pid).cpu_percent(interval=0.3) > 30
    finally:
        child.kill()
        child.wait(timeout=10)
