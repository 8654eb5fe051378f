"""The HTTP routes of the front process: models, predict and admin (with the health routes of
``watchkeeper.http.health``, the job routes of ``watchkeeper.http.jobs`` and ``/ui`` of
``watchkeeper.http.ui_redirect``).

Runs in the front process on uvicorn's event loop. Handlers are thin: they read the
request, call the ``Runtime``/``ModelService`` and write JSON with orjson. Expected errors
(the ``watchkeeper.errors`` tree) become responses in ``http.errors``; anything else is a
bug and becomes a 500 in the same shape, in the request-id middleware (outermost).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from watchkeeper import errors
from watchkeeper.front.runtime import Runtime
from watchkeeper.http import openapi_docs as docs
from watchkeeper.http.errors import error_response
from watchkeeper.http.guard import Guard, GuardPolicy
from watchkeeper.http.health import add_health_routes
from watchkeeper.http.jobs import add_job_routes
from watchkeeper.http.predict import PredictFastPath, handle_predict
from watchkeeper.http.request_id import RequestIdMiddleware, request_id_of
from watchkeeper.http.responses import json_response
from watchkeeper.http.ui_redirect import add_ui_route

__all__ = ["create_app"]

log = logging.getLogger("watchkeeper.http")


def create_app(runtime: Runtime) -> ASGIApp:
    """The ASGI app; starting it (lifespan) starts the runtime's workers.

    Layers, outermost first: request ids and the last-resort 500, the guard (hosts, origins,
    keys and scopes, rates, security headers), the predict fast path, then FastAPI for every
    other route (and /docs).
    """

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
    add_health_routes(app, runtime)
    _add_model_routes(app, runtime)
    add_job_routes(app, runtime)
    add_ui_route(app, runtime)
    server = runtime.config.server
    policy = GuardPolicy.build(server.host, server.allowed_hosts, server.cors_origins, runtime.keys,
                               server.default_requests_per_s)
    return RequestIdMiddleware(Guard(PredictFastPath(app, runtime), policy))


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


def _add_model_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/v1/models", tags=["models"], summary="Every served model", **docs.MODELS)
    async def list_models() -> Response:
        return json_response({"models": [s.describe() for s in runtime.services.values()]})

    @app.get("/v1/models/{name}", tags=["models"], summary="One model: state, replicas, schemas",
             **docs.MODEL)
    async def get_model(name: str) -> Response:
        return json_response(runtime.service(name).describe())

    @app.post("/v1/models/{name}/predict", tags=["models"], summary="Run one request",
              response_model=None, **docs.PREDICT)
    async def predict(name: str, request: Request) -> Response:
        # Served by PredictFastPath before FastAPI sees it; declared here for /docs.
        return await handle_predict(runtime, name, request)

    @app.post("/admin/models/{name}/restart", tags=["admin"], status_code=202,
              summary="Replace every worker of a model; clears FAILED", **docs.RESTART)
    async def restart_model(name: str) -> Response:
        service = runtime.service(name)
        await service.restart()
        return json_response({"model": name, "state": service.state.value}, 202)
