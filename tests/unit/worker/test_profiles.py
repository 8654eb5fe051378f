"""Parameter limits by hardware (``watchkeeper.worker.profiles``): choosing, narrowing, checking."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from watchkeeper.worker.profiles import Profile, choose_profile, narrow_schema, violations

#: Per-GPU limits of production image-to-video services (12 / 24 / 40 GB).
VIDEO: dict[float, dict[str, Any]] = {
    12: {"resolution": [256, 512], "frames": 16, "steps": 50},
    24: {"resolution": [256, 512, 768], "frames": 24, "steps": 80},
    40: {"resolution": [256, 512, 768, 1024], "frames": 32, "steps": 100},
}


def schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "resolution": {"type": "integer", "enum": [256, 512, 768, 1024], "default": 512},
            "frames": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Frames."},
            "steps": {"type": "integer", "minimum": 1, "maximum": 30},
            "seed": {"type": "integer"},
        },
    }


# --- choose_profile --------------------------------------------------------------------


@pytest.mark.parametrize(("device_gb", "chosen"), [(12, 12), (16, 12), (23.9, 12), (24, 24),
                                                   (39, 24), (40, 40), (80, 40)])
def test_largest_class_that_fits(device_gb: float, chosen: float) -> None:
    profile = choose_profile(VIDEO, device_gb)
    assert profile.memory_gb == chosen
    assert profile.limits == VIDEO[chosen]


def test_smallest_class_when_none_fits() -> None:
    profile = choose_profile(VIDEO, 8)
    assert profile.memory_gb == 12
    assert profile.limits == VIDEO[12]


def test_no_profiles_means_no_limits() -> None:
    profile = choose_profile({}, 24)
    assert profile == Profile()
    assert profile.limits == {}
    assert profile.to_dict() == {"memory_class_gb": None, "limits": {}, "device_memory_gb": None,
                                 "classes": {}}


def test_profile_is_a_copy_of_the_declared_limits() -> None:
    profiles: dict[float, dict[str, Any]] = {12: {"steps": 50}}
    profile = choose_profile(profiles, 16)
    profile.limits["steps"] = 999
    assert profiles[12]["steps"] == 50


def test_class_is_reported_as_a_float() -> None:
    profile = choose_profile({12: {"steps": 50}}, 16)
    assert isinstance(profile.memory_gb, float)
    assert profile.to_dict() == {"memory_class_gb": 12.0, "limits": {"steps": 50},
                                 "device_memory_gb": 16.0, "classes": {"12": {"steps": 50}}}


def test_unordered_profiles() -> None:
    profiles: dict[float, dict[str, Any]] = {40: {"steps": 100}, 12: {"steps": 50}, 24: {"steps": 80}}
    assert choose_profile(profiles, 30).memory_gb == 24
    assert choose_profile(profiles, 1).memory_gb == 12


# --- narrow_schema ---------------------------------------------------------------------


def test_maximum_is_lowered() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"frames": 16}))
    assert narrowed["properties"]["frames"]["maximum"] == 16
    assert narrowed["properties"]["frames"]["minimum"] == 1


def test_maximum_is_never_raised() -> None:
    narrowed = narrow_schema(schema(), Profile(40, {"steps": 100}))
    assert narrowed["properties"]["steps"]["maximum"] == 30


def test_maximum_is_added_when_absent() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"seed": 1000}))
    assert narrowed["properties"]["seed"]["maximum"] == 1000


def test_every_class_and_the_device_are_published() -> None:
    """What a client needs to say "1024p needs the 40 GB profile; this device has 25.7 GB"."""
    published = choose_profile(VIDEO, 25.74).to_dict()
    assert published["memory_class_gb"] == 24.0
    assert published["device_memory_gb"] == 25.7
    assert list(published["classes"]) == ["12", "24", "40"]
    assert published["classes"]["40"] == VIDEO[40]


def test_the_bound_without_the_profile_is_kept() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"frames": 16, "resolution": [256, 512],
                                                    "seed": 1000}))
    props = narrowed["properties"]
    assert props["frames"]["x-without-profile"] == {"maximum": 64}
    assert props["resolution"]["x-without-profile"] == {"enum": [256, 512, 768, 1024]}
    assert props["seed"]["x-without-profile"] == {}
    assert "x-without-profile" not in props["steps"]


def test_enum_is_filtered_by_a_list_limit() -> None:
    narrowed = narrow_schema(schema(), Profile(24, {"resolution": [256, 512, 768]}))
    assert narrowed["properties"]["resolution"]["enum"] == [256, 512, 768]


def test_enum_keeps_its_own_order_and_gains_nothing() -> None:
    narrowed = narrow_schema(schema(), Profile(24, {"resolution": [2048, 768, 256]}))
    assert narrowed["properties"]["resolution"]["enum"] == [256, 768]


def test_list_limit_without_enum_becomes_the_enum() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"seed": [1, 2, 3]}))
    assert narrowed["properties"]["seed"]["enum"] == [1, 2, 3]


def test_tuple_limit_is_a_list_limit() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"resolution": (256, 512)}))
    assert narrowed["properties"]["resolution"]["enum"] == [256, 512]


def test_description_notes_the_profile() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"frames": 16, "steps": 20}))
    frames = narrowed["properties"]["frames"]["description"]
    assert frames.startswith("Frames. ")
    assert "12 GB profile" in frames
    steps = narrowed["properties"]["steps"]["description"]
    assert steps == "(limited on this device: 12 GB profile)"


def test_unlimited_params_are_left_alone() -> None:
    original = schema()
    narrowed = narrow_schema(original, Profile(12, {"frames": 16}))
    for name in ("resolution", "steps", "seed"):
        assert narrowed["properties"][name] == original["properties"][name]


def test_original_schema_is_not_mutated() -> None:
    original = schema()
    before = copy.deepcopy(original)
    narrowed = narrow_schema(original, choose_profile(VIDEO, 12))
    assert original == before
    assert narrowed is not original
    assert narrowed["properties"]["resolution"] is not original["properties"]["resolution"]


def test_unknown_params_are_ignored() -> None:
    narrowed = narrow_schema(schema(), Profile(12, {"guidance": 7.5, "sampler": ["ddim"]}))
    assert narrowed == schema()


def test_schema_without_properties() -> None:
    assert narrow_schema({"type": "object"}, Profile(12, {"steps": 50})) == {"type": "object"}


def test_no_profile_changes_nothing() -> None:
    assert narrow_schema(schema(), Profile()) == schema()


def test_fractional_class_in_description() -> None:
    narrowed = narrow_schema(schema(), Profile(7.5, {"frames": 8}))
    assert "7.5 GB profile" in narrowed["properties"]["frames"]["description"]


# --- violations ------------------------------------------------------------------------


def test_within_limits_is_clean() -> None:
    profile = choose_profile(VIDEO, 12)
    assert violations({"resolution": 512, "frames": 16, "steps": 50}, profile) == []


def test_number_above_limit() -> None:
    profile = choose_profile(VIDEO, 12)
    (problem,) = violations({"steps": 51}, profile)
    assert problem["field"] == "params.steps"
    assert "at most 50" in problem["message"]
    assert "12 GB profile" in problem["message"]
    assert "got 51" in problem["message"]


def test_float_limits() -> None:
    profile = Profile(12, {"guidance": 7.5})
    assert violations({"guidance": 7.5}, profile) == []
    assert len(violations({"guidance": 7.51}, profile)) == 1


def test_value_outside_a_list() -> None:
    profile = choose_profile(VIDEO, 12)
    (problem,) = violations({"resolution": 768}, profile)
    assert problem["field"] == "params.resolution"
    assert problem["message"] == "must be one of [256, 512] on this device"


def test_tuple_limit_is_reported_as_a_list() -> None:
    (problem,) = violations({"resolution": 768}, Profile(12, {"resolution": (256, 512)}))
    assert "[256, 512]" in problem["message"]


def test_every_violation_is_reported() -> None:
    profile = choose_profile(VIDEO, 12)
    problems = violations({"resolution": 1024, "frames": 17, "steps": 51}, profile)
    assert sorted(p["field"] for p in problems) == ["params.frames", "params.resolution",
                                                    "params.steps"]


def test_params_not_sent_are_not_checked() -> None:
    assert violations({}, choose_profile(VIDEO, 12)) == []
    assert violations({"seed": 10**9}, choose_profile(VIDEO, 12)) == []


def test_no_profile_allows_anything() -> None:
    assert violations({"steps": 10**9, "resolution": 4096}, Profile()) == []


# --- classes of several sets: params that depend on each other ---------------------------

#: 40 GB as the image-to-video page sets it: 1024p only up to 24 frames, 32 frames up to 512p.
JOINT: dict[float, Any] = {
    24: {"resolution": [256, 512, 768], "frames": 24},
    40: [{"resolution": [256, 512, 768, 1024], "frames": 24, "steps": 100},
         {"resolution": [256, 512], "frames": 32, "steps": 100}],
}


def test_the_schema_shows_the_widest_limit_of_each_param_over_the_sets() -> None:
    profile = choose_profile(JOINT, 40)
    assert profile.limits == {"resolution": [256, 512, 768, 1024], "frames": 32, "steps": 100}
    assert profile.combinations == JOINT[40]
    props = narrow_schema(schema(), profile)["properties"]
    assert props["frames"]["maximum"] == 32
    assert props["resolution"]["enum"] == [256, 512, 768, 1024]


def test_values_allowed_alone_but_by_no_set_together_are_one_problem() -> None:
    profile = choose_profile(JOINT, 40)
    assert violations({"resolution": 1024, "frames": 24}, profile) == []
    assert violations({"resolution": 512, "frames": 32}, profile) == []
    (problem,) = violations({"resolution": 1024, "frames": 32}, profile)
    assert problem == {"field": "params", "message":
                       "resolution = 1024 with frames = 32 is not allowed on this device (40 GB profile: "
                       "resolution one of [256, 512, 768, 1024], frames at most 24, steps at most 100; or "
                       "resolution one of [256, 512], frames at most 32, steps at most 100)"}


def test_a_value_over_its_widest_limit_is_reported_alone() -> None:
    (problem,) = violations({"resolution": 1024, "frames": 40}, choose_profile(JOINT, 40))
    assert problem["field"] == "params.frames"


def test_only_the_values_sent_are_checked_together() -> None:
    profile = choose_profile(JOINT, 40)
    assert violations({"frames": 32}, profile) == []  # resolution left to its default
    assert violations({"resolution": 1024}, profile) == []


def test_a_param_one_set_leaves_unlimited_has_no_single_bound() -> None:
    profile = choose_profile({8: [{"frames": 16, "steps": 50}, {"frames": 32}]}, 8)
    assert profile.limits == {"frames": 32}
    assert violations({"frames": 24, "steps": 10**6}, profile) == []  # the second set allows it
    (problem,) = violations({"frames": 33, "steps": 10}, profile)
    assert problem["field"] == "params.frames"


def test_a_class_of_several_sets_is_published_as_their_list() -> None:
    published = choose_profile(JOINT, 24).to_dict()
    assert published["memory_class_gb"] == 24.0
    assert published["classes"] == {"24": JOINT[24], "40": JOINT[40]}
