"""HTTP status codes for the error tree, chosen here and nowhere else. Front process only.

Every error response has one shape::

    {"error": {"type": "...", "message": "...", "suggestion": "...", "request_id": "..."}}

with ``Retry-After`` on 429/503 (and on 422 for a quarantined input).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

from watchkeeper import errors as e

__all__ = ["STATUS", "status_of", "error_body", "error_response"]

#: The most specific class wins (the lookup walks each error's MRO).
STATUS: dict[type[e.WatchkeeperError], int] = {
    e.BadInput: 400,
    e.InvalidInput: 422,
    e.PayloadTooLarge: 413,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.Cancelled: 409,
    e.InputQuarantined: 422,
    e.Overloaded: 429,
    e.Unavailable: 503,
    e.DeadlineExceeded: 504,
    e.WorkerCrashed: 502,
    e.ModelError: 500,
    e.WatchkeeperError: 500,
}


def status_of(error: e.WatchkeeperError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(error: e.WatchkeeperError, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": error.type,
        "message": error.message,
        "suggestion": error.suggestion,
        "request_id": request_id,
    }
    if error.details:
        body["details"] = error.details
    return {"error": body}


def error_response(error: e.WatchkeeperError, request_id: str) -> Response:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="watchkeeper"'
    return Response(
        orjson.dumps(error_body(error, request_id), default=str),
        status_code=status_of(error),
        media_type="application/json",
        headers=headers,
    )
