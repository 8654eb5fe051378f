"""``POST /v1/models/{name}/predict``: the hot path, served in front of FastAPI.

Front process only. :class:`PredictFastPath` answers predict requests directly as ASGI,
skipping FastAPI's routing and middleware stack (about half of the front's time per
request); every other request passes through to FastAPI, where the same
:func:`handle_predict` is also declared so it appears in ``/docs``.

Per request: read the body (size-limited), parse JSON or multipart (a large body in the
body thread, ``http.bodies``), queue it with the model's service, wait for the answer until
the deadline, log one line (``request.end`` or ``request.error``, with the params, cut to a
few hundred bytes by ``logs``; ``request.start`` too at the debug level), count it in the
metrics. An error's body is made for the caller (``http.errors.public_error``: a model's
exception text only for ``admin``; the log line has it whole). Slow or oversized request
heads and bodies are cut off before this, per connection (``http.connections``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from watchkeeper import errors
from watchkeeper.front import metrics
from watchkeeper.front.runtime import Runtime
from watchkeeper.http.bodies import body_limit, parse_predict, parse_timeout, read_body
from watchkeeper.http.errors import error_response, status_of
from watchkeeper.http.guard import principal_of
from watchkeeper.http.request_id import request_id_of
from watchkeeper.http.responses import json_response
from watchkeeper.logs import log_event

__all__ = ["PredictFastPath", "UNKNOWN_MODEL", "handle_predict", "predict_target", "warning_header"]

log = logging.getLogger("watchkeeper.http")

#: The ``model`` label of requests to a model that is not served (keeps label values bounded).
UNKNOWN_MODEL = "_unknown"
_PREFIX, _SUFFIX = "/v1/models/", "/predict"


def predict_target(path: str) -> str | None:
    """The model name of a predict path, or None for any other path."""
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if name and "/" not in name:
            return name
    return None


class PredictFastPath:
    """Serve predict requests directly; hand everything else to ``app``."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            name = predict_target(scope["path"])
            if name is not None:
                response = await handle_predict(self.runtime, name, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def handle_predict(runtime: Runtime, name: str, request: Request) -> Response:
    """Run one predict request; every outcome is a response (errors in the one shape)."""
    request_id = request_id_of(request)
    started = time.perf_counter()
    params: dict[str, Any] | None = None
    timeout_s: float | None = None
    try:
        service = runtime.service(name)
        timeout_s = parse_timeout(request.headers.get("x-request-timeout"), service.config.timeout_s)
        server = runtime.config.server
        raw = await read_body(request, body_limit(server.max_body_mb))
        body = await parse_predict(request, raw, server.max_json_values)
        params = body.params
        log_event(log, "request.start", logging.DEBUG, request_id=request_id, model=name,
                  params=params, timeout_s=timeout_s)
        outcome = await service.predict(request_id, body.inputs, params, timeout_s,
                                        body.allow_degrade)
    except errors.WatchkeeperError as exc:
        status = status_of(exc)
        label = name if name in runtime.services else UNKNOWN_MODEL
        metrics.requests_of(label).answered(status, time.perf_counter() - started, exc.type)
        log_event(log, "request.error", logging.WARNING, request_id=request_id, model=name,
                  status=status, error=exc.type, message=exc.message, total_ms=_ms_since(started),
                  params=params, timeout_s=timeout_s)
        return error_response(exc, request_id, principal_of(request.scope))
    total_ms = _ms_since(started)
    service.requests.answered(200, total_ms / 1000)
    log_event(log, "request.end", request_id=request_id, model=name, status=200,
              queue_ms=round(outcome.queue_ms, 2), inference_ms=round(outcome.infer_ms, 2),
              total_ms=total_ms, worker_pid=outcome.worker_pid, attempts=outcome.runs,
              params=params, timeout_s=timeout_s, degraded=outcome.degraded)
    body_out: dict[str, Any] = {
        "request_id": request_id,
        "model": name,
        "outputs": outcome.outputs,
        "timings": {"queue_ms": round(outcome.queue_ms, 3),
                    "inference_ms": round(outcome.infer_ms, 3), "total_ms": total_ms},
        "worker": {"pid": outcome.worker_pid, "attempts": outcome.runs},
    }
    headers = None
    if outcome.degraded is not None:
        body_out["degraded"] = outcome.degraded
        headers = {"Warning": warning_header(outcome.degraded)}
    return json_response(body_out, headers=headers)


def warning_header(degraded: dict[str, Any]) -> str:
    """RFC 7234 style: ``299 watchkeeper "degraded: resolution 2048 -> 1536 (memory: ...)"``."""
    before, after = degraded["from"], degraded["to"]
    changes = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in after.items() if before.get(k) != v)
    text = f"degraded: {changes} ({degraded['reason']})".replace('"', "'")
    return f'299 watchkeeper "{text.encode("ascii", "replace").decode()}"'


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
