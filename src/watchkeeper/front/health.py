"""How states add up to one health verdict: pure functions, used by the front process.

A model counts as serving when it is ``ready`` or ``degraded`` (some replicas are being
replaced, at least one is ready). ``/readyz`` needs every model serving; ``/health`` says
``ok``, ``degraded`` (serving, but something is off) or ``fail``; the HTTP layer
(``http.health``) turns these verdicts into status codes.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SERVING_STATES", "is_ready", "overall_status"]

SERVING_STATES = frozenset({"ready", "degraded"})


def is_ready(model_states: Mapping[str, str], shutting_down: bool = False,
             overloaded: bool = False) -> bool:
    """Every model has a ready replica, none is failed or unready, no queue is full."""
    return (not shutting_down and not overloaded
            and all(s in SERVING_STATES for s in model_states.values()))


def overall_status(
    model_states: Mapping[str, str], resource_status: str = "ok", shutting_down: bool = False,
    overloaded: bool = False,
) -> str:
    """``ok`` | ``degraded`` | ``fail`` from each model's state, the resource status and
    whether a queue is full (degraded: still serving, but a load balancer should look)."""
    if not is_ready(model_states, shutting_down) or resource_status == "critical":
        return "fail"
    busy = overloaded or resource_status == "warning"
    if busy or any(s != "ready" for s in model_states.values()):
        return "degraded"
    return "ok"
