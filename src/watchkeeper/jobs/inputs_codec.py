"""Job inputs as the job store keeps them: JSON bytes, never pickle.

Runs in the front process, in the job store's thread: a submit's inputs are encoded once,
when the store writes them (``NewJob.stored_inputs``, which its request hash reuses), and
decoded when a worker is to run them. A data file must never be able to run code, so inputs are JSON,
with bytes at any depth (uploaded files) written as ``{"$bytes": "<base64>"}``, and a
client's own one-key ``{"$...": ...}`` dict wrapped as ``{"$dict": ...}`` so that it never
decodes as bytes.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

__all__ = ["decode_inputs", "encode_inputs"]


def _escape(value: Any) -> Any:
    """Wrap a client's own one-key ``{"$...": ...}`` dicts so they never decode as bytes."""
    if isinstance(value, dict):
        inner = {k: _escape(v) for k, v in value.items()}
        if len(value) == 1 and str(next(iter(value))).startswith("$"):
            return {"$dict": inner}
        return inner
    if isinstance(value, list | tuple):
        return [_escape(v) for v in value]
    return value


def _bytes_to_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"inputs hold a {type(value).__name__}, which is not JSON or bytes")


def _unescape(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if len(value) == 1 and isinstance(value.get("$dict"), dict):
            return {k: _unescape(v) for k, v in value["$dict"].items()}
        return {k: _unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    return value


def encode_inputs(inputs: dict[str, Any]) -> bytes:
    """Inputs (JSON values, bytes at any depth) as JSON bytes; never pickle."""
    return orjson.dumps(_escape(inputs), default=_bytes_to_json)


def decode_inputs(data: bytes) -> dict[str, Any]:
    """The inverse of :func:`encode_inputs` (bytes come back as ``bytes``)."""
    decoded = _unescape(orjson.loads(data))
    if not isinstance(decoded, dict):
        raise ValueError("stored inputs are not a JSON object")
    return decoded
