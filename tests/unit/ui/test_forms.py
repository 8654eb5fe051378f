"""From published schemas to form fields: widgets, bounds, defaults, and the profile's limits.

The schemas are those a real server publishes (``GET /v1/models`` of ``watchkeeper serve`` with
cartoon, img2video and chaos, on a machine of 25.3 GB: img2video's 24 GB profile), trimmed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from watchkeeper.ui import forms

IMG2VIDEO_PARAMS: dict[str, Any] = {
    "additionalProperties": False, "title": "Params", "type": "object",
    "properties": {
        "resolution": {"default": "512p", "description": "Longest side of the video. (limited on this "
                       "device: 24 GB profile)", "enum": ["256p", "512p", "768p"], "title": "Resolution",
                       "type": "string", "x-without-profile": {"enum": ["256p", "512p", "768p", "1024p"]}},
        "frames": {"default": 16, "description": "Number of frames in the video.", "maximum": 24,
                   "minimum": 8, "title": "Frames", "type": "integer", "x-without-profile": {"maximum": 32}},
        "fps": {"default": 8, "description": "Frames per second of the video.", "maximum": 30, "minimum": 4,
                "title": "Fps", "type": "integer"},
        "motion": {"default": "zoom_in", "description": "Camera move.", "title": "Motion", "type": "string",
                   "enum": ["zoom_in", "zoom_out", "pan_left", "pan_right", "parallax"]},
    },
}
IMG2VIDEO_PROFILE: dict[str, Any] = {
    "memory_class_gb": 24.0, "limits": {"resolution": ["256p", "512p", "768p"], "frames": 24},
    "device_memory_gb": 25.3,
    "classes": {"12": {"resolution": ["256p", "512p"], "frames": 16},
                "24": {"resolution": ["256p", "512p", "768p"], "frames": 24},
                "40": [{"resolution": ["256p", "512p", "768p", "1024p"], "frames": 24},
                       {"resolution": ["256p", "512p"], "frames": 32}]},
}
IMAGE_INPUTS: dict[str, Any] = {
    "additionalProperties": False, "required": ["image"], "title": "Inputs", "type": "object",
    "properties": {"image": {"contentEncoding": "base64", "contentMediaType": "image/*",
                             "description": "The photo to cartoonise.", "title": "Image", "type": "string"}},
}
CARTOON_PARAMS: dict[str, Any] = {
    "type": "object", "properties": {
        "style_level": {"default": 0.7, "description": "Strength of the style.", "maximum": 1.0,
                        "minimum": 0.1, "title": "Style Level", "type": "number"},
        "resolution": {"default": 1024, "maximum": 2048, "minimum": 512, "multipleOf": 128,
                       "title": "Resolution", "type": "integer"}}}


def by_name(specs: list[forms.FieldSpec]) -> dict[str, forms.FieldSpec]:
    return {s.name: s for s in specs}


def test_out_of_profile_choices_are_kept_and_disabled() -> None:
    resolution = by_name(forms.field_specs(IMG2VIDEO_PARAMS))["resolution"]
    assert resolution.kind == "radio"
    assert resolution.choices == ["256p", "512p", "768p", "1024p"]
    assert resolution.disabled == ["1024p"]
    assert resolution.default == "512p"
    assert resolution.narrowed


def test_a_narrowed_number_stops_at_the_profile_and_remembers_its_bound() -> None:
    frames = by_name(forms.field_specs(IMG2VIDEO_PARAMS))["frames"]
    assert (frames.kind, frames.integer, frames.step) == ("slider", True, 1.0)
    assert (frames.minimum, frames.maximum, frames.maximum_without_profile) == (8, 24, 32)
    assert frames.default == 16
    assert frames.info == "Number of frames in the video."


def test_notes_say_which_profile_each_value_needs() -> None:
    specs = forms.field_specs(IMG2VIDEO_PARAMS)
    notes = forms.limit_notes(specs, IMG2VIDEO_PROFILE)
    assert [(n.field, n.value, n.text) for n in notes] == [
        ("resolution", "1024p", "1024p needs the 40 GB profile; this device has 25.3 GB"),
        ("frames", 32.0, "32 frames needs the 40 GB profile; this device has 25.3 GB"),
    ]
    assert forms.limits_markdown(notes) == ("- 1024p needs the 40 GB profile; this device has 25.3 GB\n"
                                            "- 32 frames needs the 40 GB profile; this device has 25.3 GB")
    assert forms.disabled_map(specs) == {"resolution": ["1024p"]}


def test_notes_are_recomputed_for_the_other_params_current_values() -> None:
    """A class must allow the value and every other current value: with frames limited to 16 in
    a 48 GB class that allows 1024p, 1024p needs 48 GB at 16 frames but 64 GB at 24."""
    profile = copy.deepcopy(IMG2VIDEO_PROFILE)
    profile["classes"] = {"24": {"resolution": ["256p", "512p", "768p"], "frames": 24},
                          "48": {"resolution": ["256p", "512p", "768p", "1024p"], "frames": 16},
                          "64": {"resolution": ["256p", "512p", "768p", "1024p"], "frames": 32}}
    specs = forms.field_specs(IMG2VIDEO_PARAMS)
    at_16 = forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 16})
    at_24 = forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 24})
    assert at_16[0].text == "1024p needs the 48 GB profile; this device has 25.3 GB"
    assert at_24[0].text == "1024p needs the 64 GB profile; this device has 25.3 GB"
    # and frames' note follows the resolution chosen
    assert at_16[1].text == "32 frames needs the 64 GB profile; this device has 25.3 GB"


def test_a_value_no_class_allows_says_so() -> None:
    profile = copy.deepcopy(IMG2VIDEO_PROFILE)
    profile["classes"] = {"24": {"resolution": ["256p", "512p", "768p"], "frames": 24}}
    notes = forms.limit_notes(forms.field_specs(IMG2VIDEO_PARAMS), profile, {"frames": 24})
    assert notes[0].text == "1024p is allowed by no profile with frames = 24; this device has 25.3 GB"


def test_no_profile_means_no_notes() -> None:
    specs = forms.field_specs(CARTOON_PARAMS)
    assert forms.limit_notes(specs, None) == []
    assert forms.limits_markdown([]) == ""
    assert forms.disabled_map(specs) == {}


def test_a_bound_without_the_profile_that_was_none() -> None:
    """``x-without-profile: {}``: no maximum without the profile; the note speaks of values over."""
    schema = {"type": "object", "properties": {"mb": {
        "type": "integer", "minimum": 1, "maximum": 512, "default": 64, "x-without-profile": {}}}}
    profile = {"device_memory_gb": 25.7, "classes": {"4": {"mb": 512}, "64": {}}}
    notes = forms.limit_notes(forms.field_specs(schema), profile)
    assert [n.text for n in notes] == ["mb over 512 needs the 64 GB profile; this device has 25.7 GB"]


def test_widgets_by_kind() -> None:
    cartoon = by_name(forms.field_specs(CARTOON_PARAMS))
    assert cartoon["style_level"].kind == "slider"
    assert cartoon["style_level"].step == pytest.approx(0.01)
    assert cartoon["resolution"].step == 128
    image = forms.field_specs(IMAGE_INPUTS)[0]
    assert (image.kind, image.required) == ("image", True)
    schema = {"type": "object", "properties": {
        "flag": {"type": "boolean", "default": True},
        "tag": {"type": "string", "maxLength": 200, "default": ""},
        "seconds": {"type": "number", "minimum": 0},
        "count": {"type": "integer"},
        "echo": {"default": None, "title": "Echo"},
        "maybe": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}],
                  "default": None},
        "blob": {"type": "string", "format": "binary"},
    }}
    specs = by_name(forms.field_specs(schema))
    assert specs["flag"].kind == "checkbox" and specs["flag"].default is True
    assert specs["tag"].kind == "text" and specs["tag"].max_length == 200
    assert specs["seconds"].kind == "number" and specs["seconds"].minimum == 0
    assert specs["count"].kind == "number" and specs["count"].integer
    assert specs["echo"].kind == "json"
    assert specs["maybe"].kind == "slider" and specs["maybe"].maximum == 9
    assert specs["blob"].kind == "image"
    assert forms.field_specs(None) == []


def test_values_are_sent_as_the_api_wants_them() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 10},
        "x": {"type": "number"},
        "echo": {"title": "Echo"},
        "size": {"enum": [256, 512]},
        "tag": {"type": "string"},
        "image": {"type": "string", "contentMediaType": "image/*"},
    }}
    specs = forms.field_specs(schema)
    sent = forms.collect(specs, [3.0, "", '{"a": [1, 2]}', "512", "hi", object()])
    assert sent == {"n": 3, "echo": {"a": [1, 2]}, "size": 512, "tag": "hi"}
    assert isinstance(sent["n"], int)
    with pytest.raises(forms.FormError, match="Echo: not valid JSON"):
        forms.collect(specs, [1, None, "{nope", None, "", None])


# --- params that depend on each other (a class of several sets) ------------------------------


def published_at(device_gb: float) -> tuple[list[forms.FieldSpec], dict[str, Any]]:
    """img2video's params fields and profile as a worker on a device of ``device_gb`` publishes them."""
    from watchkeeper.apps.img2video import Img2Video
    from watchkeeper.worker.profiles import choose_profile, narrow_schema

    profile = choose_profile(Img2Video.profiles, device_gb)
    schema = narrow_schema(Img2Video.Params.model_json_schema(), profile)
    return forms.field_specs(schema), profile.to_dict()


def test_a_choice_the_class_allows_only_with_fewer_frames_is_disabled_at_more() -> None:
    """On 40 GB: 1024p and 768p up to 24 frames; at 32 frames only up to 512p (the page's rule)."""
    specs, profile = published_at(40)
    assert by_name(specs)["resolution"].disabled == []
    assert forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 24}) == []
    at_32 = forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 32})
    assert [(n.field, n.value, n.text) for n in at_32] == [
        ("resolution", "768p", "768p is allowed by no profile with frames = 32; this device has 40 GB"),
        ("resolution", "1024p", "1024p is allowed by no profile with frames = 32; this device has 40 GB"),
    ]


def test_a_number_not_allowed_with_the_others_current_values_gets_a_note() -> None:
    specs, profile = published_at(40)
    assert by_name(specs)["frames"].maximum == 32  # the widest over the class's sets
    notes = forms.limit_notes(specs, profile, {"resolution": "1024p", "frames": 32})
    assert [(n.field, n.value) for n in notes] == [("resolution", "768p"), ("resolution", "1024p"),
                                                   ("frames", 32)]
    assert notes[-1].text == ("32 frames is allowed by no profile with resolution = 1024p; "
                              "this device has 40 GB")


def test_on_a_smaller_device_the_joint_class_is_only_named() -> None:
    specs, profile = published_at(25.3)
    notes = forms.limit_notes(specs, profile, {"resolution": "512p", "frames": 24})
    assert [n.text for n in notes] == ["1024p needs the 40 GB profile; this device has 25.3 GB",
                                       "32 frames needs the 40 GB profile; this device has 25.3 GB"]
