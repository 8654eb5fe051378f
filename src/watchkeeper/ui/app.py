"""The page: the API key box, one tab per served model (built at page load), the Service tab.

Runs in the UI process. :func:`build_demo` makes the ``gr.Blocks``; the model tabs come from
``GET /v1/models`` in a ``gr.render`` run when the page loads (so a model configured later, or
one whose schema arrived after the UI started, gets its tab at the next load). The user's key
is kept in the browser (``gr.BrowserState``) and sent with every call. :func:`page_head` is the
page's script: it disables the radio choices out of the device's profile (Gradio has no
per-choice switch; the data comes from each tab's hidden ``NAME-disabled`` element, re-applied
whenever the page changes). The tab named by ``?model=`` in the URL is the one opened, and
its ``?job=`` is followed.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from watchkeeper.ui.api_client import ApiClient
from watchkeeper.ui.model_tab import build_model_tab
from watchkeeper.ui.outputs import error_html, ui_error
from watchkeeper.ui.service_tab import build_service_tab

__all__ = ["CONCURRENCY", "PAGE_SCRIPT", "PROGRESS_POLL_S", "QUEUE_POLL_S", "build_demo", "page_head",
           "quiet_queue"]

#: Threads of the UI process that may wait on the API at once (jobs being followed included).
CONCURRENCY = 64
#: Gradio's queue looks for a new event every 1 ms while it has none, and for progress every
#: 10 ms (its defaults off Windows): about 1,100 wake-ups a second in a UI nobody uses, each
#: taking a core from the API for a moment. These are the waits Gradio uses on Windows: a
#: click starts at most 50 ms later.
QUEUE_POLL_S = 0.05
PROGRESS_POLL_S = 0.1
log = logging.getLogger("watchkeeper.ui")

PAGE_SCRIPT = """
<script>
(function () {
  function applyDisabled() {
    document.querySelectorAll('.wk-disabled-data').forEach(function (el) {
      var model = el.getAttribute('data-model');
      var data = {};
      try { data = JSON.parse(el.getAttribute('data-disabled') || '{}'); } catch (e) { return; }
      var fields = Object.keys(data);
      fields.forEach(function (field) {
        var box = document.getElementById(model + '-param-' + field);
        if (!box) { return; }
        box.querySelectorAll('input[type=radio]').forEach(function (input) {
          var label = input.closest('label');
          var text = label ? label.textContent.trim() : '';
          var value = input.value in data[field] ? input.value : text;
          var off = value in data[field];
          if (input.disabled !== off) { input.disabled = off; }
          if (label) {
            label.classList.toggle('wk-off', off);
            if (off) { label.title = data[field][value]; } else if (label.title) { label.title = ''; }
          }
        });
      });
    });
  }
  var pending = false;
  function tick() {
    pending = false;
    applyDisabled();
  }
  function schedule() { if (!pending) { pending = true; window.requestAnimationFrame(tick); } }
  function start() {
    new MutationObserver(schedule).observe(document.body, {childList: true, subtree: true});
    window.setInterval(tick, 1000);
    schedule();
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', start); }
  else { start(); }
})();
</script>
<style>
.wk-hidden { display: none !important; }
label.wk-off { opacity: 0.45; cursor: not-allowed; text-decoration: line-through; }
.wk-error { border: 1px solid #d33; background: #fff0f0; color: #700; padding: 8px 12px; border-radius: 6px; }
.wk-error p { margin: 2px 0; }
.wk-degraded { border: 1px solid #c90; background: #fff8e0; color: #640; padding: 8px 12px; }
.wk-progress progress { width: 100%; height: 18px; }
.wk-step { font-family: monospace; }
.wk-state { color: #777; margin-left: 8px; }
</style>
"""


def page_head() -> str:
    """The ``<head>`` additions of the page: its script and styles."""
    return PAGE_SCRIPT


def _job_params(api: ApiClient, key: str | None, job_id: str) -> dict[str, Any]:
    """The params a job ran with (to show them again when the page reopens it); {} if unknown."""
    if not job_id:
        return {}
    try:
        params = api.job(key, job_id).get("params")
    except Exception:
        return {}
    return params if isinstance(params, dict) else {}


def build_demo(api_base: str) -> gr.Blocks:
    """The whole page, calling the API at ``api_base``."""
    api = ApiClient(api_base)
    with gr.Blocks(title="watchkeeper", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        with gr.Row():
            gr.Markdown("## watchkeeper")
            key_box = gr.Textbox(label="API key", type="password", elem_id="api-key", scale=3,
                                 placeholder="only where the server has keys configured")
            reload = gr.Button("Reload models", elem_id="reload-models", scale=1)
        key_state = gr.BrowserState("", storage_key="watchkeeper-api-key")
        key_box.change(lambda k: k, [key_box], [key_state], queue=False, show_progress="hidden")
        demo.load(lambda k: k, [key_state], [key_box], queue=False, show_progress="hidden")
        @gr.render(inputs=[key_state], triggers=[demo.load, reload.click])
        def _tabs(key: str | None, request: gr.Request) -> None:
            query: dict[str, Any] = dict(request.query_params) if request is not None else {}
            try:
                models, problem = api.models(key), None
            except Exception as e:
                models, problem = [], e
            names = [str(m.get("name")) for m in models]
            wanted = str(query.get("model") or "")
            first = f"tab-{names[0]}" if names else "tab-models" if problem is not None else "tab-service"
            selected = f"tab-{wanted}" if wanted in names else first  # a re-render must pick one too
            with gr.Tabs(elem_id="wk-tabs", selected=selected):
                if problem is not None:
                    with gr.Tab("Models", id="tab-models", elem_id="tab-models"):
                        gr.HTML(error_html(ui_error(problem)), elem_id="models-error")
                for name, model in zip(names, models, strict=True):
                    resume = str(query.get("job") or "") if wanted == name else ""
                    with gr.Tab(label=name, id=f"tab-{name}", elem_id=f"tab-{name}"):
                        build_model_tab(api, key_state, model, resume or None, _job_params(api, key, resume))
                with gr.Tab("Service", id="tab-service", elem_id="tab-service"):
                    build_service_tab(api, key_state)

    demo.queue(default_concurrency_limit=CONCURRENCY)
    quiet_queue(demo)
    return demo


def quiet_queue(demo: gr.Blocks) -> None:
    """Make the Gradio queue of ``demo`` poll every ``QUEUE_POLL_S`` / ``PROGRESS_POLL_S``.

    Gradio has no setting for these; a Gradio without the attributes gets a warning in the
    log (the UI still works, only busier), and ``tests/unit/ui`` fails on the pinned version.
    """
    queue = getattr(demo, "_queue", None)
    waits = (("sleep_when_free", QUEUE_POLL_S), ("progress_update_sleep_when_free", PROGRESS_POLL_S))
    for name, value in waits:
        if not hasattr(queue, name):
            log.warning("ui.queue_poll_unchanged: gradio's queue has no %s; it polls at its own rate", name)
            continue
        setattr(queue, name, value)
