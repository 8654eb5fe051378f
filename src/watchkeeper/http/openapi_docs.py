"""What ``/openapi.json`` says each route can answer: the error shape, the statuses per kind of
route, the headers routes read, and the API key as security schemes. Documentation only.

Front process, at app construction. Each route decorator takes one ``**docs.<kind>`` (its
``responses=``, and for the routes that need a key, ``dependencies=`` with the two key schemes:
no-op dependencies, ``auto_error=False``, that only make FastAPI declare the schemes; the guard,
``http.guard``, checks the key). A route's statuses are the guard's and the connection layer's
(``http.connections``) plus its own; every error status has the one error shape of
``http.errors``. Who answers what:

- every route: 400 (a ``Host`` not served, or a request the parser refuses), 408 (head or
  body too slow), 431 (head too large), 500 (a bug: the last-resort answer);
- routes with a key (all but ``/livez``, ``/readyz``, ``/health/simple``): 401, 403 (scope, or
  a state-changing request from a foreign ``Origin``), 429 (the key's rate), and 503 (the
  server is shutting down or over ``max_connections``: only the probes are answered then).
"""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, Field
from starlette.responses import Response

__all__ = ["ErrorBody", "ErrorDetail", "HEALTH", "JOB", "JOB_EVENTS",
           "JOB_LIST", "JOB_RESULT", "JOB_SUBMIT", "METRICS", "MODEL", "MODELS", "OPEN_PROBE",
           "PREDICT", "READYZ", "RESTART", "SIMPLE_HEALTH"]


class ErrorDetail(BaseModel):
    """One error: what happened, what to do next, and the request id to find it in the log."""

    type: str = Field(description="The error's kind, e.g. not_found, overloaded.")
    message: str
    suggestion: str
    request_id: str
    details: dict[str, Any] | None = Field(None, description="Present when there is more to say.")


class ErrorBody(BaseModel):
    """The one shape of every error response."""

    error: ErrorDetail


_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer KEY`")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: KEY`")
#: Either scheme will do (OpenAPI: a list of alternatives).
_KEYED = [Security(_BEARER), Security(_API_KEY)]

_WHY = {
    400: "Bad request: a Host this server does not answer to, or a request it cannot parse",
    401: "No API key, or one that is unknown or revoked",
    403: "The key lacks the route's scope, or a web page on another origin",
    404: "Not found",
    408: "The request's head or body did not arrive in time",
    409: "Conflict",
    413: "The body (or a value count or image) is over the limit",
    422: "A field is missing, of the wrong type or out of bounds",
    429: "Over the key's request rate (Retry-After)",
    431: "The request's head is too large",
    500: "A bug: the server's log has it under the request id",
    502: "The worker died under the request and under its retry",
    503: "Shutting down, or over the connection limit (Retry-After)",
    504: "The request's deadline passed",
}


def _errors(own: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": own.get(status, _WHY[status])}
            for status in sorted(own)}


_EVERY = {400: _WHY[400], 408: _WHY[408], 431: _WHY[431], 500: _WHY[500]}
_WITH_KEY = {**_EVERY, 401: _WHY[401], 403: _WHY[403], 429: _WHY[429], 503: _WHY[503]}
#: FastAPI documents a 422 of its own shape on every route with parameters; ours (``app``'s
#: validation handler) has the one error shape. Routes whose parameters are all strings never
#: give it, but the entry must be ours.
_PARAMS = {422: "A parameter of the wrong type (not given by string-only parameters)"}
_NO_MODEL = {404: "No such model", **_PARAMS}
_NO_JOB = {404: "No such job (or not the caller's)", **_PARAMS}
_STORE = {503: "The job store cannot be used now, or shutting down (Retry-After)"}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
#: One server-sent event of a job (``http.jobs.sse_frame``); ``data`` is a JSON object.
_EVENT = {"type": "object", "required": ["id", "event", "data"],
          "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                         "data": {"type": "string", "contentMediaType": "application/json"}}}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
#: A route whose 200 is not JSON: ``response_class=Response`` (no media type) keeps FastAPI from
#: documenting its 200 as JSON, and its errors as anything but JSON; its 200 is in ``responses``.
_NOT_JSON: dict[str, Any] = {"response_class": Response}


def _keyed(own: dict[int, str], extra: dict[int | str, dict[str, Any]] | None = None,
           **more: Any) -> dict[str, Any]:
    return {"responses": {**_errors({**_WITH_KEY, **own}), **(extra or {})},
            "dependencies": _KEYED, **more}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["inputs"], "additionalProperties": False,
            "properties": {"inputs": {"type": "object"}, "params": {"type": "object"},
                           "allow_degrade": {"type": "boolean"}}}},
        "multipart/form-data": {"schema": {
            "type": "object", "description": "Files and fields are inputs; a `params` field "
                                             "holds the params as JSON."}},
    },
}

#: ``/livez``: no key.
OPEN_PROBE: dict[str, Any] = {"responses": _errors(_EVERY)}
#: ``/readyz``: 503 is the probe's own answer (not ready), in its own shape.
READYZ: dict[str, Any] = {"responses": {
    **_errors(_EVERY),
    503: {"description": "Not ready: a model has no ready replica or a full queue, or the "
                         "server is shutting down",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["ready", "models", "overloaded"]}}}}}}
#: ``/health/simple``: OK or FAIL, as text.
SIMPLE_HEALTH: dict[str, Any] = {"responses": {
    **_errors(_EVERY), 200: {"description": "OK", "content": _TEXT},
    503: {"description": "FAIL", "content": _TEXT}}, **_NOT_JSON}
#: ``/health``: 503 is the report (status fail), or the error shape while shutting down.
HEALTH: dict[str, Any] = _keyed({}, {503: {
    "description": "The report with status fail; or, shutting down, the error shape",
    "content": {"application/json": {"schema": {"anyOf": [
        {"type": "object", "required": ["status"]}, _ERROR_REF]}}}}})
METRICS: dict[str, Any] = _keyed({}, {200: {"description": "The Prometheus text format",
                                            "content": _TEXT}}, **_NOT_JSON)
MODELS: dict[str, Any] = _keyed({})
MODEL: dict[str, Any] = _keyed(_NO_MODEL)
#: Predict: the body and the model's own outcomes.
PREDICT: dict[str, Any] = _keyed(
    {**_NO_MODEL, 400: "A body or header that is not what predict takes",
     413: _WHY[413], 422: "An invalid field, or an input quarantined (it killed two workers)",
     429: "The model's queue is full, or over the key's rate (Retry-After)",
     500: "The model raised (or a bug)", 502: _WHY[502],
     503: "No replica can serve now (FAILED, out of memory), or shutting down (Retry-After)",
     504: _WHY[504]},
    openapi_extra={"requestBody": _PREDICT_BODY, "parameters": [
        _header("X-Request-Timeout", "Seconds to wait at most (lowers the model's timeout_s)")]})
JOB_SUBMIT: dict[str, Any] = _keyed(
    {**_NO_MODEL, 400: "A body or Idempotency-Key that is not what a job takes", 413: _WHY[413],
     422: _WHY[422], 409: "The Idempotency-Key was used for a different request",
     429: "Over the key's rate or job quota (Retry-After)",
     503: "The model is FAILED, the job store or its disk cannot take jobs, or shutting down"},
    openapi_extra={"requestBody": _PREDICT_BODY, "parameters": [
        _header("Idempotency-Key", "1 to 255 visible ASCII characters: a retry returns the same job")]})
JOB_LIST: dict[str, Any] = _keyed({422: "An unknown state, or a limit out of bounds", **_STORE})
JOB: dict[str, Any] = _keyed({**_NO_JOB, **_STORE})
#: The result: JSON outputs, or the file (any media type; Range requests give 206, a malformed
#: Range a text 400 and an unsatisfiable one a text 416: Starlette's ``FileResponse`` answers those).
JOB_RESULT: dict[str, Any] = _keyed(
    {**_NO_JOB, **_STORE, 409: "The job has no result (yet, or ever)"},
    {200: {"description": "The JSON outputs, or the result file",
           "content": {"application/json": {}, "*/*": {"schema": {"type": "string",
                                                                   "format": "binary"}}}},
     206: {"description": "Part of the result file (a Range request)",
           "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
     400: {"description": "A malformed Range (as text), or a Host not served (error shape)",
           "content": {"application/json": {"schema": _ERROR_REF}, **_TEXT}},
     416: {"description": "The Range is outside the file", "content": _TEXT}},
    openapi_extra={"parameters": [_header("Range", "Part of the file, e.g. bytes=0-1023")]},
    **_NOT_JSON)
JOB_EVENTS: dict[str, Any] = _keyed(
    {**_NO_JOB, 400: "A Last-Event-ID that is not an event id",
     503: "Too many event streams (on the job or in all; Retry-After), or shutting down"},
    {200: {"description": "The job's events, until its final one",
           "content": {"text/event-stream": {"itemSchema": _EVENT}}}},
    **_NOT_JSON,
    openapi_extra={"parameters": [_header("Last-Event-ID", "Resume after this event id")]})
RESTART: dict[str, Any] = _keyed(_NO_MODEL)
