"""The Service tab's events: what changed between two readings of ``/health`` and ``/metrics``.

Runs in the UI process (a client of the HTTP API). The API keeps no event log for clients,
so the page derives one from what it reads every refresh: a replica's ``restarts`` going up
(with its pid change, its ``last_exit`` and the restart reasons counted meanwhile in
``watchkeeper_worker_restarts_total``: kills, OOMs, crashes), a pid replaced without a
restart (a recycle), model state and overall status changes (degradations), deep probe
failures, quarantined inputs, template deaths, degraded answers and requests refused by the
service (out of memory, deadlines). The first reading of a page also reports what it finds
already wrong (restarts so far, a failing probe, a model not ready), so a page opened just
after a kill still shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watchkeeper.ui.service_metrics import MetricsSnapshot, Pairs, increases

__all__ = [
    "BAD_STATES", "Changes", "Event", "Health", "KILL_REASONS", "SERVICE_ERRORS", "first_events"
]

#: Restart reasons (``watchkeeper_worker_restarts_total``) that mean watchkeeper killed it.
KILL_REASONS = frozenset({"deadline", "heartbeat", "probe", "operator", "cancel", "load_timeout"})
#: Request errors worth an event: the service's refusals, not the clients' bad requests.
SERVICE_ERRORS = ("out_of_memory", "deadline_exceeded", "worker_crashed", "unavailable",
                  "overloaded", "model_error", "internal_error", "input_quarantined")
#: Model states that are not serving fully.
BAD_STATES = frozenset({"degraded", "recovering", "unready", "failed", "starting", "stopping"})

Health = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One line of the events list. ``kind`` (a CSS class): ``crash``, ``kill``, ``oom`` (a
    worker's exit), ``restart``, ``recycle``, ``degraded``, ``recovered`` (states),
    ``degradation`` (answers), ``probe``, ``quarantine``, ``template``, ``errors``, ``api``."""

    at: float
    kind: str
    model: str | None
    text: str


def _models(health: Health | None) -> dict[str, dict[str, Any]]:
    models = (health or {}).get("models")
    if not isinstance(models, dict):
        return {}
    return {str(k): v for k, v in models.items() if isinstance(v, dict)}


def _replicas(model: dict[str, Any]) -> dict[int, dict[str, Any]]:
    found = model.get("replicas")
    if not isinstance(found, list):
        return {}
    return {r["index"] if isinstance(r.get("index"), int) else i: r
            for i, r in enumerate(found) if isinstance(r, dict)}


def _exit_kind(last_exit: str) -> str:
    """``oom``, ``kill`` (watchkeeper killed it) or ``crash``, from the exit's own words
    (``signal SIGKILL, killed: deadline``)."""
    return "oom" if "killed: oom" in last_exit else "kill" if "killed:" in last_exit else "crash"


def _counted_kind(reasons: dict[str, float]) -> str:
    """The kind of a line of restart reasons: ``oom`` if any, ``kill`` if all are kills."""
    if "oom" in reasons:
        return "oom"
    return "kill" if all(r in KILL_REASONS for r in reasons) else "restart"


def _by_model(pairs: Pairs, model: str) -> dict[str, float]:
    return {label: n for (m, label), n in pairs.items() if m == model}


def _count_text(counts: dict[str, float]) -> str:
    return ", ".join(f"{label} ×{n:g}" for label, n in sorted(counts.items()))


def _replica_events(name: str, old: dict[str, Any], new: dict[str, Any], now: float,
                    reasons: dict[str, float], recycles: dict[str, float]) -> list[Event]:
    """A replica's exit (``last_exit_at`` changed), restart (``restarts`` up) or replacement
    (pid changed alone: a recycle); an exit and its restart seen together make one event.
    The restart reasons counted meanwhile go with the exit when there is one, else on a line
    of their own."""
    exits, others = [], []
    before, after = _replicas(old), _replicas(new)
    for index, rep in after.items():
        prev = before.get(index)
        if prev is None:
            continue
        grown = int(rep.get("restarts") or 0) - int(prev.get("restarts") or 0)
        times = f" {grown} times" if grown > 1 else ""
        pid_old, pid_new = prev.get("pid"), rep.get("pid")
        pids = f" (pid {pid_old} → {pid_new})" if pid_new is not None and pid_new != pid_old else ""
        at = rep.get("last_exit_at")
        if isinstance(at, int | float) and at != prev.get("last_exit_at"):
            last_exit = str(rep.get("last_exit") or "")
            back = f", restarted{times}{pids}" if grown > 0 and pids else ""
            exits.append(Event(float(at), _exit_kind(last_exit), name,
                               f"replica {index} exited: {last_exit or 'unknown'}{back}"))
        elif grown > 0:
            others.append(Event(now, "restart", name, f"replica {index} restarted{times}{pids}"))
        elif pids and pid_old is not None:
            cause = f": recycled, {_count_text(recycles)}" if recycles else ""
            others.append(Event(now, "recycle", name, f"replica {index} replaced{pids}{cause}"))
    if reasons and len(exits) == 1:
        only = exits[0]
        exits[0] = Event(only.at, only.kind, name, f"{only.text}; counted as {_count_text(reasons)}")
    elif reasons and exits:
        others.append(Event(now, _counted_kind(reasons), name,
                            f"worker restarts counted: {_count_text(reasons)}"))
    return exits + others


def _probe_event(name: str, old: dict[str, Any] | None, new: dict[str, Any],
                 now: float) -> Event | None:
    probe, prev = new.get("probe"), (old or {}).get("probe")
    if not isinstance(probe, dict) or (isinstance(prev, dict) and prev.get("at") == probe.get("at")):
        return None
    at = float(probe["at"]) if isinstance(probe.get("at"), int | float) else now
    if probe.get("ok") is False:
        return Event(at, "probe", name, f"deep probe failed: {probe.get('error') or 'no answer'}")
    if isinstance(prev, dict) and prev.get("ok") is False:
        return Event(at, "recovered", name, "deep probe passed again")
    return None


def _model_events(name: str, old: dict[str, Any], new: dict[str, Any], now: float,
                  reasons: dict[str, float], recycles: dict[str, float]) -> list[Event]:
    events = _replica_events(name, old, new, now, reasons, recycles)
    state, prev_state = new.get("state"), old.get("state")
    if state != prev_state:
        reason = f" ({new['reason']})" if new.get("reason") else ""
        kind = "degraded" if state in BAD_STATES else "recovered"
        events.append(Event(now, kind, name, f"state {prev_state} → {state}{reason}"))
    probe = _probe_event(name, old, new, now)
    if probe is not None:
        events.append(probe)
    quarantined = int(new.get("quarantined_inputs") or 0)
    if quarantined > int(old.get("quarantined_inputs") or 0):
        events.append(Event(now, "quarantine", name,
                            f"an input was quarantined ({quarantined} refused now)"))
    tpl, prev_tpl = new.get("template"), old.get("template")
    if isinstance(tpl, dict) and isinstance(prev_tpl, dict):
        deaths = int(tpl.get("deaths") or 0) - int(prev_tpl.get("deaths") or 0)
        if deaths > 0:
            why = f": {tpl['error']}" if tpl.get("error") else ""
            events.append(Event(now, "template", name, f"template died (pid {prev_tpl.get('pid')}){why}"))
    return events


def _metric_events(name: str, new: MetricsSnapshot, old: MetricsSnapshot, now: float) -> list[Event]:
    events = []
    degraded = _by_model(increases(new.degradations, old.degradations), name)
    if degraded:
        events.append(Event(now, "degradation", name,
                            f"answers degraded to fit in memory: {_count_text(degraded)}"))
    errors = _by_model(increases(new.errors, old.errors), name)
    shown = {e: n for e, n in errors.items() if e in SERVICE_ERRORS}
    if shown:
        kind = "oom" if "out_of_memory" in shown else "errors"
        events.append(Event(now, kind, name, f"requests refused: {_count_text(shown)}"))
    return events


def first_events(health: Health | None, now: float) -> list[Event]:
    """What a page's first reading finds already wrong (restarts since the server started,
    a failing probe, a model not ready, a non-``ok`` status)."""
    events = []
    status = (health or {}).get("status")
    if status not in (None, "ok"):
        events.append(Event(now, "degraded", None, f"service status is {status}"))
    for name, model in _models(health).items():
        for index, rep in _replicas(model).items():
            restarts = int(rep.get("restarts") or 0)
            if restarts > 0:
                last_exit = str(rep.get("last_exit") or "unknown")
                at = rep.get("last_exit_at")
                when = float(at) if isinstance(at, int | float) else now
                times = "once" if restarts == 1 else f"{restarts} times"
                text = (f"replica {index} has restarted {times} since the server started;"
                        f" last exit: {last_exit}")
                events.append(Event(when, _exit_kind(last_exit), name, text))
        if model.get("state") in BAD_STATES:
            reason = f" ({model['reason']})" if model.get("reason") else ""
            events.append(Event(now, "degraded", name, f"state is {model.get('state')}{reason}"))
        probe = _probe_event(name, None, model, now)
        if probe is not None:
            events.append(probe)
    return events


class Changes:
    """Turns successive readings into events; one per page (it holds the last readings).

    The restart counter and ``/health`` are read by two requests, so a worker's exit may show
    in one a refresh before the other: restart reasons wait up to ``PENDING_S`` for the exit
    they explain, and are reported alone after that (a template's failed load has none).
    """

    PENDING_S = 5.0

    def __init__(self) -> None:
        self.health: Health | None = None
        self.metrics: MetricsSnapshot | None = None
        #: model -> (first seen, restart reason -> count) not yet attached to an exit.
        self.pending: dict[str, tuple[float, dict[str, float]]] = {}

    def update(self, health: Health | None, metrics: MetricsSnapshot | None, now: float) -> list[Event]:
        """The events since the last readings; a missing reading keeps the one before it."""
        events: list[Event] = []
        if health is not None and self.health is None:
            events += first_events(health, now)
        if metrics is not None and self.metrics is not None:
            for (model, reason), n in increases(metrics.restarts, self.metrics.restarts).items():
                since, counts = self.pending.setdefault(model, (now, {}))
                counts[reason] = counts.get(reason, 0.0) + n
        if health is not None and self.health is not None:
            recycles = (increases(metrics.recycles, self.metrics.recycles)
                        if metrics is not None and self.metrics is not None else {})
            events += self._health_events(self.health, health, now, recycles)
        if metrics is not None and self.metrics is not None:
            names = {m for m, _ in metrics.degradations} | {m for m, _ in metrics.errors}
            for name in sorted(names):
                events += _metric_events(name, metrics, self.metrics, now)
        for model, (since, counts) in list(self.pending.items()):
            if now - since >= self.PENDING_S:
                del self.pending[model]
                events.append(Event(since, _counted_kind(counts), model,
                                    f"worker restarts counted: {_count_text(counts)}"))
        self.health = health if health is not None else self.health
        self.metrics = metrics if metrics is not None else self.metrics
        return events

    def _health_events(self, old: Health, new: Health, now: float, recycles: Pairs) -> list[Event]:
        events = []
        if new.get("status") != old.get("status"):
            kind = "recovered" if new.get("status") == "ok" else "degraded"
            events.append(Event(now, kind, None, f"service status {old.get('status')} → {new.get('status')}"))
        old_models = _models(old)
        for name, model in _models(new).items():
            if name not in old_models:
                continue
            reasons = self.pending.get(name, (now, {}))[1]
            found = _model_events(name, old_models[name], model, now, reasons, _by_model(recycles, name))
            if any(e.kind in ("crash", "kill", "oom") for e in found):
                self.pending.pop(name, None)
            events += found
        return events
