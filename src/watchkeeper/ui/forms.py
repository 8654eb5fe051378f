"""From a model's published schemas to form fields: which widget, its bounds, and its limits.

Runs in the UI process (a client of the HTTP API). Pure functions, no Gradio: a JSON schema
property (``GET /v1/models/{name}``'s ``inputs_schema`` / ``params_schema``) becomes a
:class:`FieldSpec` (a slider for a bounded number, a number box for an unbounded one, a radio
for an enum, a checkbox for a boolean, a text box for a string, an image upload for an image,
a JSON box for anything else). The device's parameter ``profile`` and the properties'
``x-without-profile`` say which values are out of this device's reach: an enum's values are
kept as choices but disabled, a number's slider stops at the profile's maximum, and each gets
a note ("1024p needs the 40 GB profile; this device has 25.7 GB"), recomputed from the current
values of the other params (the class asked for must allow all of them). A class may be a list
of sets of limits (params that depend on each other, such as frames and resolution): a choice
the device's class allows alone but not with the other params' current values is disabled
too, and a number's current value that is not allowed with them gets a note.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FieldSpec", "FormError", "Kind", "Note", "collect", "disabled_map", "field_spec",
    "field_specs", "is_image", "limit_notes", "limits_markdown", "needed_class", "to_value"
]

Kind = Literal["slider", "number", "radio", "checkbox", "text", "image", "json"]


@dataclass
class FieldSpec:
    """One form field, as the page shows it."""

    name: str
    kind: Kind
    label: str
    info: str = ""
    default: Any = None
    required: bool = False
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    max_length: int | None = None
    #: Every value of an enum, those out of the profile's reach included.
    choices: list[Any] = field(default_factory=list)
    #: The enum values out of the profile's reach (shown, disabled).
    disabled: list[Any] = field(default_factory=list)
    #: The maximum without the profile, when the profile lowered it (``None``: unbounded).
    maximum_without_profile: float | None = None
    narrowed: bool = False


@dataclass
class Note:
    """Why a value is out of reach: ``text`` is the sentence the page shows."""

    field: str
    value: Any
    text: str


def _resolve(prop: dict[str, Any]) -> dict[str, Any]:
    """A property with ``anyOf``/``oneOf`` of one non-null schema (``Optional[int]``) flattened."""
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            concrete = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            if len(concrete) == 1:
                merged = {k: v for k, v in prop.items() if k != key}
                return {**concrete[0], **merged}
    return prop


def is_image(prop: dict[str, Any]) -> bool:
    """An image input: a base64 string of an ``image/*`` media type, or a binary string."""
    media = str(prop.get("contentMediaType", ""))
    return prop.get("type") == "string" and (
        media.startswith("image/") or prop.get("format") == "binary"
        or (prop.get("contentEncoding") == "base64" and "image" in str(prop.get("title", "")).lower()))


def _number_step(span: float) -> float:
    """A float slider's step: about a fiftieth of the span, a power of ten, at most 0.1."""
    if span <= 0:
        return 0.1
    return min(0.1, 10.0 ** math.floor(math.log10(span / 50)))


def _bound(prop: dict[str, Any], inclusive: str, exclusive: str) -> float | None:
    value = prop.get(inclusive, prop.get(exclusive))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def field_spec(name: str, raw: dict[str, Any], required: bool = False) -> FieldSpec:
    """The form field for the schema property ``raw`` named ``name``."""
    prop = _resolve(raw)
    spec = FieldSpec(name=name, kind="json", label=str(prop.get("title") or name),
                     info=str(prop.get("description") or ""), default=prop.get("default"),
                     required=required)
    kind = prop.get("type")
    without = prop.get("x-without-profile")
    spec.narrowed = isinstance(without, dict)
    if is_image(prop):
        spec.kind = "image"
    elif isinstance(prop.get("enum"), list) and prop["enum"]:
        spec.kind = "radio"
        allowed = list(prop["enum"])
        every = without.get("enum") if isinstance(without, dict) else None
        spec.choices = list(every) if isinstance(every, list) else allowed
        spec.choices += [v for v in allowed if v not in spec.choices]
        spec.disabled = [v for v in spec.choices if v not in allowed]
    elif kind == "boolean":
        spec.kind = "checkbox"
        spec.default = bool(spec.default) if spec.default is not None else False
    elif kind in ("integer", "number"):
        _numeric(spec, prop, without)
    elif kind == "string":
        spec.kind = "text"
        spec.max_length = prop.get("maxLength") if isinstance(prop.get("maxLength"), int) else None
        spec.default = "" if spec.default is None else spec.default
    return spec


def _numeric(spec: FieldSpec, prop: dict[str, Any], without: Any) -> None:
    spec.integer = prop.get("type") == "integer"
    spec.minimum = _bound(prop, "minimum", "exclusiveMinimum")
    spec.maximum = _bound(prop, "maximum", "exclusiveMaximum")
    if isinstance(without, dict):
        spec.maximum_without_profile = _bound(without, "maximum", "exclusiveMaximum")
    bounded = spec.minimum is not None and spec.maximum is not None
    spec.kind = "slider" if bounded else "number"
    multiple = prop.get("multipleOf")
    if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
        spec.step = float(multiple)
    elif spec.integer:
        spec.step = 1.0
    elif bounded:
        assert spec.minimum is not None and spec.maximum is not None
        spec.step = _number_step(spec.maximum - spec.minimum)
    if spec.default is None and bounded:
        spec.default = spec.minimum


def field_specs(schema: dict[str, Any] | None) -> list[FieldSpec]:
    """Every property of an object schema (``None`` until a worker reported: no fields)."""
    if not isinstance(schema, dict):
        return []
    props = schema.get("properties")
    required = set(schema.get("required") or [])
    if not isinstance(props, dict):
        return []
    return [field_spec(name, prop if isinstance(prop, dict) else {}, name in required)
            for name, prop in props.items()]


def _gb(value: float) -> str:
    return f"{value:g} GB"


def _allows(limit: Any, value: Any) -> bool:
    """Whether one class's limit for a param (a maximum or a list of values) allows ``value``."""
    if limit is None:
        return True
    if isinstance(limit, list):
        return value in limit
    if isinstance(limit, (int, float)) and isinstance(value, (int, float)):
        return value <= limit
    return True


def _class_allows(limits: Any, wanted: dict[str, Any]) -> bool:
    """Whether a class (one set of limits, or a list of sets of which one must do) allows
    all the ``wanted`` values together."""
    sets = [limits] if isinstance(limits, dict) else limits if isinstance(limits, list) else [{}]
    return any(all(_allows(one.get(p), v) for p, v in wanted.items())
               for one in sets if isinstance(one, dict))


def needed_class(profile: dict[str, Any] | None, name: str, value: Any,
                 others: dict[str, Any]) -> float | None:
    """The smallest memory class whose limits allow ``name = value`` and the other values."""
    classes = (profile or {}).get("classes")
    if not isinstance(classes, dict):
        return None
    fits = []
    for key, limits in classes.items():
        try:
            size = float(key)
        except ValueError:
            continue
        if _class_allows(limits, {**others, name: value}):
            fits.append(size)
    return min(fits) if fits else None


def _here_allows(profile: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether this device's class allows the ``wanted`` values together (yes when unknown)."""
    chosen = (profile or {}).get("memory_class_gb")
    classes = (profile or {}).get("classes")
    if not isinstance(chosen, (int, float)) or not isinstance(classes, dict):
        return True
    limits = classes.get(f"{float(chosen):g}")
    return limits is None or _class_allows(limits, wanted)


def _words(spec: FieldSpec) -> str:
    return spec.name.replace("_", " ")


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sentence(subject: str, profile: dict[str, Any] | None, name: str, value: Any,
              others: dict[str, Any]) -> str:
    device = (profile or {}).get("device_memory_gb")
    here = f"this device has {_gb(float(device))}" if isinstance(device, (int, float)) else \
        "this device's profile does not allow it"
    needed = needed_class(profile, name, value, others)
    if needed is None:
        with_others = ", ".join(f"{k} = {_shown(v)}" for k, v in others.items())
        tail = f" with {with_others}" if with_others else ""
        return f"{subject} is allowed by no profile{tail}; {here}"
    return f"{subject} needs the {_gb(needed)} profile; {here}"


def limit_notes(specs: list[FieldSpec], profile: dict[str, Any] | None,
                values: dict[str, Any] | None = None) -> list[Note]:
    """A note for each value out of reach, for the current ``values`` of the other params."""
    values = values or {}
    classes = (profile or {}).get("classes")
    limited = {p for limits in (classes.values() if isinstance(classes, dict) else [])
               if isinstance(limits, dict) for p in limits}
    current = {s.name: values.get(s.name, s.default) for s in specs if s.name in limited}
    notes: list[Note] = []
    for spec in specs:
        others = {k: v for k, v in current.items() if k != spec.name and v is not None}
        for value, subject in _out_of_reach(spec, profile, others, current.get(spec.name),
                                            spec.name in limited):
            notes.append(Note(spec.name, value, _sentence(subject, profile, spec.name, value, others)))
    return notes


def _out_of_reach(spec: FieldSpec, profile: dict[str, Any] | None, others: dict[str, Any],
                  current: Any, limited: bool) -> list[tuple[Any, str]]:
    """``spec``'s values out of reach, each with the words for it: choices out of the profile
    or not allowed with the ``others``' values; a number's top past the profile's maximum; a
    number's ``current`` value within its bound but not allowed with the others."""
    found = [(v, _shown(v)) for v in (spec.choices if limited else spec.disabled)
             if v in spec.disabled or not _here_allows(profile, {**others, spec.name: v})]
    if spec.kind not in ("slider", "number"):
        return found
    top = spec.maximum_without_profile
    if spec.narrowed and spec.maximum is not None and (top is None or top > spec.maximum):
        found.append((top, f"{_shown(top)} {_words(spec)}") if top is not None else
                     (spec.maximum + (spec.step or 1), f"{_words(spec)} over {_shown(spec.maximum)}"))
    if current is not None and not _here_allows(profile, {**others, spec.name: current}):
        found.append((current, f"{_shown(current)} {_words(spec)}"))
    return found


def limits_markdown(notes: list[Note]) -> str:
    """The ``NAME-limits`` text: one line per value out of reach; empty when none."""
    return "\n".join(f"- {note.text}" for note in notes)


def disabled_map(specs: list[FieldSpec]) -> dict[str, list[str]]:
    """field -> the disabled choices as the page's radio inputs spell them (for the page script)."""
    return {s.name: [str(v) for v in s.disabled] for s in specs if s.disabled}


class FormError(ValueError):
    """A field's value cannot be sent (not JSON, not a number)."""


def to_value(spec: FieldSpec, raw: Any) -> Any:
    """A widget's value as the API wants it; ``None`` leaves the field out."""
    if spec.kind == "json":
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        try:
            return json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as e:
            raise FormError(f"{spec.label}: not valid JSON ({e})") from None
    if spec.kind in ("slider", "number"):
        if raw is None or raw == "":
            return None
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise FormError(f"{spec.label}: not a number") from None
        return int(round(number)) if spec.integer else number
    if spec.kind == "radio" and raw is not None and spec.choices:
        for choice in spec.choices:  # the page may hand back a number's text
            if str(choice) == str(raw):
                return choice
    return raw


def collect(specs: list[FieldSpec], raws: list[Any]) -> dict[str, Any]:
    """Field name -> API value for every non-image field that has a value."""
    out: dict[str, Any] = {}
    for spec, raw in zip(specs, raws, strict=True):
        if spec.kind == "image":
            continue
        value = to_value(spec, raw)
        if value is not None:
            out[spec.name] = value
    return out
