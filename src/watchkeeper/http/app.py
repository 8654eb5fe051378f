"""The HTTP routes of the front process: models, predict, health, metrics, admin.

Runs in the front process on uvicorn's event loop. Handlers are thin: they read the
request, call the ``Runtime``/``ModelService`` and write JSON with orjson. Expected errors
(the ``watchkeeper.errors`` tree) become responses in ``http.errors``; anything else is a
bug and becomes a 500 in the same shape, in the request-id middleware (outermost).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from watchkeeper import errors, metrics
from watchkeeper.contract import Blob
from watchkeeper.http.bodies import parse_predict, parse_timeout, read_body
from watchkeeper.http.errors import error_response, status_of
from watchkeeper.http.request_id import RequestIdMiddleware, request_id_of
from watchkeeper.logs import log_event
from watchkeeper.runtime import Runtime

__all__ = ["create_app", "json_response"]

log = logging.getLogger("watchkeeper.http")

#: The ``model`` label of requests to a model that is not served (keeps label values bounded).
UNKNOWN_MODEL = "_unknown"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS


def _encode_extra(value: Any) -> Any:
    if isinstance(value, Blob):
        return base64.b64encode(value.data).decode("ascii")
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, default=_encode_extra, option=_JSON_OPTIONS),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def create_app(runtime: Runtime) -> FastAPI:
    """The ASGI app; starting it (lifespan) starts the runtime's workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="watchkeeper", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    _add_error_handlers(app)
    _add_health_routes(app, runtime)
    _add_model_routes(app, runtime)
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.WatchkeeperError)
    async def on_error(request: Request, exc: errors.WatchkeeperError) -> Response:
        return error_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        error = errors.InvalidInput(message, details={"errors": problems})
        return error_response(error, request_id_of(request))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        error: errors.WatchkeeperError
        if exc.status_code == 404:
            error = errors.NotFound(f"no route {request.method} {request.url.path}",
                                    suggestion="See /docs for the API.")
        else:
            error = errors.BadInput(str(exc.detail), suggestion="See /docs for the API.")
        response = error_response(error, request_id_of(request))
        response.status_code = exc.status_code
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response


def _add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/livez", tags=["health"], summary="The front process answers")
    async def livez() -> Response:
        return json_response({"status": "alive"})

    @app.get("/readyz", tags=["health"], summary="Every model has a ready replica")
    async def readyz() -> Response:
        ready, states, overloaded = runtime.ready()
        body = {"ready": ready, "models": states, "overloaded": overloaded}
        return json_response(body, 200 if ready else 503)

    @app.get("/health", tags=["health"], summary="Everything, as JSON (200 or 503)")
    async def health() -> Response:
        status, body = runtime.health()
        return json_response(body, status)

    @app.get("/health/simple", tags=["health"], summary="OK or FAIL, as text")
    async def health_simple() -> Response:
        status, _ = runtime.health()
        return PlainTextResponse("OK" if status == 200 else "FAIL", status)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics_endpoint() -> Response:
        for service in runtime.services.values():
            service.refresh_gauges()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


def _add_model_routes(app: FastAPI, runtime: Runtime) -> None:
    limit = int(runtime.config.server.max_body_mb * 1024 * 1024)

    @app.get("/v1/models", tags=["models"], summary="Every served model")
    async def list_models() -> Response:
        return json_response({"models": [s.describe() for s in runtime.services.values()]})

    @app.get("/v1/models/{name}", tags=["models"], summary="One model: state, replicas, schemas")
    async def get_model(name: str) -> Response:
        return json_response(runtime.service(name).describe())

    @app.post("/v1/models/{name}/predict", tags=["models"], summary="Run one request")
    async def predict(name: str, request: Request) -> Response:
        request_id = request_id_of(request)
        started = time.perf_counter()
        label = name if name in runtime.services else UNKNOWN_MODEL
        try:
            service = runtime.service(name)
            timeout_s = parse_timeout(request.headers.get("x-request-timeout"), service.config.timeout_s)
            body = await parse_predict(request, await read_body(request, limit))
            log_event(log, "request.start", request_id=request_id, model=name, params=body.params,
                      timeout_s=timeout_s)
            outcome = await service.predict(request_id, body.inputs, body.params, timeout_s)
        except errors.WatchkeeperError as exc:
            _record(label, status_of(exc), started)
            log_event(log, "request.error", logging.WARNING, request_id=request_id, model=name,
                      status=status_of(exc), error=exc.type, message=exc.message,
                      total_ms=_ms_since(started))
            raise
        total_ms = _ms_since(started)
        _record(name, 200, started)
        log_event(log, "request.end", request_id=request_id, model=name, status=200,
                  queue_ms=round(outcome.queue_ms, 2), inference_ms=round(outcome.infer_ms, 2),
                  total_ms=total_ms, worker_pid=outcome.worker_pid, attempts=outcome.runs)
        return json_response({
            "request_id": request_id,
            "model": name,
            "outputs": outcome.outputs,
            "timings": {"queue_ms": round(outcome.queue_ms, 3),
                        "inference_ms": round(outcome.infer_ms, 3), "total_ms": total_ms},
            "worker": {"pid": outcome.worker_pid, "attempts": outcome.runs},
        })

    @app.post("/admin/models/{name}/restart", tags=["admin"], status_code=202,
              summary="Replace every worker of a model; clears FAILED")
    async def restart_model(name: str) -> Response:
        service = runtime.service(name)
        await service.restart()
        return json_response({"model": name, "state": service.state.value}, 202)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _record(model: str, status: int, started: float) -> None:
    metrics.REQUESTS_TOTAL.labels(model, str(status)).inc()
    metrics.REQUEST_DURATION_SECONDS.labels(model).observe(time.perf_counter() - started)
