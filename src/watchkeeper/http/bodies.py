"""Reading a predict request: JSON or multipart, size-limited, into inputs and params.

Front process only. Files stay raw bytes (the worker decodes them); JSON strings stay
strings (base64 images are decoded by the worker too), so the front does no model work.

A body over ``OFF_LOOP_BYTES`` is parsed in the body thread (``wk-bodies``, one thread:
big bodies queue there instead of in the event loop), small ones on the loop as before (a
thread hop costs more than they do). Its cost is bounded before it is paid: building a JSON
value costs far more than its bytes (16 MiB of ``[[1],[1],...]`` is four million lists),
and orjson and pickle hold the GIL while they build, so a thread alone would not keep the
loop free. So the body's values are counted first (``server.max_json_values``; more: 413),
the parse runs with the cyclic garbage collector paused (it is most of the time of a
container-heavy parse), and the inputs are encoded back to JSON there, once
(:class:`JsonInputs`): the scheduler pickles them for the worker, on the loop, as one bytes
object rather than value by value, and the worker decodes them with orjson.
"""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from watchkeeper.errors import BadInput, InvalidInput, PayloadTooLarge
from watchkeeper.http.connections import BODY_TIMED_OUT

__all__ = ["MAX_JSON_DEPTH", "MAX_JSON_VALUES", "OFF_LOOP_BYTES", "JsonInputs", "PredictBody",
           "body_limit", "check_depth", "count_json_values", "parse_json", "parse_predict",
           "parse_timeout", "read_body"]

_TOP_LEVEL_KEYS = ("inputs", "params", "allow_degrade")
#: Deepest nesting of arrays and objects accepted in a body (deeper: 400). Keeps every
#: later step (pickling for the worker, logging, the JSON answer) far from its own limits.
MAX_JSON_DEPTH = 64
#: Most files or fields in one multipart body.
MAX_FORM_PARTS = 1000
#: ``server.max_json_values``' default: most JSON values in one body or form field.
MAX_JSON_VALUES = 1_000_000
#: Bodies (and JSON form fields) larger than this are parsed in the body thread.
OFF_LOOP_BYTES = 64 * 1024
#: A JSON string, or one of the bytes that start a value after the first: , [ {
_STRING_OR_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[,\[{]')
_body_thread = ThreadPoolExecutor(1, thread_name_prefix="wk-bodies")


class JsonInputs(dict[str, Any]):
    """A large body's inputs, with their JSON: pickled (for the worker) as that one bytes
    object and rebuilt there by ``orjson.loads``, so the loop never pickles them value by
    value. A snapshot: the inputs must not change after parsing (nothing in the front does)."""

    __slots__ = ("_json",)

    def __init__(self, inputs: dict[str, Any], encoded: bytes) -> None:
        super().__init__(inputs)
        self._json = encoded

    def __reduce__(self) -> tuple[Any, ...]:
        return (orjson.loads, (self._json,))


@dataclass(frozen=True, slots=True)
class PredictBody:
    inputs: dict[str, Any]
    params: dict[str, Any]
    allow_degrade: bool = True


def body_limit(max_body_mb: float) -> int:
    """``server.max_body_mb`` in bytes: the largest body ``read_body`` accepts."""
    return int(max_body_mb * 1024 * 1024)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:  # the ASGI messages themselves: Request.stream() costs a generator per body
        message = await receive()
        if message["type"] != "http.request":
            if request.scope.get(BODY_TIMED_OUT):
                raise BadInput("the body did not arrive within server.client_body_timeout_s: the "
                               "connection was answered 408 and closed")
            raise BadInput("the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is {size:,} bytes or more; the limit is {limit:,} bytes (server.max_body_mb)"
    )


async def parse_predict(request: Request, body: bytes, max_values: int = MAX_JSON_VALUES) -> PredictBody:
    """The body as inputs and params (a large one parsed in the body thread)."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type in ("application/json", ""):
        if len(body) <= OFF_LOOP_BYTES:
            return parse_json(body)
        return await _off_loop(parse_json, body, max_values)
    if content_type == "multipart/form-data":
        return await parse_multipart(request, body, max_values)
    raise BadInput(
        f"content type '{content_type[:100]}' is not accepted (allowed: application/json, "
        "multipart/form-data)"
    )


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_body_thread, fn, *args)


def parse_json(body: bytes, max_values: int | None = None) -> PredictBody:
    """Parse and check a JSON body; with ``max_values`` (a large body, in the body thread)
    its values are counted first and its inputs kept with their JSON (:class:`JsonInputs`)."""
    data = _load(body, max_values)
    if not isinstance(data, dict):
        raise BadInput(f"the body must be a JSON object, not {_json_type(data)}")
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown top-level field(s) {', '.join(unknown)} (allowed: {', '.join(_TOP_LEVEL_KEYS)})",
            details={"errors": [{"field": k, "message": "unknown field"} for k in unknown]},
        )
    inputs = _object(data, "inputs", required=True)
    if max_values is not None:
        inputs = JsonInputs(inputs, orjson.dumps(inputs))
    return PredictBody(inputs, _object(data, "params"), _allow_degrade(data.get("allow_degrade", True)))


def _load(text: bytes | str, max_values: int | None, what: str = "the body") -> Any:
    """``orjson.loads`` and the depth check; with ``max_values``, values counted first and
    the garbage collector paused while the values are built."""
    if max_values is None:
        data = _loads(text, what)
    else:
        raw = text.encode() if isinstance(text, str) else text
        count_json_values(raw, max_values, what)
        with _gc_paused():
            data = _loads(raw, what)
    check_depth(data)
    return data


def _loads(text: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic collector off (one body thread: never nested); it scans every new list
    and dict, which makes a parse of millions of them several times slower."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def count_json_values(raw: bytes, limit: int, what: str = "the body") -> int:
    """Values in the JSON text ``raw`` (each ``,``, ``[`` and ``{`` outside strings starts
    one, plus the first); PayloadTooLarge past ``limit``. Counting bytes first is enough for
    most bodies; the exact count (strings skipped) stops as soon as it passes ``limit``."""
    upper = raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1
    if upper <= limit:
        return upper
    count = 1
    for match in _STRING_OR_STRUCTURE.finditer(raw):
        if match.end() - match.start() == 1:  # a , [ or { (a string is 2 bytes or more)
            count += 1
            if count > limit:
                raise PayloadTooLarge(
                    f"{what} holds more than {limit:,} JSON values (server.max_json_values)",
                    suggestion="Send large arrays as a file (multipart) or base64, or split the work.")
    return count


def _allow_degrade(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # a multipart form field
    if not isinstance(value, bool):
        raise InvalidInput(
            f"'allow_degrade' must be true or false, not {_json_type(value)}",
            details={"errors": [{"field": "allow_degrade", "message": "must be a boolean"}]},
        )
    return value


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    raise BadInput(f"the body is nested deeper than {limit} levels",
                                   suggestion="Flatten the inputs and params.")
                stack.append((child, depth + 1))


def _object(data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    if key not in data:
        if required:
            raise InvalidInput(
                f"'{key}' is missing: send {{\"{key}\": {{...}}}}",
                details={"errors": [{"field": key, "message": "field required"}]},
            )
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise InvalidInput(
            f"'{key}' must be a JSON object, not {_json_type(value)}",
            details={"errors": [{"field": key, "message": "must be an object"}]},
        )
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


async def parse_multipart(request: Request, body: bytes, max_values: int = MAX_JSON_VALUES) -> PredictBody:
    """Files become inputs (bytes); a ``params`` or ``inputs`` field may carry JSON."""
    replay = _replay(body)
    try:
        form = await Request(request.scope, receive=replay).form(
            max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS, max_part_size=len(body) + 1)
    except MultiPartException as exc:
        raise BadInput(f"the multipart body is malformed: {exc.message}",
                       suggestion=f"Send at most {MAX_FORM_PARTS} parts, with a boundary.") from None
    inputs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    allow_degrade = True
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                inputs[key] = await value.read()
            elif key == "allow_degrade":
                allow_degrade = _allow_degrade(value)
            elif key in _TOP_LEVEL_KEYS:
                target = inputs if key == "inputs" else params
                field_value = await _json_field(key, value, max_values)
                target.update(_object({key: field_value}, key))
            else:
                inputs[key] = value
    finally:
        await form.close()
    return PredictBody(inputs, params, allow_degrade)


async def _json_field(key: str, value: str, max_values: int) -> Any:
    what = f"the form field '{key}'"
    if len(value) <= OFF_LOOP_BYTES:
        return _load(value, None, what)
    return await _off_loop(_load, value, max_values, what)


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def parse_timeout(header: str | None, model_timeout_s: float) -> float:
    """The request's deadline in seconds: the model's ``timeout_s``, lowered by the header."""
    if header is None:
        return model_timeout_s
    try:
        value = float(header)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise BadInput(
            f"X-Request-Timeout must be a positive number of seconds (got '{header[:50]}')",
            suggestion=f"Send e.g. 'X-Request-Timeout: 5'; the model's limit is {model_timeout_s:g} s.",
        )
    return min(value, model_timeout_s)
