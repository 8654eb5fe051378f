"""The one error tree of watchkeeper.

Every failure a client can see is one of these classes; the front maps them to HTTP
status codes in exactly one place (``watchkeeper.http.errors``). Workers raise or report
them by ``type`` string and never import the web framework.

    WatchkeeperError
    ├── ConfigError            start-up: a bad key, type or value in the configuration
    ├── BadInput               400  the body is not what the endpoint takes
    │   ├── InvalidInput       422  a field is missing, of the wrong type or out of bounds
    │   └── PayloadTooLarge    413  the body or an image is over the limit
    ├── Unauthenticated        401  no API key, or one that is unknown or revoked
    ├── Forbidden              403  the key lacks the route's scope, or a page on another origin
    ├── NotFound               404  no such model (or job, or not the caller's job)
    ├── Conflict               409  the job is not in a state that allows this (e.g. no
    │                               result yet), or an Idempotency-Key reused with another body
    ├── Cancelled              409  the job was cancelled while it ran
    ├── InputQuarantined       422  this exact input killed (crashed or hung) two workers;
    │                               refused for quarantine_s
    ├── Overloaded             429  the model's queue is full                (Retry-After)
    ├── Unavailable            503  no replica can serve now, or shutting down (Retry-After)
    │   └── OutOfMemory        503  the request does not fit in memory, even degraded
    ├── DeadlineExceeded       504  the request's deadline passed (queued or running)
    ├── WorkerCrashed          502  the worker died under the request and under its retry
    │                               (with quarantine_s = 0; otherwise InputQuarantined)
    └── ModelError             500  the model raised while running the request

Each error carries a ``message`` (what happened) and a ``suggestion`` (what to do next).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "WatchkeeperError",
    "ConfigError",
    "BadInput",
    "InvalidInput",
    "PayloadTooLarge",
    "Unauthenticated",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Cancelled",
    "InputQuarantined",
    "Overloaded",
    "Unavailable",
    "OutOfMemory",
    "DeadlineExceeded",
    "WorkerCrashed",
    "ModelError",
    "error_from_type",
]


class WatchkeeperError(Exception):
    """Base of every error watchkeeper reports to a client or an operator."""

    type: ClassVar[str] = "internal_error"
    default_suggestion: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        suggestion: str | None = None,
        retry_after_s: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion if suggestion is not None else self.default_suggestion
        self.retry_after_s = retry_after_s
        self.details = details or {}


class ConfigError(WatchkeeperError):
    """The configuration cannot be used; raised at start-up only."""

    type = "config_error"


class BadInput(WatchkeeperError):
    type = "bad_input"
    default_suggestion = 'Send JSON {"inputs": {...}, "params": {...}} or multipart form data.'


class InvalidInput(BadInput):
    type = "invalid_input"
    default_suggestion = "See GET /v1/models/{name} for the inputs and params the model takes."


class PayloadTooLarge(BadInput):
    type = "payload_too_large"
    default_suggestion = "Send a smaller body or image."


class Unauthenticated(WatchkeeperError):
    type = "unauthenticated"
    default_suggestion = "Send an API key: Authorization: Bearer KEY (or X-API-Key: KEY)."


class Forbidden(WatchkeeperError):
    type = "forbidden"
    default_suggestion = "Ask the operators for a key with the scope this route needs."


class NotFound(WatchkeeperError):
    type = "not_found"
    default_suggestion = "GET /v1/models lists the models served here."


class Conflict(WatchkeeperError):
    type = "conflict"
    default_suggestion = "GET the job to see its state."


class Cancelled(WatchkeeperError):
    type = "cancelled"
    default_suggestion = "Submit the job again to run it."


class InputQuarantined(WatchkeeperError):
    type = "input_quarantined"
    default_suggestion = "Do not retry this input; change it or report it to the model's owner."


class Overloaded(WatchkeeperError):
    type = "overloaded"
    default_suggestion = "Retry after the number of seconds in Retry-After."


class Unavailable(WatchkeeperError):
    type = "unavailable"
    default_suggestion = "Retry after the number of seconds in Retry-After; GET /health says why."


class OutOfMemory(Unavailable):
    type = "out_of_memory"
    default_suggestion = "Retry later, or with smaller params."


class DeadlineExceeded(WatchkeeperError):
    type = "deadline_exceeded"
    default_suggestion = "Raise X-Request-Timeout (up to the model's timeout_s) or send less work."


class WorkerCrashed(WatchkeeperError):
    type = "worker_crashed"
    default_suggestion = "Retry later; if it repeats, GET /health shows the workers' exit reasons."


class ModelError(WatchkeeperError):
    type = "model_error"
    default_suggestion = "The model raised an exception; the server logs have the traceback."


_BY_TYPE: dict[str, type[WatchkeeperError]] = {
    cls.type: cls
    for cls in (
        WatchkeeperError,
        ConfigError,
        BadInput,
        InvalidInput,
        PayloadTooLarge,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        Cancelled,
        InputQuarantined,
        Overloaded,
        Unavailable,
        OutOfMemory,
        DeadlineExceeded,
        WorkerCrashed,
        ModelError,
    )
}


def error_from_type(
    type_: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    suggestion: str | None = None,
) -> WatchkeeperError:
    """Rebuild an error a worker reported by its ``type`` string (unknown types: ModelError)."""
    cls = _BY_TYPE.get(type_, ModelError)
    return cls(message, details=details, suggestion=suggestion)
