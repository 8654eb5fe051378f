"""Parameter limits by hardware: the model's profile for the device it runs on.

Runs in worker processes (choosing and checking) and is pure. A model may declare
``profiles``: for each device-memory class in GB, the largest parameters allowed there,
as production image-to-video services cap each GPU size (12 GB: 512p, 16 frames,
50 steps; 24 GB: 768p, 24, 80; 40 GB: 1024p, 32, 100). A limit is a number (the field's
maximum) or a list (the values allowed). A class is one set of limits, or a list of sets
when params depend on each other (40 GB: 1024p with up to 24 frames, or 512p with up to 32):
a request's values must all be allowed by one of them. The worker picks the profile for its
device at start-up, narrows the params JSON schema it reports to the widest limit of each
param over the class's sets (so ``GET /v1/models/{name}``, the UI and the front's checks all
show the narrowed bounds) and refuses params outside it, or outside every set together.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.protocol.messages import PROFILE_SETS_KEY, not_together

__all__ = ["ClassLimits", "Profile", "choose_profile", "combinations_text", "limit_sets", "narrow_schema",
           "violations", "widest"]

#: One class's limits as a model declares them: one set, or a list of sets of which one must
#: allow all of a request's values together.
ClassLimits = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Profile:
    """The limits in force: the memory class chosen and, per param, its widest limit there; and
    what a client needs to say why a value is out of reach (the device's memory, every class,
    each as its list of sets)."""

    memory_gb: float | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    device_gb: float | None = None
    classes: dict[float, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def combinations(self) -> list[dict[str, Any]]:
        """The chosen class's sets (``[limits]`` without a class: a profile made by hand)."""
        sets = self.classes.get(self.memory_gb) if self.memory_gb is not None else None
        return sets or [self.limits]

    def to_dict(self) -> dict[str, Any]:
        """As published in ``GET /v1/models/{name}`` (class keys as strings, as JSON has; a
        class of one set as that set, of several as their list)."""
        return {"memory_class_gb": self.memory_gb, "limits": self.limits,
                "device_memory_gb": None if self.device_gb is None else round(self.device_gb, 1),
                "classes": {f"{gb:g}": _published(sets) for gb, sets in sorted(self.classes.items())}}


def _published(sets: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    return dict(sets[0]) if len(sets) == 1 else [dict(s) for s in sets]


def limit_sets(limits: ClassLimits) -> list[dict[str, Any]]:
    """A class's limits as a list of sets (a single set is a list of one)."""
    if isinstance(limits, Mapping):
        return [dict(limits)]
    return [dict(one) for one in limits]


def widest(sets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per param, the loosest of the sets' limits: a list's union or the largest maximum.

    A param that some set leaves unlimited, or that is limited by a list in one set and a
    number in another, has no single bound and is left out (each set still checks it)."""
    out: dict[str, Any] = {}
    names = dict.fromkeys(name for one in sets for name in one)
    for name in names:
        limits = [one.get(name) for one in sets]
        lists = [x for x in limits if isinstance(x, list | tuple)]
        numbers = [x for x in limits if isinstance(x, int | float) and not isinstance(x, bool)]
        if len(lists) == len(limits):
            out[name] = list(dict.fromkeys(v for x in lists for v in x))
        elif len(numbers) == len(limits):
            out[name] = max(numbers)
    return out


def choose_profile(profiles: Mapping[float, ClassLimits], device_gb: float) -> Profile:
    """The largest class that fits the device, or the smallest when none does."""
    if not profiles:
        return Profile()
    fitting = [gb for gb in profiles if gb <= device_gb]
    chosen = max(fitting) if fitting else min(profiles)
    classes = {float(gb): limit_sets(limits) for gb, limits in profiles.items()}
    return Profile(float(chosen), widest(classes[float(chosen)]), float(device_gb), classes)


def narrow_schema(schema: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """A copy of a params JSON schema with each limited property's bounds narrowed.

    The bound it had before is kept as ``x-without-profile`` (``{"enum": [...]}`` or
    ``{"maximum": n}``, ``{}`` when it had none), so a client (the web UI) can show the
    values out of this device's reach as disabled, with the class that allows them."""
    narrowed = copy.deepcopy(schema)
    props = narrowed.get("properties", {})
    for name, limit in profile.limits.items():
        prop = props.get(name)
        if prop is None:
            continue
        prop["x-without-profile"] = {key: prop[key] for key in ("enum", "maximum") if key in prop}
        if isinstance(limit, list | tuple):
            allowed = [v for v in prop.get("enum", limit) if v in limit]
            prop["enum"] = allowed
        else:
            prop["maximum"] = min(prop.get("maximum", limit), limit)
        prop["description"] = (prop.get("description", "") + f" (limited on this device: "
                               f"{profile.memory_gb:g} GB profile)").strip()
    if len(profile.combinations) > 1 and props:
        narrowed["anyOf"] = [{"properties": {name: _as_schema(limit) for name, limit in one.items()
                                             if name in props}} for one in profile.combinations]
        narrowed[PROFILE_SETS_KEY] = combinations_text(profile)
    return narrowed


def combinations_text(profile: Profile) -> str:
    """``40 GB profile: resolution one of [...], frames at most 24; or ...``."""
    sets = "; or ".join(_described(one) for one in profile.combinations)
    return f"{profile.memory_gb:g} GB profile: {sets}"


def _as_schema(limit: Any) -> dict[str, Any]:
    return {"enum": list(limit)} if isinstance(limit, list | tuple) else {"maximum": limit}


def violations(params: Mapping[str, Any], profile: Profile) -> list[dict[str, str]]:
    """Each param outside the profile, with what is allowed (empty: all within).

    Each value is checked against its widest limit first; values each within it but allowed
    by none of the class's sets together are one problem, naming the sets."""
    problems = []
    for name, limit in profile.limits.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(limit, list | tuple):
            if value not in limit:
                problems.append({"field": f"params.{name}",
                                 "message": f"must be one of {list(limit)} on this device"})
        elif isinstance(value, int | float) and value > limit:
            problems.append({"field": f"params.{name}",
                             "message": f"must be at most {limit} on this device "
                                        f"({profile.memory_gb:g} GB profile; got {value})"})
    if problems or len(profile.combinations) < 2:
        return problems
    sent = {name: params[name] for one in profile.combinations for name in one if name in params}
    if any(_allows_all(one, sent) for one in profile.combinations):
        return []
    return [{"field": "params", "message": not_together(sent, combinations_text(profile))}]


def _allows(limit: Any, value: Any) -> bool:
    if isinstance(limit, list | tuple):
        return value in limit
    if isinstance(limit, int | float) and isinstance(value, int | float):
        return value <= limit
    return True


def _allows_all(limits: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    return all(_allows(limits[name], value) for name, value in values.items() if name in limits)


def _described(limits: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} one of {list(limit)}" if isinstance(limit, list | tuple)
                     else f"{name} at most {limit}" for name, limit in limits.items())
