"""Outputs by the kind of their value, the degraded notice, the progress bar, and following a
job (events, then its video fetched by the UI) against a real tiny HTTP server."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from watchkeeper.ui import outputs
from watchkeeper.ui.api_client import ApiClient
from watchkeeper.ui.job_view import follow, progress_html
from watchkeeper.ui.outputs import decode_image, degraded_html, output_items, suffix_for


def png_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_outputs_by_kind() -> None:
    items = {i.field: i for i in output_items({
        "image": png_b64(), "label": {"label": "cat", "scores": {"cat": 0.9, "dog": 0.1}},
        "embedding": [0.1, 0.2], "text": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=", "n": 3})}
    assert items["image"].kind == "image" and Path(items["image"].value).read_bytes().startswith(b"\x89PNG")
    assert (items["label"].kind, items["label"].value) == ("label", {"cat": 0.9, "dog": 0.1})
    assert [items[k].kind for k in ("embedding", "text", "n")] == ["json", "json", "json"]
    assert decode_image("data:image/png;base64," + png_b64()) is not None
    assert decode_image("not base64 at all!!") is None
    assert suffix_for("video/mp4", "video") == ".mp4"


def test_outputs_that_are_a_label_with_scores() -> None:
    """entailment answers ``{"label": "yes", "scores": {"yes": ..., "no": ..., "maybe": ...}}``."""
    items = output_items({"label": "yes", "scores": {"yes": 0.8, "no": 0.15, "maybe": 0.05}})
    assert [(i.field, i.kind, i.value) for i in items] == [
        ("label", "label", {"yes": 0.8, "no": 0.15, "maybe": 0.05})]


def test_old_results_are_removed() -> None:
    old = outputs.scratch_file(".mp4")
    os.utime(old, (time.time() - outputs.RESULT_TTL_S - 10,) * 2)
    new = outputs.scratch_file(".mp4")
    assert outputs.prune_results(now=time.time() + 61) >= 1
    assert not old.exists() and new.exists()


def test_the_degraded_notice() -> None:
    shown = degraded_html({"from": {"resolution": "1024p", "frames": 24},
                           "to": {"resolution": "768p", "frames": 24},
                           "reason": "memory: needs 900 MB, 512 MB free"})
    assert shown == ('<div class="wk-degraded">ran at 768p instead of 1024p to fit in memory: '
                     "memory: needs 900 MB, 512 MB free</div>")
    assert degraded_html(None) == ""


def test_the_progress_bar() -> None:
    bar = progress_html("running", 0.42, "frame 12/24")
    assert '<progress value="0.420" max="1"></progress>' in bar
    assert '<span class="wk-step">frame 12/24</span>' in bar


JOB = {"id": "j1", "state": "running", "progress": 0.0, "message": "", "error": None, "degraded": None}
DONE = {**JOB, "state": "succeeded", "progress": 1.0, "message": "encoded",
        "degraded": {"from": {"frames": 24}, "to": {"frames": 16}, "reason": "memory"},
        "result": {"files": [{"name": "video", "media_type": "video/mp4", "size": 8,
                              "url": "/v1/jobs/j1/result"}], "outputs": {"frames": 16}}}
CALLS: list[str] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        CALLS.append(self.path)
        if self.path.endswith("/events"):
            body = (b'id: 1\nevent: progress\ndata: {"progress": 0.5, "message": "frame 8/16"}\n\n'
                    b'id: 2\nevent: state\ndata: {"state": "succeeded"}\n\n')
            kind = "text/event-stream"
        elif self.path.endswith("/result"):
            body, kind = b"fakemp4!", "video/mp4"
        else:
            body, kind = json.dumps(JOB if CALLS.count(self.path) == 1 else DONE).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def base() -> Iterator[str]:
    CALLS.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_following_a_job_to_its_video(base: str) -> None:
    views = list(follow(ApiClient(base), None, "j1"))
    assert 'value="0.000"' in views[0].progress and views[0].items == []
    assert '<span class="wk-step">frame 8/16</span>' in views[1].progress
    last = views[-1]
    assert last.done and 'value="1.000"' in last.progress and last.error == ""
    assert "ran at frames 16 instead of frames 24" in (last.degraded or "")
    kinds = {i.field: (i.kind, i.value) for i in last.items or []}
    assert kinds["video"][0] == "video" and Path(kinds["video"][1]).read_bytes() == b"fakemp4!"
    assert kinds["frames"] == ("json", 16)


def test_following_without_an_api_is_a_short_error() -> None:
    views = list(follow(ApiClient("http://127.0.0.1:9"), None, "j1"))
    assert len(views) == 1 and "did not answer" in (views[0].error or "")
