"""Fuzzing the real predict endpoint: whatever a client sends, no 5xx and no dead worker.

One real server for the module serves ``chaos`` (only its ``ok`` action is ever sent) and
``cartoon``. Hypothesis sends random JSON values as the body, ``{"inputs", "params"}``
bodies of random JSON, hostile text (invisible, bidi and control characters, NUL, lone
surrogates, huge strings, deep arrays), random and damaged images as base64 and as
multipart files, decompression bombs and bodies around the size limit. Every answer must
be 200 or 400/404/413/422 in the one error shape, with an X-Request-ID; where the right
answer is known (chaos's inputs validated here, sizes, JSON depth) it must be that one.
Hostile header values (every header the server reads, with non-ASCII bytes, control
characters, huge values, odd numbers) go over a raw socket: never a 5xx, a 4xx in the one
error shape with a request id. The last test checks that both models are still ready on the
very same workers.

The bugs the fuzz found (deep nesting, malformed multipart, an unsendable input queued
behind a request) each keep a test below (``regression-`` request ids): they must stay fixed.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import string
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import fastjsonschema
import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from tests.integration.conftest import CHAOS, Server, ServerFactory, Servers
from tests.integration.test_client_attacks import RawResponse, exchange
from watchkeeper.apps.chaos import Chaos
from watchkeeper.errors import BadInput
from watchkeeper.http.bodies import check_depth

CARTOON = "watchkeeper.apps.cartoon:Cartoon"
MAX_BODY_MB = 2
LIMIT = MAX_BODY_MB * 1024 * 1024
#: The answers a client may ever get from these requests (the server is idle, so no 429/503).
ALLOWED = {200, 400, 404, 413, 422}
#: orjson refuses documents nested deeper than this (a 400, "depth limit exceeded").
JSON_MAX_DEPTH = 1024
#: Form fields are cut to this size (once 1 MiB, starlette's default part limit, gave a
#: 500; the part limit is now the body limit).
KNOWN_BAD_FORM_FIELD_BYTES = 1024 * 1024
#: Cheap outputs: cartoon at its smallest resolution.
SMALL = {"resolution": 512}

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def started(module_servers: Servers) -> tuple[Server, dict[str, Any]]:
    """chaos and cartoon, no probes (the workers must stay the same), and /health at start."""
    server = module_servers.start(
        {"chaos": {"app": CHAOS, "timeout_s": 5, "probe_interval_s": 0},
         "cartoon": {"app": CARTOON, "timeout_s": 20, "probe_interval_s": 0}},
        server={"max_body_mb": MAX_BODY_MB},
    )
    return server, server.health()


@pytest.fixture(scope="module")
def srv(started: tuple[Server, dict[str, Any]]) -> Server:
    return started[0]


@pytest.fixture(scope="module")
def baseline(started: tuple[Server, dict[str, Any]]) -> dict[str, Any]:
    """``/health`` before any fuzzing."""
    return started[1]


def post(srv: Server, model: str, *, body: bytes | None = None, content_type: str = "application/json",
         headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    path = f"/v1/models/{quote(model, safe='')}/predict"
    all_headers = dict(headers or {})
    if body is not None:
        all_headers["content-type"] = content_type
    return srv.client.post(path, content=body, headers=all_headers, **kw)


def check(srv: Server, response: httpx.Response, *expected: int) -> dict[str, Any]:
    """Assert the status (``expected``, else any of ALLOWED), the request id and the shape."""
    wanted = set(expected) or ALLOWED
    request_id = response.headers.get("x-request-id", "")
    assert response.status_code in wanted, explain(srv, response)
    assert request_id, explain(srv, response)
    assert response.headers["content-type"].startswith("application/json"), explain(srv, response)
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        assert body["request_id"] == request_id
        assert "outputs" in body
        return body
    assert set(body) == {"error"}, explain(srv, response)
    error = body["error"]
    assert {"type", "message", "suggestion", "request_id"} <= set(error) <= {
        "type", "message", "suggestion", "request_id", "details"}, explain(srv, response)
    assert error["request_id"] == request_id
    assert isinstance(error["message"], str) and error["message"]
    return body


def answered(srv: Server, response: httpx.Response, *expected: int) -> dict[str, Any]:
    """:func:`check`, counting the statuses (``pytest --hypothesis-show-statistics``)."""
    event(f"HTTP {response.status_code}")
    return check(srv, response, *expected)


def explain(srv: Server, response: httpx.Response) -> str:
    """The response and the server's log lines about it, for a failure message."""
    request_id = response.headers.get("x-request-id", "?")
    lines = [line for line in srv.logs().splitlines() if request_id in line]
    return (f"status {response.status_code}, headers {dict(response.headers)}\n"
            f"body {response.text[:2000]}\nserver log:\n" + "\n".join(line[:3000] for line in lines))


@dataclass(frozen=True)
class Nested:
    """``leaf`` in ``levels`` arrays; built as JSON text only (too deep for json and for repr)."""

    levels: int
    leaf: Any

    def json(self) -> str:
        return "[" * self.levels + json.dumps(self.leaf) + "]" * self.levels


def dumps(value: Any, ascii_only: bool = True) -> bytes:
    """JSON as a client would send it; lone surrogates go as escapes or as invalid UTF-8."""
    nested: list[Nested] = []

    def placeholder(obj: Any) -> str:
        if not isinstance(obj, Nested):
            raise TypeError(type(obj).__name__)
        nested.append(obj)
        return f"@nested-{len(nested) - 1}@"

    text = json.dumps(value, ensure_ascii=ascii_only, default=placeholder)
    for index, deep in enumerate(nested):
        text = text.replace(f'"@nested-{index}@"', deep.json(), 1)
    return text.encode("utf-8", "surrogatepass")


def only_ok(body: Any) -> Any:
    """Never ask chaos for anything but ``ok`` (no crash, hang, spin, alloc in a fuzz)."""
    if isinstance(body, dict) and isinstance(body.get("inputs"), dict) and "action" in body["inputs"]:
        body["inputs"]["action"] = "ok"
    return body


def multipart(fields: dict[str, bytes], filenames: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type (fields with a filename are files)."""
    boundary = "fuzz-boundary-7c1e"
    parts = []
    for name, value in fields.items():
        filename = (filenames or {}).get(name)
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- strategies ------------------------------------------------------------------------

ZERO_WIDTH = "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
CONTROLS = "".join(map(chr, range(0x20))) + "\x7f\x85\u2028\u2029"
COMBINING = "\u0300\u0301\u0316\u0323\u0358\u0489\u20dd"  # accents, Zalgo, enclosing
VISIBLE = "aZ09 .-_\u00e9e\u0301\u4e16\u754c\u3000\U0001f642\U0001f468\u200d\U0001f469\ufe0f"
KNOWN_KEYS = ["inputs", "params", "allow_degrade", "image", "tag", "echo", "action", "seconds",
              "mb", "scale", "resolution", "style_level", "text", "__proto__", ""]

json_leaves = (st.none() | st.booleans() | st.integers() | st.text(max_size=30)
               | st.floats(allow_nan=False, allow_infinity=False))
json_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12)
json_values = st.recursive(
    json_leaves,
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(json_keys, kids, max_size=6),
    max_leaves=25,
)
hostile_chars = st.sampled_from(ZERO_WIDTH + BIDI + CONTROLS + COMBINING + VISIBLE) | st.characters(
    categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me", "So", "Lo"])
hostile_text = st.one_of(
    st.text(hostile_chars, max_size=300),
    # Long texts built by repetition (generating megabytes char by char is slow): some
    # clean to under 200 characters, some do not, some are over the body limit.
    st.builds(lambda unit, n, visible: visible + unit * n,
              st.text(st.sampled_from(ZERO_WIDTH + BIDI + COMBINING + "\x00\r\n\t "), min_size=1, max_size=4),
              st.integers(1, 700_000), st.text(st.sampled_from(VISIBLE), max_size=220)),
    st.builds(lambda unit, n: unit * n, st.text(hostile_chars, min_size=1, max_size=3),
              st.integers(50, 300_000)),
)
deep_arrays = st.builds(
    Nested, st.integers(1, 3000),
    json_leaves,
)
SANE_ID_CHARS = set(string.ascii_letters + string.digits + "._:-")
request_ids = st.one_of(
    st.none(),
    st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),  # kept by the server
    st.text(st.sampled_from(string.printable.strip() + " "), min_size=1, max_size=200),
)


def _not_a_short_timeout(value: str) -> bool:
    """A positive timeout under 3 s could legitimately end in 504; leave those out."""
    try:
        seconds = float(value)
    except ValueError:
        return True
    return not (0 < seconds < 3)


timeouts = st.one_of(
    st.none(),
    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e309", "abc", "5s", "0x10", "  "]),
    st.floats(3, 1e12).map(repr),
    st.text(st.sampled_from(string.printable.strip()), min_size=1, max_size=20).filter(_not_a_short_timeout),
)


@st.composite
def client_headers(draw: st.DrawFn) -> dict[str, str]:
    headers = {}
    request_id, timeout = draw(request_ids), draw(timeouts)
    if request_id is not None and request_id.strip():
        headers["X-Request-ID"] = request_id.strip()
    if timeout is not None and timeout.strip():
        headers["X-Request-Timeout"] = timeout.strip()
    return headers


chaos_inputs = st.fixed_dictionaries({}, optional={
    "action": st.just("ok"),
    "tag": hostile_text | json_values,
    "echo": json_values | hostile_text | deep_arrays,
    "seconds": st.floats(0, 3600) | json_values,
    "mb": st.integers(0, 65536) | json_values,
}) | st.dictionaries(json_keys, json_values, max_size=4)
cartoon_inputs = st.fixed_dictionaries({}, optional={
    "image": st.text(max_size=200) | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())
    | json_values,
    "tag": json_values,
})
params = st.one_of(
    st.fixed_dictionaries({}, optional={"scale": st.integers(-5, 15) | json_values}),
    st.fixed_dictionaries({}, optional={"resolution": st.integers(0, 4096) | json_values,
                                        "style_level": st.floats(-1, 2) | json_values}),
    json_values,
)
#: Mostly the served models, sometimes any name (a 404).
model_names = st.sampled_from(["chaos", "cartoon", "chaos", "cartoon", ""]).flatmap(
    lambda name: st.just(name) if name else st.text(min_size=1, max_size=30))


# --- images ----------------------------------------------------------------------------


@functools.cache
def photo(fmt: str) -> bytes:
    """A small real photo-like image (gradients and a block) in ``fmt``."""
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (48, 1)), np.tile(x[::-1], (48, 1)), np.full((48, 64), 90, np.uint8)], -1)
    rgb[12:24, 16:32] = (220, 40, 60)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@functools.cache
def bomb(mode: str, size: int) -> bytes:
    """A valid PNG of ``size`` x ``size`` blank pixels: tens of kB that decode to hundreds of MB."""
    buf = io.BytesIO()
    Image.new(mode, (size, size)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def lying_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with 16 bytes of data."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
            + struct.pack(">I", 1 << 20) + b"IDAT" + zlib.compress(b"\x00" * 64)[:16])


def send_image(srv: Server, data: bytes | str, how: str, params: dict[str, Any] | None = None,
               **kw: Any) -> httpx.Response:
    """Send ``data`` as cartoon's image: base64 in JSON, a data URI, or a multipart file."""
    params = SMALL if params is None else params
    if how == "multipart":
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        return srv.client.post("/v1/models/cartoon/predict", files={"image": ("x.bin", raw)},
                               data={"params": json.dumps(params)}, **kw)
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    if how == "data-uri":
        text = "data:image/png;base64," + text
    return post(srv, "cartoon", body=dumps({"inputs": {"image": text}, "params": params}), **kw)


image_ways = st.sampled_from(["json", "data-uri", "multipart"])


# --- oracles ---------------------------------------------------------------------------


@functools.cache
def chaos_params_check() -> Any:
    return fastjsonschema.compile(Chaos.Params.model_json_schema())


def chaos_expected(raw: bytes) -> tuple[int, Any]:
    """The one right status for a chaos request sent as ``raw``, and the body as parsed.

    The server's steps: the size limit (413), JSON (400: also lone surrogates, nesting over
    MAX_JSON_DEPTH levels, numbers past a double), the params' schema in the front, then the
    worker's pydantic validation (422).
    """
    if len(raw) > LIMIT:
        return 413, None
    try:
        body = orjson.loads(raw)
        check_depth(body)
    except (orjson.JSONDecodeError, BadInput):
        return 400, None
    inputs, params_ = body.get("inputs"), body.get("params", {})
    if not isinstance(inputs, dict) or not isinstance(params_, dict):
        return 422, body
    try:
        chaos_params_check()(dict(params_))
        Chaos.Params.model_validate(params_)
        Chaos.Inputs.model_validate(inputs)
    except (fastjsonschema.JsonSchemaValueException, ValidationError):
        return 422, body
    return 200, body


# --- the fuzz tests ----------------------------------------------------------------------


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "application/json;charset=latin-1"]
OTHER_TYPES = ["text/plain", "application/x-www-form-urlencoded", "application/xml", "image/png"]


@FUZZ
@given(model=model_names,
       body=json_values | st.dictionaries(json_keys, json_values, max_size=4),
       ascii_only=st.booleans(), headers=client_headers(),
       content_type=st.sampled_from(JSON_TYPES + OTHER_TYPES))
def test_any_json_value_as_the_body(srv: Server, model: str, body: Any, ascii_only: bool,
                                    headers: dict[str, str], content_type: str) -> None:
    if model in (".", ".."):
        model = "no-such-model"  # the client would resolve the dots away, out of the route
    response = post(srv, model, body=dumps(only_ok(body), ascii_only), headers=headers,
                    content_type=content_type)
    if model not in ("chaos", "cartoon"):
        answered(srv, response, 404)
    elif not _valid_timeout(headers.get("X-Request-Timeout", "5")) or content_type in OTHER_TYPES:
        answered(srv, response, 400)
    else:
        answered(srv, response)
    given_id = headers.get("X-Request-ID", "")
    if given_id and len(given_id) <= 128 and set(given_id) <= SANE_ID_CHARS:
        assert response.headers["x-request-id"] == given_id  # a sane id is kept


def _valid_timeout(value: str) -> bool:
    try:
        seconds = float(value)
    except ValueError:
        return False
    return 0 < seconds < math.inf


@FUZZ
@given(inputs=chaos_inputs | json_values, params_=params, ascii_only=st.booleans())
def test_chaos_inputs_and_params_of_random_json(srv: Server, inputs: Any, params_: Any,
                                                ascii_only: bool) -> None:
    raw = dumps(only_ok({"inputs": inputs, "params": params_}), ascii_only)
    expected, parsed = chaos_expected(raw)
    out = answered(srv, post(srv, "chaos", body=raw), expected)
    if expected == 200:
        assert out["outputs"]["ok"] is True
        assert out["outputs"]["echo"] == parsed["inputs"].get("echo")


@FUZZ
@given(inputs=cartoon_inputs | json_values, params_=params, as_form=st.booleans())
def test_cartoon_inputs_and_params_of_random_json(srv: Server, inputs: Any, params_: Any,
                                                  as_form: bool) -> None:
    if as_form:
        body, content_type = multipart({"inputs": dumps(inputs), "params": dumps(params_)})
        response = post(srv, "cartoon", body=body, content_type=content_type)
    else:
        response = post(srv, "cartoon", body=dumps({"inputs": inputs, "params": params_}))
    answered(srv, response, 400, 413, 422)  # never an image that decodes: never 200


@FUZZ
@given(tag=hostile_text, echo=hostile_text | deep_arrays | json_values, ascii_only=st.booleans())
def test_hostile_text_in_tag_and_echo(srv: Server, tag: str, echo: Any, ascii_only: bool) -> None:
    raw = dumps({"inputs": {"action": "ok", "tag": tag, "echo": echo}}, ascii_only)
    expected, parsed = chaos_expected(raw)
    out = answered(srv, post(srv, "chaos", body=raw), expected)
    if expected == 200:
        assert out["outputs"]["echo"] == parsed["inputs"]["echo"]  # returned as is


@FUZZ
@given(tag=hostile_text, as_file=st.booleans())
def test_hostile_text_as_a_multipart_field_or_file(srv: Server, tag: str, as_file: bool) -> None:
    """A form field arrives as text (starlette falls back to latin-1), a file as bytes."""
    data = tag.encode("utf-8", "surrogatepass")
    if not as_file and len(data) > KNOWN_BAD_FORM_FIELD_BYTES:
        data = data[:KNOWN_BAD_FORM_FIELD_BYTES]
    body, content_type = multipart({"tag": data}, {"tag": "tag.txt"} if as_file else None)
    response = post(srv, "chaos", body=body, content_type=content_type)
    if len(body) > LIMIT:
        answered(srv, response, 413)
        return
    value: str | bytes = data if as_file else _user_safe_decode(data)
    try:
        Chaos.Inputs.model_validate({"tag": value})
    except ValidationError:
        answered(srv, response, 422)
    else:
        answered(srv, response, 200)


def _user_safe_decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@FUZZ
@given(data=st.binary(max_size=4096), how=image_ways)
def test_random_bytes_as_the_image(srv: Server, data: bytes, how: str) -> None:
    answered(srv, send_image(srv, data, how), 422)


@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG", "WEBP"]), cut=st.just(1.0) | st.floats(0, 1), how=image_ways,
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_truncated_and_damaged_real_images(srv: Server, fmt: str, cut: float, how: str,
                                           flips: list[tuple[float, int]]) -> None:
    data = bytearray(photo(fmt)[: max(1, round(len(photo(fmt)) * cut))])
    for where, byte in flips:
        data[min(len(data) - 1, int(where * len(data)))] = byte
    if len(data) == len(photo(fmt)) and not flips:
        expected: tuple[int, ...] = (200,)
    elif cut < 0.5:
        expected = (422,)
    else:  # a PNG without its last checksums, or with a flipped pixel, may still decode
        expected = (200, 422)
    answered(srv, send_image(srv, bytes(data), how), *expected)


@FUZZ
@given(over=st.integers(-40, 40), how=st.sampled_from(["json", "multipart"]))
def test_bodies_around_the_size_limit(srv: Server, over: int, how: str) -> None:
    """A body of LIMIT + ``over`` bytes: 413 when over, else the (not an image) 422."""
    if how == "json":
        head, tail = b'{"inputs":{"image":"', b'"},"params":{"resolution":512}}'
        body = head + b"A" * (LIMIT + over - len(head) - len(tail)) + tail
        response = post(srv, "cartoon", body=body)
    else:
        empty, content_type = multipart({"image": b""}, {"image": "x.bin"})
        body, _ = multipart({"image": b"\x00" * (LIMIT + over - len(empty))}, {"image": "x.bin"})
        response = post(srv, "cartoon", body=body, content_type=content_type)
    assert len(body) == LIMIT + over
    answered(srv, response, 413 if over > 0 else 422)


# --- explicit cases ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["json", "multipart"])
@pytest.mark.parametrize(
    "image",
    [pytest.param(lambda: bomb("1", 20_000), id="20000x20000-1bit"),
     pytest.param(lambda: bomb("L", 8_000), id="8000x8000-grey"),
     pytest.param(lambda: lying_png(100_000, 100_000), id="header-says-100000x100000"),
     pytest.param(lambda: lying_png(7_000, 7_000), id="header-says-7000x7000")],
)
def test_decompression_bombs_are_refused_with_413(srv: Server, image: Any, how: str) -> None:
    data = image()
    assert len(data) < 100_000
    started = time.monotonic()
    check(srv, send_image(srv, data, how), 413)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_real_images_themselves_pass(srv: Server, fmt: str) -> None:
    """The fuzz's damaged images start from images the model takes."""
    check(srv, send_image(srv, photo(fmt), "json"), 200)


def test_a_chunked_body_over_the_limit_is_refused_with_413(srv: Server) -> None:
    def chunks() -> Any:
        for _ in range(LIMIT // 65536 + 2):
            yield b" " * 65536

    response = srv.client.post("/v1/models/chaos/predict", content=chunks(),
                               headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    check(srv, response, 413)


def test_lone_surrogates_are_refused_as_json_errors(srv: Server) -> None:
    for raw in (b'{"inputs":{"tag":"\\ud800"}}', b'{"inputs":{"tag":"a\\udfffb"}}',
                b'{"inputs":{"echo":"\xed\xa0\x80"}}'):
        check(srv, post(srv, "chaos", body=raw), 400)


@pytest.mark.parametrize("how", ["json", "multipart-file"])
def test_a_megabyte_of_combining_marks_is_answered_at_once(srv: Server, how: str) -> None:
    """Zalgo text: the cleaning cuts the runs of marks, so NFC stays linear (it was 20 s+)."""
    tag = "a" + "\u0301\u0316" * 250_000
    started = time.monotonic()
    if how == "json":
        response = post(srv, "chaos", body=dumps({"inputs": {"tag": tag}}, ascii_only=False))
    else:
        body, content_type = multipart({"tag": tag.encode()}, {"tag": "tag.txt"})
        response = post(srv, "chaos", body=body, content_type=content_type)
    check(srv, response, 200)
    assert time.monotonic() - started < 2


def test_a_tag_of_200_visible_characters_in_10000_invisible_ones_is_taken(srv: Server) -> None:
    tag = "\u200b\u202e\x00" * 3_000 + "t" * 200 + "\ufeff" * 1_000
    check(srv, post(srv, "chaos", body=dumps({"inputs": {"tag": tag}})), 200)
    check(srv, post(srv, "chaos", body=dumps({"inputs": {"tag": tag + "u"}})), 422)


# --- inputs that once broke the server (found by the fuzz, fixed): request ids start with
# "regression-", whose error logs the last test allows


def regression(srv: Server, name: str, body: bytes, content_type: str = "application/json") -> None:
    response = post(srv, "chaos", body=body, content_type=content_type,
                    headers={"X-Request-ID": f"regression-{name}"})
    check(srv, response)


def nested(n: int) -> bytes:
    return b"[" * n + b"]" * n


def test_an_echo_nested_253_deep_is_answered_without_a_500(srv: Server) -> None:
    """The smallest: an echo of 253 nested arrays (252 answer 200)."""
    regression(srv, "echo-depth", b'{"inputs":{"echo":' + nested(253) + b"}}")


def test_an_input_nested_520_deep_is_refused_before_the_worker(srv: Server) -> None:
    """486 nested arrays were the smallest in one run (it depends on the stack's depth)."""
    regression(srv, "input-depth", b'{"inputs":{"extra":' + nested(520) + b"}}")


def test_params_nested_1010_deep_are_refused_and_the_request_logged(srv: Server) -> None:
    """973 nested arrays were the smallest in one run (it depends on the stack's depth)."""
    regression(srv, "params-depth", b'{"inputs":{},"params":{"scale":' + nested(1010) + b"}}")


@pytest.mark.parametrize("body, content_type", [
    pytest.param(b"--x\r\n", "multipart/form-data", id="no-boundary"),
    pytest.param(b"garbage", "multipart/form-data; boundary=abc", id="garbage"),
    pytest.param(*multipart({"tag": b"t" * (KNOWN_BAD_FORM_FIELD_BYTES + 1)}), id="field-over-1MiB"),
    pytest.param(*multipart({f"f{i}": b"" for i in range(1001)}), id="1001-fields"),
])
def test_malformed_multipart_is_a_4xx(srv: Server, body: bytes, content_type: str) -> None:
    regression(srv, f"multipart-{len(body)}", body, content_type)


def test_a_deep_input_queued_behind_a_request_leaves_the_worker_alive(serve: ServerFactory) -> None:
    """On its own server: this one kills a worker, which the shared server must not see."""
    own = serve({"chaos": {"app": CHAOS, "timeout_s": 1.5, "probe_interval_s": 0}})
    pids = own.worker_pids("chaos")
    results: dict[str, int] = {}

    def call(name: str, inputs: bytes) -> None:
        results[name] = post(own, "chaos", body=b'{"inputs":' + inputs + b"}",
                             headers={"X-Request-ID": f"regression-{name}"}).status_code

    calls = [threading.Thread(target=call, args=("sleeper", b'{"action":"sleep","seconds":0.5}'))]
    calls[0].start()
    time.sleep(0.2)
    for name, inputs in (("deep", b'{"extra":' + nested(1000) + b"}"), ("innocent", b'{"tag":"x"}')):
        calls.append(threading.Thread(target=call, args=(name, inputs)))
        calls[-1].start()
        time.sleep(0.05)
    for thread in calls:
        thread.join()
    after = post(own, "chaos", body=b'{"inputs":{"tag":"after"}}').status_code
    assert (results["sleeper"], results["innocent"], after) == (200, 200, 200)
    assert results["deep"] < 500
    assert own.worker_pids("chaos") == pids


# --- hostile header values --------------------------------------------------------------
# Every header the server reads, on a route that reads it, with values no client should send:
# non-ASCII bytes, control characters, huge values, odd numbers. Sent over a raw socket (an
# HTTP client would refuse most of them). Never a 5xx; a 4xx in the one error shape.

ODD_VALUES = [b"\xb2", b"\xc2\xb2", "\u0663".encode(), b"\xff\xfe", b"-1", b"-0", b"nan", b"NaN",
              b"inf", b"-inf", b"1e309", b"0x10", b"1_000", b" 5 ", b"", b"\x00", b"\x01", b"\x7f",
              b"\t", b"9" * 40, b"bytes=-1", b"bytes=5-1", b"bytes=0-0,0-0," * 50, b"*/*;q=nan",
              b"multipart/form-data; boundary=", b"application/json; charset=\xff"]
#: No CR or LF: those end the header (framing is uvicorn's parser's business, tested below).
header_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.builds(lambda unit, n: unit * n, st.sampled_from([b"a", b"\xb2", b"\x01", b"9"]),
              st.integers(1000, 70_000)),
)
HEADERS_READ = ["x-request-id", "x-request-timeout", "last-event-id", "idempotency-key",
                "content-type", "content-length", "range", "accept", "host", "origin",
                "authorization", "x-api-key", "expect", "transfer-encoding", "if-range",
                "access-control-request-method"]


@pytest.fixture(scope="module")
def finished_job(srv: Server) -> str:
    """A succeeded job with a file result: its events end, its result answers Range."""
    job = srv.submit_job("chaos", {"action": "ok", "blob_kb": 4})
    return str(srv.wait_job(job["id"], "succeeded")["id"])


def request_for(header: str, value: bytes, job_id: str) -> bytes:
    """A request to a route that reads ``header``, with ``header: value`` in it."""
    body = b'{"inputs": {"action": "ok", "tag": "headers"}}'
    method, path = {
        "last-event-id": ("GET", f"/v1/jobs/{job_id}/events"),
        "range": ("GET", f"/v1/jobs/{job_id}/result"),
        "if-range": ("GET", f"/v1/jobs/{job_id}/result"),
        "idempotency-key": ("POST", "/v1/models/chaos/jobs"),
        "accept": ("GET", "/v1/models"),
        "access-control-request-method": ("OPTIONS", "/v1/models/chaos/predict"),
    }.get(header, ("POST", "/v1/models/chaos/predict"))
    headers = {b"host": b"127.0.0.1"}
    if method == "POST":
        headers.update({b"content-type": b"application/json", b"content-length": b"%d" % len(body)})
    headers[header.encode()] = value
    head = b"%s %s HTTP/1.1\r\n" % (method.encode(), path.encode())
    head += b"".join(b"%s: %s\r\n" % item for item in headers.items()) + b"connection: close\r\n\r\n"
    return head + (body if method == "POST" else b"")


def check_raw(response: RawResponse, what: str) -> None:
    assert response.status < 500, f"{what}: {response}"
    assert response.headers.get("x-request-id"), f"{what}: {response}"
    if response.status >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        error = orjson.loads(response.body)["error"]
        assert error["message"] and error["request_id"] == response.headers["x-request-id"], what


@FUZZ
@given(header=st.sampled_from(HEADERS_READ), value=header_values)
def test_hostile_header_values_get_no_5xx(srv: Server, finished_job: str, header: str,
                                           value: bytes) -> None:
    response = exchange(srv.url, request_for(header, value, finished_job), timeout_s=30)
    event(f"{header}: HTTP {response.status}")
    check_raw(response, f"{header}: {value[:80]!r}")


@pytest.mark.parametrize("header", ["last-event-id", "x-request-timeout", "content-length",
                                    "idempotency-key", "x-request-id"])
@pytest.mark.parametrize("value", [b"\xb2", b"\xc2\xb2", b"\xb9\xb2"], ids=["latin-1", "utf-8", "two"])
def test_superscript_digits_are_a_400_not_a_500(srv: Server, finished_job: str, header: str,
                                                value: bytes) -> None:
    """``Last-Event-ID: \u00b2`` was a 500: ``str.isdigit`` takes superscripts, ``int`` does not."""
    response = exchange(srv.url, request_for(header, value, finished_job), timeout_s=30)
    check_raw(response, f"{header}: {value!r}")
    if header != "x-request-id":
        assert response.status == 400, response


def test_a_request_the_parser_refuses_is_a_400_in_the_error_shape(srv: Server) -> None:
    response = exchange(srv.url, b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
    assert response.status == 400, response
    check_raw(response, "a header name with a space")
    assert orjson.loads(response.body)["error"]["type"] == "bad_input"


# --- after all of it ---------------------------------------------------------------------


def test_models_ready_and_workers_unchanged_after_the_fuzzing(srv: Server, baseline: dict[str, Any]) -> None:
    now = srv.health()
    assert now["status"] == "ok", now
    for model in ("chaos", "cartoon"):
        before, after = baseline["models"][model], now["models"][model]
        assert after["state"] == "ready", after
        assert [(r["pid"], r["restarts"]) for r in after["replicas"]] == \
            [(r["pid"], r["restarts"]) for r in before["replicas"]], (before, after)
        assert after["template"].get("pid") == before["template"].get("pid")
        assert after["quarantined_inputs"] == 0
    assert srv.get("/readyz").status_code == 200
    problems = []
    for line in srv.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        bad = record.get("level") in ("error", "critical") or record.get("event") in (
            "worker.exit", "worker.killed")
        if bad and not str(record.get("request_id", "")).startswith("regression-"):
            problems.append(line[:3000])
    assert not problems, "\n".join(problems)
