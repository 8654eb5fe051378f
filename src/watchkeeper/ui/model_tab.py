"""One model's tab: its inputs and params as widgets, a Run button, and what came back.

Runs in the UI process. Built inside the page's ``gr.render`` from the model's description
(``GET /v1/models``): the widgets come from ``watchkeeper.ui.forms``; a model that reports
progress runs as a job (progress bar, Cancel, the job id in the page's URL) and the others by
``predict``. Every handler catches everything: the page shows the API's error (or a short
message of its own), never a traceback.
"""

from __future__ import annotations

import html
import io
import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import gradio as gr

from watchkeeper.ui import forms
from watchkeeper.ui.api_client import ApiClient
from watchkeeper.ui.job_view import JobView, follow, progress_html
from watchkeeper.ui.outputs import OutputItem, degraded_html, error_html, output_items, ui_error

__all__ = [
    "MAX_FOLLOWED", "URL_JS", "build_model_tab", "disabled_data", "following", "request_parts",
    "widget"
]

#: Puts the job id in the page's URL (``?model=NAME&job=ID``) without reloading.
URL_JS = """(job) => { const u = new URL(window.location.href);
  if (job) { u.searchParams.set('model', %s); u.searchParams.set('job', job); }
  window.history.replaceState(null, '', u.toString()); return job; }"""


def widget(model: str, role: str, spec: forms.FieldSpec) -> Any:
    """The Gradio component of one field (``role``: ``input`` or ``param``)."""
    common: dict[str, Any] = {"label": spec.label, "info": spec.info or None,
                              "elem_id": f"{model}-{role}-{spec.name}", "interactive": True}
    if spec.kind == "image":
        return gr.Image(type="pil", sources=["upload", "clipboard"], label=spec.label,
                        elem_id=common["elem_id"], height=260, interactive=True)
    if spec.kind == "slider":
        return gr.Slider(minimum=spec.minimum or 0, maximum=spec.maximum or 0, value=spec.default,
                         step=spec.step, **common)
    if spec.kind == "number":
        return gr.Number(value=spec.default, minimum=spec.minimum, maximum=spec.maximum,
                         precision=0 if spec.integer else None, **common)
    if spec.kind == "radio":
        return gr.Radio(choices=[(str(c), c) for c in spec.choices], value=spec.default, **common)
    if spec.kind == "checkbox":
        return gr.Checkbox(value=bool(spec.default), **common)
    if spec.kind == "text":
        return gr.Textbox(value=spec.default, max_length=spec.max_length, **common)
    text = "" if spec.default is None else json.dumps(spec.default)
    return gr.Code(value=text, language="json", **{k: v for k, v in common.items() if k != "info"})


def disabled_data(model: str, specs: list[forms.FieldSpec], notes: list[forms.Note]) -> str:
    """The hidden element the page script reads: field -> {disabled value: its note}."""
    by_field: dict[str, dict[str, str]] = {}
    for note in notes:
        spec = next((s for s in specs if s.name == note.field), None)
        if spec is not None and note.value in spec.choices:
            by_field.setdefault(note.field, {})[str(note.value)] = note.text
    payload = html.escape(json.dumps(by_field), quote=True)
    return f'<div class="wk-disabled-data" data-model="{html.escape(model)}" data-disabled="{payload}"></div>'


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def request_parts(inputs: list[forms.FieldSpec], params: list[forms.FieldSpec],
                  raws: list[Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """inputs, params and image files (PNG) from the widgets' values, in ``inputs + params`` order."""
    input_raws, param_raws = raws[:len(inputs)], raws[len(inputs):]
    files: dict[str, bytes] = {}
    for spec, raw in zip(inputs, input_raws, strict=True):
        if spec.kind == "image":
            if raw is None and spec.required:
                raise forms.FormError(f"{spec.label}: upload an image first")
            if raw is not None:
                files[spec.name] = _png(raw)
    return forms.collect(inputs, input_raws), forms.collect(params, param_raws), files


def build_model_tab(api: ApiClient, key_state: gr.BrowserState, model: dict[str, Any],
                    resume_job: str | None = None, values: dict[str, Any] | None = None) -> None:
    """The contents of ``model``'s tab (called inside its ``gr.Tab``); ``values``: params to show
    instead of the defaults (those of the job the page reopens)."""
    name = str(model.get("name"))
    replicas = model.get("replicas") or {}
    gr.Markdown(f"**{name}** · state `{model.get('state')}` · replicas "
                f"{replicas.get('ready', '?')}/{replicas.get('configured', '?')}"
                + (" · runs as a job" if model.get("reports_progress") else ""),
                elem_id=f"{name}-state")
    if model.get("inputs_schema") is None:
        gr.Markdown("This model has not published its schema yet (no worker has been ready). "
                    "Reload the page in a moment.")
        return
    inputs = forms.field_specs(model.get("inputs_schema"))
    params = forms.field_specs(model.get("params_schema"))
    for spec in params:
        if values and spec.name in values and values[spec.name] is not None:
            spec.default = values[spec.name]
    profile = model.get("profile") if isinstance(model.get("profile"), dict) else None
    notes = forms.limit_notes(params, profile, values)
    with gr.Row():
        with gr.Column():
            input_widgets = [widget(name, "input", s) for s in inputs]
            param_widgets = [widget(name, "param", s) for s in params]
            limits = gr.Markdown(forms.limits_markdown(notes), elem_id=f"{name}-limits")
            data = gr.HTML(disabled_data(name, params, notes), elem_id=f"{name}-disabled",
                           elem_classes=["wk-hidden"])
            run = gr.Button("Run", variant="primary", elem_id=f"{name}-run")
        with gr.Column():
            job = _job_widgets(name, resume_job) if model.get("reports_progress") else None
            error = gr.HTML("", elem_id=f"{name}-error")
            degraded = gr.HTML("", elem_id=f"{name}-degraded")
            result = gr.State([])
            _outputs_area(name, result)
    all_widgets = input_widgets + param_widgets

    def recheck(*raws: Any) -> tuple[str, str]:
        try:
            values = {s.name: forms.to_value(s, r) for s, r in zip(params, raws, strict=True)}
        except Exception:
            return gr.skip(), gr.skip()
        current = forms.limit_notes(params, profile, values)
        return forms.limits_markdown(current), disabled_data(name, params, current)

    for w in param_widgets:
        w.change(recheck, param_widgets, [limits, data], show_progress="hidden", queue=False)
    if job is not None:
        _job_controls(api, key_state, name, (inputs, params), all_widgets, run, job,
                      [job[1], error, degraded, result], resume_job)
        return

    def predict(key: str | None, *raws: Any) -> tuple[str, str, list[OutputItem]]:
        try:
            ins, pars, files = request_parts(inputs, params, list(raws))
            answer = api.predict(key, name, ins, pars, files)
            outputs = answer.get("outputs")
            return "", degraded_html(answer.get("degraded")), output_items(
                outputs if isinstance(outputs, dict) else {})
        except Exception as e:
            return error_html(ui_error(e)), "", []

    run.click(predict, [key_state, *all_widgets], [error, degraded, result], concurrency_limit=None)


def _outputs_area(name: str, result: gr.State) -> None:
    @gr.render(inputs=[result])
    def _outputs(items: list[OutputItem]) -> None:
        for item in items or []:
            elem_id = f"{name}-output-{item.field}"
            if item.kind == "image":
                gr.Image(value=item.value, label=item.field, elem_id=elem_id, interactive=False)
            elif item.kind == "video":
                gr.Video(value=item.value, label=item.field, elem_id=elem_id, interactive=False,
                         autoplay=True, loop=True)
            elif item.kind == "label":
                gr.Label(value=item.value, label=item.field, elem_id=elem_id)
            elif item.kind == "file":
                gr.File(value=item.value, label=item.field, elem_id=elem_id, interactive=False)
            elif isinstance(item.value, (dict, list)):
                gr.JSON(value=item.value, label=item.field, elem_id=elem_id)
            else:  # a number, a string, true/false or null: one line
                gr.Textbox(value=json.dumps(item.value), label=item.field, elem_id=elem_id,
                           interactive=False, elem_classes=["wk-scalar"])


#: (page session, model) -> the job the page follows; a watch stops when another job is run.
_FOLLOWED: OrderedDict[tuple[str, str], str] = OrderedDict()
MAX_FOLLOWED = 10000


def following(request: gr.Request | None, model: str, job_id: str | None = None) -> str:
    """The job this page follows for ``model`` (set it when ``job_id`` is given); "" for none."""
    session = str(getattr(request, "session_hash", "") or "")
    key = (session, model)
    if job_id is not None:
        _FOLLOWED[key] = job_id
        _FOLLOWED.move_to_end(key)
        while len(_FOLLOWED) > MAX_FOLLOWED:
            _FOLLOWED.popitem(last=False)
    return _FOLLOWED.get(key, "")


def _job_widgets(name: str, resume_job: str | None) -> tuple[gr.Textbox, gr.HTML, gr.Button]:
    """The job id, the progress bar and the Cancel button of a model run as jobs."""
    with gr.Row():
        job_box = gr.Textbox(resume_job or "", label="Job id", interactive=False, elem_id=f"{name}-job",
                             scale=4)
        cancel = gr.Button("Cancel", variant="stop", elem_id=f"{name}-cancel", scale=1)
    progress = gr.HTML(progress_html("resuming" if resume_job else "idle", 0.0, ""),
                       elem_id=f"{name}-progress")
    return job_box, progress, cancel


def _job_controls(api: ApiClient, key_state: gr.BrowserState, name: str,
                  specs: tuple[list[forms.FieldSpec], list[forms.FieldSpec]], widgets: list[Any],
                  run: gr.Button, job: tuple[gr.Textbox, gr.HTML, gr.Button], outputs: list[Any],
                  resume_job: str | None) -> None:
    """Run as a job: submit, put its id in the URL, follow its events; Cancel; resume on load."""
    inputs, params = specs
    job_box, _progress, cancel = job
    error, degraded = outputs[1], outputs[2]

    def shown(view: JobView) -> tuple[Any, ...]:
        return (view.progress, gr.skip() if view.error is None else view.error,
                gr.skip() if view.degraded is None else view.degraded,
                gr.skip() if view.items is None else view.items)

    def submit(request: gr.Request, key: str | None, *raws: Any) -> tuple[str, str, str]:
        try:
            ins, pars, files = request_parts(inputs, params, list(raws))
            job_id = str(api.submit(key, name, ins, pars, files).get("id") or "")
            following(request, name, job_id)
            return job_id, "", ""
        except Exception as e:
            return "", error_html(ui_error(e)), ""

    def watch(request: gr.Request, key: str | None, job_id: str) -> Iterator[tuple[Any, ...]]:
        if not job_id or following(request, name) not in ("", job_id):
            yield (gr.skip(),) * len(outputs)
            return
        following(request, name, job_id)
        for view in follow(api, key, job_id):
            if following(request, name) != job_id:
                return  # the page ran another job since: that one's watch shows it
            yield shown(view)

    def cancel_job(key: str | None, job_id: str) -> str:
        if not job_id:
            return gr.skip()
        try:
            api.cancel(key, job_id)
            return gr.skip()
        except Exception as e:
            return error_html(ui_error(e))

    quoted = json.dumps(name)
    run.click(submit, [key_state, *widgets], [job_box, error, degraded], concurrency_limit=None) \
        .then(None, [job_box], [job_box], js=URL_JS % quoted) \
        .then(watch, [key_state, job_box], outputs, concurrency_limit=None, trigger_mode="multiple",
              show_progress="hidden")
    cancel.click(cancel_job, [key_state, job_box], [error], concurrency_limit=None)
    if resume_job:  # the page was opened with ?model=NAME&job=ID: follow that job at once
        timer = gr.Timer(0.3)
        timer.tick(lambda: gr.Timer(active=False), None, [timer]) \
            .then(watch, [key_state, job_box], outputs, concurrency_limit=None, show_progress="hidden")

