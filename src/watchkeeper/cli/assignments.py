"""``NAME=VALUE`` and ``NAME=FILE`` arguments of ``watchkeeper jobs submit``.

Runs in the user's shell, in the CLI process, while argparse reads the command line: the
functions are argparse ``type`` callables and do no I/O (a file is named, not opened, here).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["parse_assignment", "parse_file_assignment", "parse_value"]


def parse_value(text: str) -> Any:
    """``5``, ``true``, ``"x"``, ``[1,2]`` as JSON; anything else (``512p``, ``NaN``) as a string."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(name: str) -> Any:
    raise ValueError(name)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (an argparse ``type``), the value read by :func:`parse_value`."""
    name, value = parse_file_assignment(text, allow_empty=True)
    return name, parse_value(value)


def parse_file_assignment(text: str, allow_empty: bool = False) -> tuple[str, str]:
    """``NAME=FILE`` (an argparse ``type``): the value is kept as it is."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip() or not (value or allow_empty):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value
