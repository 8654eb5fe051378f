"""What a model's answer looks like on the page: each output field by the kind of its value.

Runs in the UI process. Outputs have no schema, so each value is judged by itself: a dict with
``label`` and ``scores`` is a label with scores, a base64 string that decodes to a PNG, JPEG,
GIF or WebP is an image (written to a temporary file for the page), a job's result file is a
video when its media type is ``video/*`` (else a file), and anything else is shown as JSON.
Also the HTML of the error box and of the degraded notice.
"""

from __future__ import annotations

import base64
import binascii
import html
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from watchkeeper.ui.api_client import ApiError

__all__ = [
    "IMAGE_MAGIC", "OutputItem", "OutputKind", "RESULT_DIR", "RESULT_TTL_S", "as_dict",
    "decode_image", "degraded_html", "error_html", "file_kind", "image_suffix", "label_value",
    "output_items", "prune_results", "scratch_file", "suffix_for", "ui_error"
]

OutputKind = Literal["image", "video", "label", "file", "json"]
#: Leading bytes of the image formats shown as images.
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif"}
RESULT_DIR = Path(tempfile.gettempdir()) / "watchkeeper-ui"
#: Results older than this are removed from RESULT_DIR (Gradio serves its own copies).
RESULT_TTL_S = 3600.0
_last_prune = [0.0]


@dataclass
class OutputItem:
    """One output field: its kind and what the page component shows (a path, a dict, JSON)."""

    field: str
    kind: OutputKind
    value: Any


def image_suffix(data: bytes) -> str | None:
    """``.png``/``.jpg``/``.gif``/``.webp`` when ``data`` starts like that image format."""
    for magic, suffix in IMAGE_MAGIC.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def decode_image(value: str) -> tuple[bytes, str] | None:
    """The bytes and suffix of a base64 image (a ``data:`` prefix allowed), else ``None``."""
    if not isinstance(value, str) or len(value) < 16:
        return None
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        head = base64.b64decode(text[:64] + "=" * (-len(text[:64]) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if image_suffix(head) is None:
        return None
    try:
        data = base64.b64decode(text)
    except (binascii.Error, ValueError):
        return None
    suffix = image_suffix(data)
    return (data, suffix) if suffix else None


def scratch_file(suffix: str) -> Path:
    """A new temporary file for a result (under the system's temp dir, which Gradio serves)."""
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    prune_results()
    handle = tempfile.NamedTemporaryFile(dir=RESULT_DIR, suffix=suffix, delete=False)
    handle.close()
    return Path(handle.name)


def prune_results(now: float | None = None) -> int:
    """Remove result files older than RESULT_TTL_S (at most once a minute); how many went."""
    now = time.time() if now is None else now
    if now - _last_prune[0] < 60.0:
        return 0
    _last_prune[0] = now
    removed = 0
    for path in RESULT_DIR.glob("*"):
        try:
            if now - path.stat().st_mtime > RESULT_TTL_S:
                path.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or another UI process's
    return removed


def label_value(value: Any) -> dict[str, float] | None:
    """A ``gr.Label`` value from ``{"label": ..., "scores": {...}}``, else ``None``."""
    if not (isinstance(value, dict) and "label" in value and "scores" in value):
        return None
    scores = value["scores"]
    if isinstance(scores, dict) and all(isinstance(v, (int, float)) for v in scores.values()):
        return {str(k): float(v) for k, v in scores.items()}
    return {str(value["label"]): 1.0}


def output_items(outputs: dict[str, Any]) -> list[OutputItem]:
    """The page's view of a predict answer's ``outputs`` (or a job's JSON outputs).

    Outputs that are themselves ``{"label": ..., "scores": {...}}`` (entailment's) are one
    label, shown as the field ``label``.
    """
    items: list[OutputItem] = []
    whole = label_value(outputs)
    if whole is not None and isinstance(outputs.get("scores"), dict):
        items.append(OutputItem("label", "label", whole))
        outputs = {k: v for k, v in outputs.items() if k not in ("label", "scores")}
    for field, value in outputs.items():
        image = decode_image(value) if isinstance(value, str) else None
        label = label_value(value)
        if image is not None:
            path = scratch_file(image[1])
            path.write_bytes(image[0])
            items.append(OutputItem(field, "image", str(path)))
        elif label is not None:
            items.append(OutputItem(field, "label", label))
        else:
            items.append(OutputItem(field, "json", value))
    return items


def file_kind(media_type: str) -> OutputKind:
    """How a job's result file is shown, from its media type."""
    if media_type.startswith("video/"):
        return "video"
    if media_type.startswith("image/"):
        return "image"
    return "file"


def suffix_for(media_type: str, name: str) -> str:
    """A file suffix for a result of this media type (``video/mp4`` -> ``.mp4``)."""
    sub = media_type.split("/", 1)[-1].split(";", 1)[0].strip()
    known = {"mp4": ".mp4", "webm": ".webm", "png": ".png", "jpeg": ".jpg", "gif": ".gif",
             "webp": ".webp", "json": ".json", "quicktime": ".mov"}
    return known.get(sub, Path(name).suffix or ".bin")


def error_html(error: ApiError | None) -> str:
    """The ``NAME-error`` box: the API's message, its suggestion, and the retry time."""
    if error is None:
        return ""
    head = f"{error.status} {error.type}" if error.status else error.type
    parts = [f'<p class="wk-message"><b>{html.escape(head)}</b>: {html.escape(error.message)}</p>']
    if error.suggestion:
        parts.append(f'<p class="wk-suggestion">{html.escape(error.suggestion)}</p>')
    if error.retry_after is not None and error.status in (429, 503):
        parts.append(f'<p class="wk-retry">retry in {error.retry_after:g} s</p>')
    return f'<div class="wk-error">{"".join(parts)}</div>'


def ui_error(e: BaseException) -> ApiError:
    """A short error for a failure inside the UI (never a traceback)."""
    if isinstance(e, ApiError):
        return e
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return ApiError(0, "ui_error", text, "Try again; if it repeats, reload the page.")


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


def _shown(key: str, value: Any) -> str:
    return str(value) if isinstance(value, str) else f"{key.replace('_', ' ')} {value}"


def degraded_html(degraded: Any) -> str:
    """The ``NAME-degraded`` notice: "ran at 768p instead of 1024p to fit in memory: <reason>"."""
    if not isinstance(degraded, dict):
        return ""
    asked: dict[str, Any] = as_dict(degraded.get("from"))
    ran: dict[str, Any] = as_dict(degraded.get("to"))
    changed = [k for k in ran if asked.get(k) != ran.get(k)]
    now = ", ".join(_shown(k, ran[k]) for k in changed) or "smaller params"
    before = ", ".join(_shown(k, asked.get(k)) for k in changed) or "the params asked for"
    reason = html.escape(str(degraded.get("reason") or ""))
    return (f'<div class="wk-degraded">ran at {html.escape(now)} instead of {html.escape(before)} '
            f'to fit in memory: {reason}</div>')
