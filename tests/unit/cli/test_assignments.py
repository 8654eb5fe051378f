"""``NAME=VALUE`` and ``NAME=FILE`` arguments (``watchkeeper.cli.assignments``): values are
JSON when they parse, else strings; a name is required."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from watchkeeper.cli.assignments import parse_assignment, parse_file_assignment, parse_value


@pytest.mark.parametrize(("text", "value"), [
    ("5", 5), ("1.5", 1.5), ("true", True), ("null", None), ('"x"', "x"), ("[1,2]", [1, 2]),
    ('{"a": 1}', {"a": 1}), ("512p", "512p"), ("hello world", "hello world"), ("", ""),
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("[1,", "[1,"), ("'x'", "'x'"),
])
def test_values_are_json_when_they_parse_else_strings(text: str, value: Any) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_assignment_splits_at_the_first_equals_sign() -> None:
    assert parse_assignment("resolution=512p") == ("resolution", "512p")
    assert parse_assignment("steps=5") == ("steps", 5)
    assert parse_assignment("expr=a=b") == ("expr", "a=b")
    assert parse_assignment("empty=") == ("empty", "")
    assert parse_file_assignment("image=cat=1.png") == ("image", "cat=1.png")


@pytest.mark.parametrize("text", ["oops", "=5", " =5", ""])
def test_assignment_without_a_name_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        parse_assignment(text)


@pytest.mark.parametrize("text", ["image", "image=", "=cat.png"])
def test_file_assignment_needs_a_name_and_a_file(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_file_assignment(text)
