"""Regenerate the key tables of docs/configuration.md from the pydantic fields of the config.

    python scripts/gen_config_doc.py           # rewrite the tables in place
    python scripts/gen_config_doc.py --check   # exit 1 if the committed tables are stale

Only the text between ``<!-- BEGIN GENERATED: NAME -->`` and ``<!-- END GENERATED: NAME -->``
is replaced; the rest of the page is written by hand. ``tests/unit/test_docs.py`` runs the
check, so a changed field or description must be followed by running this script. Types are
written as a person writes them in TOML (``integer or unset``, ``one of: `debug`, ...``); a
type the script has no words for stops it, rather than printing Python's repr.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel, JsonValue
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from watchkeeper.config import JobsConfig, ModelConfig, ServerConfig, UiConfig

__all__ = ["DOC_PATH", "SECTIONS", "main", "render_doc", "render_table"]

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
SECTIONS: dict[str, type[BaseModel]] = {"server": ServerConfig, "jobs": JobsConfig,
                                         "ui": UiConfig, "model": ModelConfig}

_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
)


#: String fields whose form a validator checks: how a person writes them.
_WRITTEN_AS = {
    "app": "string: `module.path:ClassName`",
    "device": "one of: `auto`, `cpu`, `cuda`, `cuda:N`",
}
_PLAIN_TYPES: dict[object, str] = {
    bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"
}


def _spelled(annotation: object, where: str) -> str:
    """``annotation`` in words: ``integer``, ``number or unset``, ``list of strings``, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _spelled(args[0], where)
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        words = [_spelled(arg, where) for arg in args if arg is not type(None)]
        return " or ".join(words) + (" or unset" if type(None) in args else "")
    if origin is list:
        return f"list of {_plural(_spelled(args[0], where))}"
    if origin is dict:
        if args[1] is JsonValue:
            return "table (any TOML values)"
        return f"table of {_plural(_spelled(args[1], where))}"
    if annotation in _PLAIN_TYPES:
        return _PLAIN_TYPES[annotation]
    raise SystemExit(f"{where}: no words for the type {annotation!r}; add them to {__file__}")


def _plural(words: str) -> str:
    return words if " " in words else words + "s"


def _type_name(name: str, field: FieldInfo, where: str) -> str:
    return _WRITTEN_AS.get(name) or _spelled(field.annotation, where)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    home = str(Path.home())
    if isinstance(value, Path) and text.startswith(home + "/"):
        text = "~" + text[len(home) :]
    return f"`{text}`"


def _bounds(field: FieldInfo) -> str:
    found = []
    for kind, attr, op in _BOUNDS:
        for item in field.metadata:
            if isinstance(item, kind):
                found.append(f"{op} {getattr(item, attr)}")
    return ", ".join(found) or "—"


def render_table(model: type[BaseModel]) -> str:
    """A markdown table of the model's fields: key, type, default, bounds, meaning."""
    lines = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        where = f"{model.__name__}.{name}"
        cells = [f"`{name}`", _type_name(name, field, where), _default(field), _bounds(field)]
        lines.append("| " + " | ".join([*cells, field.description or ""]) + " |")
    return "\n".join(lines)


def render_doc(text: str) -> str:
    """``text`` with every generated block replaced by the current table."""
    fields = {name for model in SECTIONS.values() for name in model.model_fields}
    if stale := sorted(set(_WRITTEN_AS) - fields):
        raise SystemExit(f"{__file__}: _WRITTEN_AS names no field: {', '.join(stale)}")
    for section, model in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {section} -->\n).*?(<!-- END GENERATED: {section} -->)",
            re.DOTALL,
        )
        if not pattern.search(text):
            raise SystemExit(f"{DOC_PATH}: no generated block for {section!r}")
        # a re.sub template: the backslashes of the table (`\|`) are doubled
        block = r"\g<1>" + render_table(model).replace("\\", "\\\\") + r"\n\g<2>"
        text = pattern.sub(block, text)
    return text


def main(argv: list[str]) -> int:
    current = DOC_PATH.read_text(encoding="utf-8")
    fresh = render_doc(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{DOC_PATH} is stale: run python scripts/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
