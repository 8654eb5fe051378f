"""HTTP status codes for the error tree, chosen here and nowhere else. Front process only.

Every error response has one shape::

    {"error": {"type": "...", "message": "...", "suggestion": "...", "request_id": "..."}}

with ``Retry-After`` on 429/503 (and on 422 for a quarantined input).

No leaks: what a caller is told depends on who it is (``public_error``, the one place). A
principal with ``admin`` sees every error whole; anyone else sees a model's exception as its
type only ("the model raised ValueError", the text and traceback stay in the server's log
under the request id), and absolute filesystem paths in messages as ``<path>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from watchkeeper import errors as e

__all__ = ["STATUS", "Caller", "ErrorResponse", "error_body", "error_response", "public_error",
           "status_of"]


class Caller(Protocol):
    """Who an error is shown to: ``http.guard.Principal`` (which imports this module)."""

    @property
    def admin(self) -> bool: ...


#: A model's exception as the worker reports it: ``"<ExceptionType>: <text>"``.
_EXCEPTION = re.compile(r"([A-Za-z_]\w*): ")
#: An absolute filesystem path (POSIX, or a Windows drive's); the API's own paths are kept.
_PATH = re.compile(
    r"(?<![\w.~:/\\-])/(?!(?:v\d+|admin|health|livez|readyz|metrics|docs|openapi\.json)\b)"
    r"[^\s'\"`,;()\[\]{}<>]+"
    r"|\b[A-Za-z]:\\[^\s'\"`,;()\[\]{}<>]+"
)

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


def error_body(error: e.WatchkeeperError, request_id: str,
               principal: Caller | None = None) -> dict[str, Any]:
    """The one error shape, as ``principal`` may see it (:func:`public_error`)."""
    fields: dict[str, Any] = {"type": error.type, "message": error.message,
                              "suggestion": error.suggestion}
    if error.details:
        fields["details"] = error.details
    return {"error": public_error(fields, principal, request_id)}


def public_error(fields: Mapping[str, Any], principal: Caller | None,
                 request_id: str) -> dict[str, Any]:
    """An error (``type``, ``message``, ``suggestion``, perhaps ``details``) as a caller may see
    it: whole for a principal with ``admin``; for anyone else (``None``: not known) a model's
    exception is reduced to its type, and filesystem paths become ``<path>``. Every error a
    client is sent passes here: raised ones (:func:`error_body`) and the stored errors of jobs.
    The server's log keeps the whole text under ``request_id``."""
    shown: dict[str, Any] = {"type": fields.get("type"), "message": fields.get("message", ""),
                             "suggestion": fields.get("suggestion", "")}
    if fields.get("details"):
        shown["details"] = fields["details"]
    if principal is None or not principal.admin:
        shown = _redacted(shown, request_id)
    shown["request_id"] = request_id
    return shown


def _redacted(fields: dict[str, Any], request_id: str) -> dict[str, Any]:
    raised = _EXCEPTION.match(str(fields["message"])) if fields["type"] == e.ModelError.type else None
    if raised is not None:
        return {"type": fields["type"], "message": f"the model raised {raised.group(1)}",
                "suggestion": "The server's log has the whole error (its text and traceback) "
                              f"under request id {request_id}; ask its operators."}
    cleaned: dict[str, Any] = _without_paths(fields)
    return cleaned


def _without_paths(value: Any) -> Any:
    if isinstance(value, str):
        return _PATH.sub("<path>", value)
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_paths(item) for item in value]
    return value


def error_response(error: e.WatchkeeperError, request_id: str,
                   principal: Caller | None = None) -> Response:
    """The error as a JSON response. Without ``principal``, the body is made for the caller
    the guard stored in the scope the response is sent on (none there: redacted)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="watchkeeper"'
    return ErrorResponse(error, request_id, principal, headers)


class ErrorResponse(Response):
    """An error response whose body is made for its caller: the ``principal`` given, or
    else the one in the scope it is sent on (so every route's errors are redacted here)."""

    def __init__(self, error: e.WatchkeeperError, request_id: str, principal: Caller | None,
                 headers: dict[str, str]) -> None:
        self.error, self.request_id, self.principal = error, request_id, principal
        super().__init__(self._render(principal), status_code=status_of(error),
                         media_type="application/json", headers=headers)

    def _render(self, principal: Caller | None) -> bytes:
        return orjson.dumps(error_body(self.error, self.request_id, principal), default=str)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.principal is None:
            self.body = self._render(scope.get("state", {}).get("principal"))
            self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)
