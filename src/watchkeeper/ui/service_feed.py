"""The Service tab's feed: one ``GET /health`` and one ``GET /metrics`` per refresh, and a
page's state built from them (the rolling window, the events seen, the last readings).

Runs in the UI process (a client of the HTTP API, like any other). A refresh costs the API
two GETs answered from state it already holds; both have short timeouts, so a hung API
shows as unreachable within seconds instead of piling up refreshes. What can go wrong is a
:class:`Problem` the page shows in words: no answer, a refused key (401/403 with the API's
message and suggestion), an answer that is not the expected format. Never a traceback.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from watchkeeper.ui.service_events import Changes, Event
from watchkeeper.ui.service_metrics import MetricsSnapshot, parse_metrics
from watchkeeper.ui.service_window import Window, sample_of

__all__ = ["MAX_EVENTS", "Problem", "Reading", "ServiceFeed", "TIMEOUT", "read_service"]

#: Per request: the API answers both routes from memory, so a slow answer is a sick API.
TIMEOUT = httpx.Timeout(3.0, connect=2.0)
#: Events a page keeps (newest first when shown).
MAX_EVENTS = 200


@dataclass(frozen=True)
class Problem:
    """Why a refresh could not read the service: ``kind`` is ``unreachable``, ``auth``
    (401/403) or ``answer`` (an unexpected status or body)."""

    kind: str
    message: str
    suggestion: str = ""
    status: int | None = None

    @property
    def word(self) -> str:
        """The status word shown in its place: unreachable, unauthorized, forbidden, error."""
        if self.kind == "auth":
            return "forbidden" if self.status == 403 else "unauthorized"
        return "unreachable" if self.kind == "unreachable" else "error"


@dataclass
class Reading:
    """What one refresh read: either reading may be missing, with the problem why."""

    health: dict[str, Any] | None = None
    metrics: MetricsSnapshot | None = None
    problem: Problem | None = None


def _api_error(answer: httpx.Response, route: str) -> Problem:
    """The API's own error (message and suggestion), or the status when the body is not one."""
    message, suggestion = f"GET {route} answered {answer.status_code}", ""
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        suggestion = str(error.get("suggestion") or "")
    kind = "auth" if answer.status_code in (401, 403) else "answer"
    return Problem(kind, message, suggestion, answer.status_code)


def _get(client: httpx.Client, api: str, route: str, key: str) -> httpx.Response | Problem:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return client.get(api.rstrip("/") + route, headers=headers, timeout=TIMEOUT)
    except httpx.TimeoutException:
        return Problem("unreachable", f"the API at {api} did not answer GET {route} within "
                       f"{TIMEOUT.read:g} s", "It may be overloaded or hung; see its logs.")
    except httpx.HTTPError as exc:
        why = str(exc) or type(exc).__name__
        return Problem("unreachable", f"the API at {api} cannot be reached ({why})",
                       "Check that `watchkeeper serve` runs and that the UI's --api address is right.")


def read_service(client: httpx.Client, api: str, key: str) -> Reading:
    """One refresh's readings: ``/health`` (200, or 503 when its status is ``fail``: both are
    reports) then ``/metrics``; a problem with ``/health`` skips ``/metrics``."""
    answer = _get(client, api, "/health", key)
    if isinstance(answer, Problem):
        return Reading(problem=answer)
    if answer.status_code not in (200, 503):
        return Reading(problem=_api_error(answer, "/health"))
    try:
        health = answer.json()
    except ValueError:
        health = None
    if not isinstance(health, dict) or "status" not in health:
        return Reading(problem=_api_error(answer, "/health"))
    answer = _get(client, api, "/metrics", key)
    if isinstance(answer, Problem):
        return Reading(health=health, problem=answer)
    if answer.status_code != 200:
        return Reading(health=health, problem=_api_error(answer, "/metrics"))
    try:
        return Reading(health=health, metrics=parse_metrics(answer.text))
    except (ValueError, KeyError, TypeError) as exc:
        return Reading(health=health, problem=Problem(
            "answer", f"GET /metrics is not in the Prometheus text format ({exc})"))


@dataclass
class ServiceFeed:
    """One page's view of the service, refreshed by :meth:`update` (kept in its ``gr.State``)."""

    window: Window = field(default_factory=Window)
    changes: Changes = field(default_factory=Changes)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    #: The last readings that succeeded, and when (the UI's clock).
    health: dict[str, Any] | None = None
    health_at: float | None = None
    #: When the last refresh was folded in.
    updated_at: float | None = None
    problem: Problem | None = None
    #: The last metrics read, for the latency of the requests answered since.
    last_metrics: MetricsSnapshot | None = None

    def update(self, reading: Reading, now: float | None = None) -> None:
        """Fold one refresh's readings in: events, a window sample, the problem if any."""
        now = time.time() if now is None else now
        self.updated_at = now
        found = self.changes.update(reading.health, reading.metrics, now)
        old, new = self.problem, reading.problem
        if new is not None and (old is None or old.kind != new.kind or old.message != new.message):
            found.append(Event(now, "api", None, f"{new.word}: {new.message}"))
        elif new is None and old is not None:
            found.append(Event(now, "recovered", None, "the API answers again"))
        self.problem = new
        for event in sorted(found, key=lambda e: e.at):
            self.events.append(event)
        if reading.health is not None:
            self.health, self.health_at = reading.health, now
        if reading.health is not None or reading.metrics is not None:
            self.window.add(sample_of(now, reading.health, reading.metrics, self.last_metrics))
        if reading.metrics is not None:
            self.last_metrics = reading.metrics

    def recent(self) -> list[Event]:
        """The events kept, newest first."""
        return sorted(self.events, key=lambda e: e.at, reverse=True)
