"""Following a job: its event stream as a progress bar, then its result, error or degradation.

Runs in the UI process. :func:`follow` reads ``GET /v1/jobs/{id}/events`` (resuming with
``Last-Event-ID`` when the stream ends early, as it does when the server shuts down) and
yields a :class:`JobView` at each event: the progress HTML (``<progress>`` and the step
message under it), then, at the final state, the job's outputs (video files fetched by the UI
process to temporary files), its error as the API gives it, or its degraded notice.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.ui.api_client import ApiClient, ApiError
from watchkeeper.ui.outputs import (
    OutputItem,
    as_dict,
    degraded_html,
    error_html,
    file_kind,
    output_items,
    scratch_file,
    suffix_for,
    ui_error,
)

__all__ = [
    "FINAL_STATES", "JobView", "MAX_RECONNECTS", "final_view", "follow", "progress_html",
    "result_items"
]

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: Reconnections to an event stream that ended before the job's final state.
MAX_RECONNECTS = 30


@dataclass
class JobView:
    """What the page shows of a job at one moment (``None``: leave that part as it is)."""

    progress: str
    error: str | None = None
    degraded: str | None = None
    items: list[OutputItem] | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def progress_html(state: str, progress: float, message: str) -> str:
    """The ``NAME-progress`` HTML: the bar, the step message under it, and the job's state."""
    value = min(1.0, max(0.0, float(progress or 0.0)))
    return (f'<div class="wk-progress" data-state="{html.escape(state)}">'
            f'<progress value="{value:.3f}" max="1"></progress>'
            f'<div><span class="wk-step">{html.escape(message or "")}</span> '
            f'<span class="wk-state">{html.escape(state)} · {value * 100:.0f}%</span></div></div>')


def result_items(api: ApiClient, key: str | None, job: dict[str, Any]) -> list[OutputItem]:
    """A finished job's outputs: its files fetched to temporary files, the rest by value."""
    result = as_dict(job.get("result"))
    items: list[OutputItem] = []
    for entry in result.get("files") or []:
        if not isinstance(entry, dict) or not entry.get("url"):
            continue
        media = str(entry.get("media_type") or "application/octet-stream")
        name = str(entry.get("name") or "file")
        dest = scratch_file(suffix_for(media, name))
        api.download(key, str(entry["url"]), dest)
        items.append(OutputItem(name, file_kind(media), str(dest)))
    items += output_items(as_dict(result.get("outputs")))
    return items


def final_view(api: ApiClient, key: str | None, job: dict[str, Any]) -> JobView:
    """The view of a job in its final state."""
    state = str(job.get("state") or "")
    bar = progress_html(state, float(job.get("progress") or 0.0), str(job.get("message") or ""))
    error = job.get("error")
    shown_error = ""
    if isinstance(error, dict):
        shown_error = error_html(ApiError(0, str(error.get("type") or state), str(error.get("message") or ""),
                                          str(error.get("suggestion") or "")))
    items = result_items(api, key, job) if state == "succeeded" else []
    return JobView(bar, shown_error, degraded_html(job.get("degraded")), items, done=True)


def follow(api: ApiClient, key: str | None, job_id: str) -> Iterator[JobView]:
    """Views of the job ``job_id`` as its events come, ending with its final view."""
    bar = progress_html("unknown", 0.0, "")
    try:
        job = api.job(key, job_id)
        yield JobView(progress_html(str(job.get("state")), float(job.get("progress") or 0.0),
                                    str(job.get("message") or "")), error="", degraded="", items=[])
        if job.get("state") in FINAL_STATES:
            yield final_view(api, key, job)
            return
        last: str | None = None
        state, progress, message = str(job.get("state")), 0.0, str(job.get("message") or "")
        floor = float(job.get("progress") or 0.0)  # the stream replays the job's past: skip it
        for _attempt in range(MAX_RECONNECTS):
            for event in api.events(key, job_id, last):
                last = event.id or last
                data = event.data
                if event.event == "progress":
                    progress = float(data.get("progress") or progress)
                    message = str(data.get("message") or message)
                elif event.event == "state":
                    state = str(data.get("state") or state)
                    if state in FINAL_STATES:
                        yield final_view(api, key, api.job(key, job_id))
                        return
                if progress >= floor:
                    bar = progress_html(state, progress, message)
                    yield JobView(bar)
            job = api.job(key, job_id)  # the stream ended early: the server may be stopping
            if job.get("state") in FINAL_STATES:
                yield final_view(api, key, job)
                return
            time.sleep(1.0)
        yield JobView(progress_html(state, progress, message),
                      error=error_html(ApiError(0, "ui_error", "lost the job's event stream",
                                                "Reload the page to follow the job again.")))
    except Exception as e:
        yield JobView(bar, error=error_html(ui_error(e)), done=True)  # the bar as last seen
