"""Parameter limits by hardware: the model's profile for the device it runs on.

Runs in worker processes (choosing and checking) and is pure. A model may declare
``profiles``: for each device-memory class in GB, the largest parameters allowed there,
as production image-to-video services cap each GPU size (12 GB: 512p, 16 frames,
50 steps; 24 GB: 768p, 24, 80; 40 GB: 1024p, 32, 100). A limit is a number (the field's
maximum) or a list (the values allowed). The worker picks the profile for its device at
start-up, narrows the params JSON schema it reports (so ``GET /v1/models/{name}``, the UI
and the front's checks all show the narrowed bounds) and refuses params outside it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Profile", "choose_profile", "narrow_schema", "violations"]


@dataclass(frozen=True)
class Profile:
    """The limits in force: the memory class chosen and, per param, its limit; and what a
    client needs to say why a value is out of reach (the device's memory, every class)."""

    memory_gb: float | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    device_gb: float | None = None
    classes: dict[float, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As published in ``GET /v1/models/{name}`` (class keys as strings, as JSON has)."""
        return {"memory_class_gb": self.memory_gb, "limits": self.limits,
                "device_memory_gb": None if self.device_gb is None else round(self.device_gb, 1),
                "classes": {f"{gb:g}": dict(limits) for gb, limits in sorted(self.classes.items())}}


def choose_profile(profiles: Mapping[float, Mapping[str, Any]], device_gb: float) -> Profile:
    """The largest class that fits the device, or the smallest when none does."""
    if not profiles:
        return Profile()
    fitting = [gb for gb in profiles if gb <= device_gb]
    chosen = max(fitting) if fitting else min(profiles)
    classes = {float(gb): dict(limits) for gb, limits in profiles.items()}
    return Profile(float(chosen), dict(profiles[chosen]), float(device_gb), classes)


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
    return narrowed


def violations(params: Mapping[str, Any], profile: Profile) -> list[dict[str, str]]:
    """Each param outside the profile, with what is allowed (empty: all within)."""
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
    return problems
