"""Reading a JSON predict body and the X-Request-Timeout header (``watchkeeper.http.bodies``),
and a large body's bounds: its values counted first, its inputs carried to the worker as JSON."""

from __future__ import annotations

import gc
import pickle

import orjson
import pytest

from watchkeeper.errors import BadInput, InvalidInput, PayloadTooLarge
from watchkeeper.http.bodies import JsonInputs, PredictBody, count_json_values, parse_json, parse_timeout

# --- parse_json ------------------------------------------------------------------------


def test_valid_body() -> None:
    body = parse_json(b'{"inputs": {"text": "hi", "n": [1, 2]}, "params": {"k": 3}}')
    assert body == PredictBody({"text": "hi", "n": [1, 2]}, {"k": 3})


def test_params_default_to_empty() -> None:
    assert parse_json(b'{"inputs": {}}') == PredictBody({}, {})


def test_unicode_and_nesting_survive() -> None:
    body = parse_json('{"inputs": {"t": "héllo ✓", "o": {"a": null}}}'.encode())
    assert body.inputs == {"t": "héllo ✓", "o": {"a": None}}


@pytest.mark.parametrize("raw", [b"", b"{", b"{'inputs': {}}", b'{"inputs": {}', b"not json"])
def test_malformed_json_is_bad_input(raw: bytes) -> None:
    with pytest.raises(BadInput) as info:
        parse_json(raw)
    assert type(info.value) is BadInput
    assert info.value.type == "bad_input"
    assert info.value.message.startswith("the body is not valid JSON")
    assert info.value.suggestion  # the default suggestion says what to send


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b"3", "a number"),
        (b"1.5", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_non_object_body_is_bad_input(raw: bytes, kind: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_json(raw)
    assert type(info.value) is BadInput
    assert info.value.message == f"the body must be a JSON object, not {kind}"


def test_missing_inputs_names_the_field() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(b'{"params": {}}')
    assert "'inputs' is missing" in info.value.message
    assert info.value.details == {"errors": [{"field": "inputs", "message": "field required"}]}


def test_empty_object_is_missing_inputs() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(b"{}")
    assert info.value.details["errors"][0]["field"] == "inputs"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"inputs": [1]}', "an array"),
        (b'{"inputs": "x"}', "a string"),
        (b'{"inputs": null}', "null"),
        (b'{"inputs": 7}', "a number"),
        (b'{"inputs": false}', "a boolean"),
    ],
)
def test_inputs_must_be_an_object(raw: bytes, kind: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(raw)
    assert info.value.message == f"'inputs' must be a JSON object, not {kind}"
    assert info.value.details == {"errors": [{"field": "inputs", "message": "must be an object"}]}


def test_params_must_be_an_object() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(b'{"inputs": {}, "params": [1]}')
    assert info.value.details["errors"] == [{"field": "params", "message": "must be an object"}]


def test_unknown_top_level_keys_are_named() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(b'{"inputs": {}, "zeta": 1, "alpha": 2}')
    assert "alpha, zeta" in info.value.message
    assert "allowed: inputs, params" in info.value.message
    assert info.value.details == {
        "errors": [
            {"field": "alpha", "message": "unknown field"},
            {"field": "zeta", "message": "unknown field"},
        ]
    }


def test_unknown_keys_are_reported_before_missing_inputs() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json(b'{"input": {}}')
    assert [e["field"] for e in info.value.details["errors"]] == ["input"]


# --- parse_timeout ---------------------------------------------------------------------


def test_no_header_means_the_model_timeout() -> None:
    assert parse_timeout(None, 30.0) == 30.0


@pytest.mark.parametrize(("header", "expected"), [("5", 5.0), ("0.25", 0.25), (" 2.5 ", 2.5)])
def test_lower_header_lowers_the_deadline(header: str, expected: float) -> None:
    assert parse_timeout(header, 30.0) == expected


@pytest.mark.parametrize("header", ["30", "31", "1e6"])
def test_header_is_capped_at_the_model_timeout(header: str) -> None:
    assert parse_timeout(header, 30.0) == 30.0


@pytest.mark.parametrize(
    "header",
    ["", "abc", "5s", "-1", "0", "-0", "0.0", "nan", "NaN", "-nan", "inf", "Infinity", "-inf"],
)
def test_garbage_is_bad_input(header: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_timeout(header, 30.0)
    assert type(info.value) is BadInput
    assert "X-Request-Timeout must be a positive number of seconds" in info.value.message


def test_long_garbage_is_cut_in_the_message() -> None:
    with pytest.raises(BadInput) as info:
        parse_timeout("x" * 500, 30.0)
    assert "x" * 50 in info.value.message
    assert "x" * 51 not in info.value.message


# --- large bodies: values counted, inputs carried as JSON ---------------------------------


def test_values_are_counted_outside_strings() -> None:
    assert count_json_values(b'{"t": "a,b,[c],{d}", "n": [1, 2, {"k": [3]}]}', 8) == 8
    with pytest.raises(PayloadTooLarge) as info:
        count_json_values(orjson.dumps([[1]] * 20), 30)
    assert "more than 30 JSON values (server.max_json_values)" in info.value.message


def test_commas_in_a_long_text_do_not_count_as_values() -> None:
    text = orjson.dumps({"inputs": {"text": 'a, b, [c], {d} \\" ' * 10_000}})
    assert count_json_values(text, 10) == 3


def test_a_large_body_is_refused_past_the_values_limit_before_it_is_parsed() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_json(orjson.dumps({"inputs": {"bulk": [[1]] * 1000}}), max_values=500)


def test_large_body_inputs_travel_as_their_json_and_come_back_equal() -> None:
    inputs = {"text": "é" * 1000, "numbers": list(range(1000)), "deep": [[1.5, None, True]] * 10}
    body = parse_json(orjson.dumps({"inputs": inputs, "params": {"k": 1}}), max_values=100_000)
    assert isinstance(body.inputs, JsonInputs) and body.inputs == inputs
    assert orjson.dumps(body.inputs) == orjson.dumps(inputs)  # the job store, the fingerprint
    pickled = pickle.dumps({"items": (body.inputs,)}, protocol=5)
    assert pickled.count(b"orjson") == 1  # one bytes object, not a value at a time
    again = pickle.loads(pickled)["items"][0]
    assert type(again) is dict and again == inputs
    assert body.params == {"k": 1} and type(body.params) is dict


def test_the_garbage_collector_is_back_on_after_a_large_parse() -> None:
    assert gc.isenabled()
    parse_json(orjson.dumps({"inputs": {"a": [[1]] * 100}}), max_values=1000)
    assert gc.isenabled()
    with pytest.raises(BadInput):
        parse_json(b'{"inputs": [', max_values=1000)
    assert gc.isenabled()


def test_a_large_body_still_gets_the_depth_check() -> None:
    deep = b'{"inputs": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}"
    with pytest.raises(BadInput, match="nested deeper than"):
        parse_json(deep, max_values=1000)
