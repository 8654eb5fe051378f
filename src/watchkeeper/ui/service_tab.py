"""The Service tab: overall status, models and replicas, recent events and live plots.

Runs in the UI process, inside the tab that ``watchkeeper.ui.app`` opens (possibly from a
``gr.render``, so the tab may be built again for a page, e.g. when its models are reloaded).
Everything shown is read from the HTTP API (``GET /health`` and ``GET /metrics``, with the
page's key) by a ``gr.Timer`` every ``REFRESH_S``: one of each per refresh and per open
page, through one HTTP client shared by the process. Each page's
:class:`~watchkeeper.ui.service_feed.ServiceFeed` (its rolling window and the events it has
seen) is kept in :data:`PAGES` by Gradio session, so a rebuilt tab keeps its history; a
page that stops refreshing (closed) is forgotten after ``Pages.IDLE_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import httpx
import pandas as pd

from watchkeeper.ui.api_client import ApiClient
from watchkeeper.ui.service_feed import Problem, Reading, ServiceFeed, read_service
from watchkeeper.ui.service_render import CSS, error_html, events_html, models_html, status_html

__all__ = [
    "FIRST_REFRESH_S", "PAGES", "Pages", "REFRESH_S", "build_service_tab", "refresh"
]

#: Seconds between refreshes (the first comes at once).
REFRESH_S = 2.0
FIRST_REFRESH_S = 0.2
log = logging.getLogger(__name__)


@dataclass
class _Page:
    feed: ServiceFeed = field(default_factory=ServiceFeed)
    lock: threading.Lock = field(default_factory=threading.Lock)
    used: float = 0.0


class Pages:
    """The feeds of the pages open on this UI process, by Gradio session."""

    IDLE_S = 120.0

    def __init__(self) -> None:
        self._pages: dict[str, _Page] = {}
        self._lock = threading.Lock()

    def get(self, session: str | None, now: float) -> _Page:
        """The page of ``session`` (a new one the first time, or with no session); pages idle
        for ``IDLE_S`` are dropped."""
        with self._lock:
            for key in [k for k, p in self._pages.items() if now - p.used > self.IDLE_S]:
                del self._pages[key]
            page = self._pages.get(session) if session else None
            if page is None:
                page = _Page()
                if session:
                    self._pages[session] = page
            page.used = now
            return page

    def __len__(self) -> int:
        return len(self._pages)


PAGES = Pages()


def _plot(elem_id: str, title: str, y_title: str) -> gr.LinePlot:
    return gr.LinePlot(None, x="time", y="value", color="series", title=title, label=title,
                       show_label=False, x_title=" ", y_title=y_title, color_title="",
                       x_axis_format="%H:%M:%S", x_label_angle=-30, elem_id=elem_id, height=300,
                       min_width=280)


def _plot_update(frame: pd.DataFrame, empty: str) -> Any:
    """The plot's new value; none, with its label and a caption saying why, when there is
    nothing to draw (an empty frame draws a broken chart; the label clips the chart's legend).
    The y axis starts at 0 and spans at least 1 (a flat 0 line would have no scale)."""
    if frame.empty:  # the label says which plot it is (the title is drawn with the chart only)
        return gr.update(value=None, caption=empty, show_label=True)
    top = float(frame["value"].max())
    return gr.update(value=frame, caption="", show_label=False, y_lim=[0, max(1.0, top * 1.1)])


def _html(elem_id: str, value: str = "", visible: bool = True) -> gr.HTML:
    return gr.HTML(value, elem_id=elem_id, css_template=CSS, js_on_load=None, visible=visible)


def refresh(client: httpx.Client, api: str, key: Any, feed: ServiceFeed) -> tuple[Any, ...]:
    """One refresh of a page: read the service, fold it into ``feed``, render it (status,
    error, models, events, then the latency, queue and memory plots).

    Whatever happens, the page gets words: an unexpected error becomes a problem shown in
    ``service-error`` (its traceback goes to the UI's log, not to the page).
    """
    try:
        reading = read_service(client, api, key.strip() if isinstance(key, str) else "")
    except Exception as exc:  # never a traceback on the page
        log.exception("service tab: reading the API failed")
        reading = Reading(problem=Problem("answer", f"reading the API failed ({type(exc).__name__})"))
    try:
        feed.update(reading)
        now = time.time()
        window = feed.window
        error = error_html(feed.problem)
        return (status_html(feed, now), gr.update(value=error, visible=bool(error)), models_html(feed, now),
                events_html(feed),
                _plot_update(window.latency(), "No request answered in the last minutes."),
                _plot_update(window.queue(), "Not read yet."), _plot_update(window.memory(), "Not read yet."))
    except Exception as exc:  # an answer this page cannot show: say so, keep the rest as it is
        log.exception("service tab: showing the API's answer failed")
        error = error_html(Problem("answer", f"the API's answer could not be shown ({type(exc).__name__})"))
        return (gr.skip(), gr.update(value=error, visible=True), *(gr.skip() for _ in range(5)))


def build_service_tab(api: ApiClient, key: gr.BrowserState) -> None:
    """Lay out the Service tab's components and start its refresh timer.

    Called inside ``with gr.Tab("Service", ...)``; ``api`` calls the API and ``key``
    the page's API key ("" or None for none), sent as ``Authorization: Bearer KEY``.
    """
    status = _html("service-status", '<span class="wk-detail">reading the API…</span>')
    error = _html("service-error", visible=False)
    gr.Markdown("#### Models and replicas")
    models = _html("service-models")
    with gr.Row():
        latency = _plot("service-plot-latency", "Latency of the requests answered (p50, p95)", "ms")
        queue = _plot("service-plot-queue", "Queue depth", "requests waiting")
        memory = _plot("service-plot-memory", "Memory: device used, RSS per worker", "MiB")
    gr.Markdown("#### Recent events (newest first)")
    events = _html("service-events")
    started = gr.State(False)
    timer = gr.Timer(FIRST_REFRESH_S)

    def tick(key_value: Any, was_started: bool, request: gr.Request) -> tuple[Any, ...]:
        page = PAGES.get(getattr(request, "session_hash", None), time.time())
        with page.lock:
            shown = refresh(api.http, api.base, key_value, page.feed)
        return (*shown, True, gr.skip() if was_started else gr.Timer(REFRESH_S))

    timer.tick(tick, inputs=[key, started],
               outputs=[status, error, models, events, latency, queue, memory, started, timer],
               show_progress="hidden", concurrency_limit=None, trigger_mode="once")
