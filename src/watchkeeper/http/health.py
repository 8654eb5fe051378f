"""The health routes: ``/livez``, ``/readyz``, ``/health``, ``/health/simple``, ``/metrics``.

Runs in the front process on uvicorn's event loop. The verdicts come from the runtime
(``front.runtime``, ``front.health``: assembled from cached state, so these answer fast however
busy the models are); the HTTP status of each verdict is chosen here. ``/health`` adds
``clients``: the client connections and job event streams open, and their limits.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import PlainTextResponse, Response

from watchkeeper.front import metrics
from watchkeeper.front.runtime import Runtime
from watchkeeper.http import openapi_docs as docs
from watchkeeper.http.connections import open_connections
from watchkeeper.http.responses import json_response

__all__ = ["NOT_READY", "READY", "add_health_routes", "clients_view", "health_status"]

#: A ready (or healthy) instance answers 200; one a load balancer should skip answers 503.
READY, NOT_READY = 200, 503


def health_status(verdict: str) -> int:
    """The HTTP status of a ``/health`` verdict: ``fail`` is 503; ``ok`` and ``degraded`` 200."""
    return NOT_READY if verdict == "fail" else READY


def clients_view(runtime: Runtime) -> dict[str, Any]:
    """``/health``'s ``clients``: open connections and event streams, and their limits."""
    server, jobs = runtime.config.server, runtime.config.jobs
    return {
        "connections": {"open": open_connections(), "max": server.max_connections},
        "event_streams": {"open": runtime.jobs.changes.streams, "max": jobs.max_streams,
                          "max_per_job": jobs.max_streams_per_job},
    }


def add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/livez", tags=["health"], summary="The front process answers", **docs.OPEN_PROBE)
    async def livez() -> Response:
        return json_response({"status": "alive"})

    @app.get("/readyz", tags=["health"], summary="Every model has a ready replica", **docs.READYZ)
    async def readyz() -> Response:
        ready, states, overloaded = runtime.ready()
        body = {"ready": ready, "models": states, "overloaded": overloaded}
        return json_response(body, READY if ready else NOT_READY)

    @app.get("/health", tags=["health"], summary="Everything, as JSON (200 or 503)",
             **docs.HEALTH)
    async def health() -> Response:
        body = runtime.health()
        body["clients"] = clients_view(runtime)
        return json_response(body, health_status(body["status"]))

    @app.get("/health/simple", tags=["health"], summary="OK or FAIL, as text",
             **docs.SIMPLE_HEALTH)
    async def health_simple() -> Response:
        status = health_status(runtime.health()["status"])
        return PlainTextResponse("OK" if status == READY else "FAIL", status)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", **docs.METRICS)
    async def metrics_endpoint() -> Response:
        for service in runtime.services.values():
            service.refresh_gauges()
        metrics.set_connections(open_connections())
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
