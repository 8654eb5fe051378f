"""JSON responses with orjson: numpy arrays as lists, Blobs and bytes as base64. Front only."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import Response

from watchkeeper.protocol.blob import Blob

__all__ = ["json_bytes", "json_response"]

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS


def _encode_extra(value: Any) -> Any:
    if isinstance(value, Blob):
        return base64.b64encode(value.data).decode("ascii")
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_bytes(body: Any) -> bytes:
    return orjson.dumps(body, default=_encode_extra, option=_OPTIONS)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(body), status_code=status_code, media_type="application/json",
                    headers=headers)
