"""A model tab's pure parts: the request built from the widgets, the data the page script reads,
and the job a page follows."""

from __future__ import annotations

import html
import json

import pytest
from PIL import Image

from tests.unit.ui.test_forms import IMAGE_INPUTS, IMG2VIDEO_PARAMS, IMG2VIDEO_PROFILE
from watchkeeper.ui import forms
from watchkeeper.ui.model_tab import disabled_data, following, request_parts


def test_the_request_from_the_widgets() -> None:
    inputs, params = forms.field_specs(IMAGE_INPUTS), forms.field_specs(IMG2VIDEO_PARAMS)
    image = Image.new("RGB", (8, 6), (1, 2, 3))
    ins, pars, files = request_parts(inputs, params, [image, "768p", 24.0, 8, "pan_left"])
    assert ins == {}
    assert pars == {"resolution": "768p", "frames": 24, "fps": 8, "motion": "pan_left"}
    assert files["image"].startswith(b"\x89PNG")
    with pytest.raises(forms.FormError, match="upload an image first"):
        request_parts(inputs, params, [None, "768p", 24, 8, "zoom_in"])


def test_the_page_scripts_data() -> None:
    specs = forms.field_specs(IMG2VIDEO_PARAMS)
    shown = disabled_data("img2video", specs, forms.limit_notes(specs, IMG2VIDEO_PROFILE))
    assert 'class="wk-disabled-data" data-model="img2video"' in shown
    payload = shown.split('data-disabled="', 1)[1].split('"', 1)[0]
    assert json.loads(html.unescape(payload)) == {
        "resolution": {"1024p": "1024p needs the 40 GB profile; this device has 25.3 GB"}}


class FakeRequest:
    session_hash = "s1"


def test_a_page_follows_one_job_per_model() -> None:
    request = FakeRequest()
    assert following(request, "m") == ""  # type: ignore[arg-type]
    following(request, "m", "j1")  # type: ignore[arg-type]
    following(request, "m", "j2")  # type: ignore[arg-type]
    assert following(request, "m") == "j2"  # type: ignore[arg-type]
    assert following(request, "other") == ""  # type: ignore[arg-type]


def test_the_page_scripts_data_disables_a_choice_not_allowed_with_the_others() -> None:
    from tests.unit.ui.test_forms import published_at

    specs, profile = published_at(40)
    notes = forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 32})
    element = disabled_data("img2video", specs, notes)
    payload = json.loads(html.unescape(element.split('data-disabled="')[1].split('"')[0]))
    assert sorted(payload["resolution"]) == ["1024p", "768p"]
    assert "frames = 32" in payload["resolution"]["1024p"]
