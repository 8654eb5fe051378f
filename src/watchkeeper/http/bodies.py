"""Reading a predict request: JSON or multipart, size-limited, into inputs and params.

Front process only. Files stay raw bytes (the worker decodes them); JSON strings stay
strings (base64 images are decoded by the worker too), so the front does no model work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from watchkeeper.errors import BadInput, InvalidInput, PayloadTooLarge

__all__ = ["MAX_JSON_DEPTH", "PredictBody", "body_limit", "check_depth", "parse_predict", "parse_timeout",
           "read_body"]

_TOP_LEVEL_KEYS = ("inputs", "params", "allow_degrade")
#: Deepest nesting of arrays and objects accepted in a body (deeper: 400). Keeps every
#: later step (pickling for the worker, logging, the JSON answer) far from its own limits.
MAX_JSON_DEPTH = 64
#: Most files or fields in one multipart body.
MAX_FORM_PARTS = 1000


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
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:  # the ASGI messages themselves: Request.stream() costs a generator per body
        message = await receive()
        if message["type"] != "http.request":
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


async def parse_predict(request: Request, body: bytes) -> PredictBody:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type in ("application/json", ""):
        return parse_json(body)
    if content_type == "multipart/form-data":
        return await parse_multipart(request, body)
    raise BadInput(
        f"content type '{content_type}' is not accepted (allowed: application/json, "
        "multipart/form-data)"
    )


def parse_json(body: bytes) -> PredictBody:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    check_depth(data)
    if not isinstance(data, dict):
        raise BadInput(f"the body must be a JSON object, not {_json_type(data)}")
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown top-level field(s) {', '.join(unknown)} (allowed: {', '.join(_TOP_LEVEL_KEYS)})",
            details={"errors": [{"field": k, "message": "unknown field"} for k in unknown]},
        )
    return PredictBody(_object(data, "inputs", required=True), _object(data, "params"),
                       _allow_degrade(data.get("allow_degrade", True)))


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


async def parse_multipart(request: Request, body: bytes) -> PredictBody:
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
                field_value = _json_field(key, value)
                check_depth(field_value)
                target.update(_object({key: field_value}, key))
            else:
                inputs[key] = value
    finally:
        await form.close()
    return PredictBody(inputs, params, allow_degrade)


def _json_field(key: str, value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the form field '{key}' is not valid JSON: {exc}") from None


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
