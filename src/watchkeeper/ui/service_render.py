"""The Service tab's HTML: the status word, the models and replicas tables, the events list,
the error box. Pure functions of a :class:`~watchkeeper.ui.service_feed.ServiceFeed`.

Runs in the UI process. Every value from the API (model names, reasons, exit descriptions,
probe errors) is escaped with :func:`html.escape`, attributes included, so a model name or a
message holding markup shows as text. Times are the UI's local clock; ages of what the API
timestamps (a probe, an exit) are taken against the report's own ``checked_at``, so a clock
difference between the API's host and the UI's does not skew them.
"""

from __future__ import annotations

import html
import time
from typing import Any

from watchkeeper.ui.service_feed import Problem, ServiceFeed

__all__ = [
    "CSS", "SHOWN_EVENTS", "ago", "clock", "error_html", "esc", "events_html", "models_html",
    "size", "status_html"
]

#: Events shown (the newest); the feed keeps more.
SHOWN_EVENTS = 60
#: Shared by the tab's HTML blocks (scoped to each by Gradio); no backticks nor ``${`` here.
CSS = """
table { border-collapse: collapse; width: 100%; margin: 0.3em 0 0.8em; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--border-color-primary); padding: 0.25em 0.5em; text-align: left;
         vertical-align: top; }
th { font-weight: 600; }
.wk-status { font-weight: 700; font-size: 1.3em; padding: 0.1em 0.5em; border-radius: 0.3em; }
.wk-good { color: #fff; background: #1a7f37; }
.wk-warn { color: #000; background: #e3b341; }
.wk-bad { color: #fff; background: #cf222e; }
.wk-detail, .wk-age, .wk-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
.wk-events { list-style: none; padding: 0; margin: 0; max-height: 22em; overflow-y: auto; }
.wk-event { padding: 0.15em 0; border-bottom: 1px solid var(--border-color-primary); }
.wk-event time { font-family: monospace; margin-right: 0.5em; }
.wk-kind { display: inline-block; min-width: 7.5em; font-weight: 600; }
.wk-event-crash .wk-kind, .wk-event-oom .wk-kind, .wk-event-kill .wk-kind,
.wk-event-api .wk-kind, .wk-event-probe .wk-kind { color: #cf222e; }
.wk-event-degraded .wk-kind, .wk-event-degradation .wk-kind, .wk-event-quarantine .wk-kind,
.wk-event-template .wk-kind, .wk-event-errors .wk-kind { color: #9a6700; }
.wk-event-recovered .wk-kind, .wk-event-restart .wk-kind { color: #1a7f37; }
.wk-error { border: 1px solid #cf222e; border-radius: 0.3em; padding: 0.5em 0.8em; }
.wk-suggestion { display: block; margin-top: 0.2em; }
"""
_GOOD = {"ok", "ready", "passed"}
_WARN = {"degraded", "recovering", "starting", "busy", "stopping", "skipped"}


def esc(value: Any) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _tone(word: str) -> str:
    return "wk-good" if word in _GOOD else "wk-warn" if word in _WARN else "wk-bad"


def clock(t: float) -> str:
    """``t`` (Unix seconds) as the UI's local time of day."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def ago(seconds: float) -> str:
    """A short age: ``4 s ago``, ``3 min ago``, ``2 h ago``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def size(n: Any) -> str:
    """Bytes as B, KiB, MiB or GiB; '' when not a number."""
    if not isinstance(n, int | float):
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _age_of(at: Any, health: dict[str, Any], read_at: float, now: float) -> str:
    checked = health.get("checked_at")
    if not isinstance(at, int | float) or not isinstance(checked, int | float):
        return ""
    return ago(checked - at + (now - read_at))


def status_html(feed: ServiceFeed, now: float) -> str:
    """The overall status word (``ok``, ``degraded``, ``fail``, or why the API was not read)
    and, in smaller print, the server's uptime and when it was read."""
    word = feed.problem.word if feed.problem is not None and (
        feed.problem.kind != "answer" or feed.health is None) else None
    health = feed.health or {}
    word = word or str(health.get("status") or "unknown")
    detail = []
    if isinstance(health.get("uptime_s"), int | float):
        detail.append(f"up {ago(health['uptime_s']).removesuffix(' ago')}")
    if health.get("shutting_down"):
        detail.append("shutting down")
    if feed.health_at is not None:
        detail.append(f"read at {clock(feed.health_at)}")
    return (f'<span class="wk-status {_tone(word)}">{esc(word)}</span> '
            f'<span class="wk-detail">{esc(" · ".join(detail))}</span>')


def error_html(problem: Problem | None) -> str:
    """The error box: the API's message and suggestion; '' when the last refresh went well."""
    if problem is None:
        return ""
    titles = {"auth": f"The API refused the key ({problem.status})",
              "unreachable": "The API does not answer"}
    title = titles.get(problem.kind, "The API's answer was not understood")
    hint = (" Enter an API key with the <code>read</code> scope in the API key box at the top."
            if problem.kind == "auth" else "")
    suggestion = f'<span class="wk-suggestion">{esc(problem.suggestion)}{hint}</span>'
    return (f'<div class="wk-error" data-kind="{esc(problem.kind)}"><strong>{esc(title)}</strong>: '
            f"{esc(problem.message)}{suggestion}</div>")


def _probe(model: dict[str, Any], health: dict[str, Any], read_at: float, now: float) -> str:
    probe = model.get("probe")
    if not isinstance(probe, dict):
        return "none yet"
    age = _age_of(probe.get("at"), health, read_at, now)
    if probe.get("skipped"):
        result = f"skipped ({probe['skipped']})"
    elif probe.get("ok"):
        ms = probe.get("latency_ms")
        result = f"passed in {ms:g} ms" if isinstance(ms, int | float) else "passed"
    else:
        result = f"failed: {probe.get('error') or 'no answer'}"
    return f'{esc(result)} <span class="wk-age">{esc(age)}</span>'


def _memory(model: dict[str, Any]) -> str:
    lines = []
    for ledger in model.get("memory") or []:
        if isinstance(ledger, dict):
            lines.append(f"{esc(ledger.get('device'))}: {esc(size(ledger.get('reserved_bytes')))} reserved"
                         f" of {esc(size(ledger.get('budget_bytes')))}")
    return "<br>".join(lines) or '<span class="wk-note">no worker ready yet</span>'


def _model_row(name: str, model: dict[str, Any], health: dict[str, Any], read_at: float, now: float) -> str:
    state = str(model.get("state") or "unknown")
    reason = f'<br><span class="wk-note">{esc(model["reason"])}</span>' if model.get("reason") else ""
    found = model.get("replicas")
    replicas = found if isinstance(found, list) else []
    queue = f"{esc(model.get('queue_depth'))}" + (" (full)" if model.get("overloaded") else "")
    return (f'<tr class="wk-model" data-model="{esc(name)}"><td class="name">{esc(name)}</td>'
            f'<td class="state"><span class="{_tone(state)}">{esc(state)}</span>{reason}</td>'
            f'<td class="ready">{esc(model.get("ready_replicas"))}/{len(replicas)}</td>'
            f'<td class="queue">{queue}</td><td class="in-flight">{esc(model.get("in_flight"))}</td>'
            f'<td class="probe">{_probe(model, health, read_at, now)}</td>'
            f'<td class="quarantined">{esc(model.get("quarantined_inputs"))}</td>'
            f'<td class="memory">{_memory(model)}</td></tr>')


def _replica_row(name: str, rep: dict[str, Any], health: dict[str, Any], read_at: float, now: float) -> str:
    index = rep.get("index")
    last_exit = rep.get("last_exit")
    exit_cell = (f'{esc(last_exit)} <span class="wk-age">'
                 f'{esc(_age_of(rep.get("last_exit_at"), health, read_at, now))}</span>'
                 if last_exit else "—")
    error = rep.get("last_load_error")
    if error:
        exit_cell += f'<br><span class="wk-note">load error: {esc(error)}</span>'
    state = str(rep.get("state") or "")
    return (f'<tr class="wk-replica" data-model="{esc(name)}" data-replica="{esc(index)}">'
            f'<td class="model">{esc(name)}</td><td class="index">{esc(index)}</td>'
            f'<td class="pid">{esc(rep.get("pid") if rep.get("pid") is not None else "—")}</td>'
            f'<td class="state"><span class="{_tone(state)}">{esc(state)}</span></td>'
            f'<td class="restarts">{esc(rep.get("restarts"))}</td>'
            f'<td class="last-exit">{exit_cell}</td>'
            f'<td class="rss">{esc(size(rep.get("rss_bytes")))}</td></tr>')


def _resources(health: dict[str, Any]) -> str:
    found = health.get("resources")
    res: dict[str, Any] = found if isinstance(found, dict) else {}
    parts = []
    mem = res.get("memory")
    if isinstance(mem, dict):
        parts.append(f"RAM {size(mem.get('used_bytes'))} used of {size(mem.get('total_bytes'))}"
                     f" ({mem.get('percent')} %)")
    for gpu in res.get("gpus") or []:
        if isinstance(gpu, dict):
            label = gpu.get("device", gpu.get("index", gpu.get("name", "gpu")))
            parts.append(f"{label}: {size(gpu.get('used_bytes'))} used of {size(gpu.get('total_bytes'))}")
    for disk in res.get("disks") or []:
        if isinstance(disk, dict):
            parts.append(f"disk {disk.get('path')} {disk.get('percent_used')} % used")
    parts += [str(r) for r in res.get("reasons") or []]
    return f'<p class="wk-resources wk-note">{esc(" · ".join(parts))}</p>' if parts else ""


def models_html(feed: ServiceFeed, now: float) -> str:
    """Per model: state, ready replicas, queue, in flight, last probe, quarantined inputs and
    memory per device; then one row per replica; then the machine's resources."""
    health = feed.health
    if health is None or feed.health_at is None:
        return '<p class="wk-note">Not read yet.</p>'
    read_at = feed.health_at
    found = health.get("models")
    models: dict[str, Any] = found if isinstance(found, dict) else {}
    rows, replica_rows = [], []
    for name, model in models.items():
        if not isinstance(model, dict):
            continue
        rows.append(_model_row(name, model, health, read_at, now))
        for rep in model.get("replicas") or []:
            if isinstance(rep, dict):
                replica_rows.append(_replica_row(name, rep, health, read_at, now))
    stale = (f'<p class="wk-note">As read at {esc(clock(read_at))}; the API has not answered since.</p>'
             if feed.updated_at is not None and read_at < feed.updated_at else "")
    return (f'{stale}<table class="wk-models"><thead><tr><th>model</th><th>state</th><th>ready</th>'
            "<th>queue</th><th>in flight</th><th>last probe</th><th>quarantined</th>"
            f"<th>memory (per device)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            '<table class="wk-replicas"><thead><tr><th>model</th><th>replica</th><th>pid</th>'
            "<th>state</th><th>restarts</th><th>last exit</th><th>RSS</th></tr></thead>"
            f"<tbody>{''.join(replica_rows)}</tbody></table>{_resources(health)}")


def events_html(feed: ServiceFeed) -> str:
    """The recent events, newest first, with their local time."""
    events = feed.recent()[:SHOWN_EVENTS]
    if not events:
        return '<p class="wk-note">Nothing has happened since this page opened.</p>'
    items = "".join(
        f'<li class="wk-event wk-event-{esc(e.kind)}"><time>{esc(clock(e.at))}</time>'
        f'<span class="wk-kind">{esc(e.kind)}</span> '
        + (f'<strong class="wk-model">{esc(e.model)}</strong> ' if e.model else "")
        + f"{esc(e.text)}</li>"
        for e in events)
    return f'<ol class="wk-events">{items}</ol>'
