"""HTTP status codes and the error body (``watchkeeper.http.errors``)."""

from __future__ import annotations

import re

import orjson
import pytest

from watchkeeper import errors as e
from watchkeeper.http.errors import STATUS, error_body, error_response, status_of

ERROR_CLASSES = [
    obj
    for obj in (getattr(e, name) for name in e.__all__)
    if isinstance(obj, type) and issubclass(obj, e.WatchkeeperError)
]


def docstring_tree() -> dict[str, int | None]:
    """Class name -> HTTP status (None when none is drawn), from ``watchkeeper.errors``' docstring."""
    tree: dict[str, int | None] = {}
    for line in (e.__doc__ or "").splitlines():
        match = re.match(r"^\s*(?:[│ ]*[├└]── )?([A-Z]\w+)(?:\s+(\d{3})\b)?", line)
        if match and isinstance(getattr(e, match.group(1), None), type):
            status = match.group(2)
            tree[match.group(1)] = int(status) if status else None
    return tree


EXPECTED = {
    e.WatchkeeperError: 500,
    e.ConfigError: 500,
    e.BadInput: 400,
    e.InvalidInput: 422,
    e.PayloadTooLarge: 413,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.Cancelled: 409,
    e.InputQuarantined: 422,
    e.Overloaded: 429,
    e.Unavailable: 503,
    e.OutOfMemory: 503,
    e.DeadlineExceeded: 504,
    e.WorkerCrashed: 502,
    e.ModelError: 500,
}


def test_every_error_class_is_in_the_docstring_tree() -> None:
    tree = docstring_tree()
    assert set(tree) == {cls.__name__ for cls in ERROR_CLASSES}


def test_expected_table_matches_the_docstring() -> None:
    tree = docstring_tree()
    for cls, status in EXPECTED.items():
        drawn = tree[cls.__name__]
        assert drawn is None or drawn == status, cls.__name__
    assert set(EXPECTED) == set(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_status_of_each_class(cls: type[e.WatchkeeperError]) -> None:
    assert status_of(cls("boom")) == EXPECTED[cls]
    assert error_response(cls("boom"), "rid").status_code == EXPECTED[cls]


def test_status_table_only_names_watchkeeper_errors() -> None:
    assert all(issubclass(cls, e.WatchkeeperError) for cls in STATUS)


def test_most_specific_class_wins() -> None:
    class Custom(e.InvalidInput):
        pass

    class Unlisted(e.WatchkeeperError):
        pass

    assert status_of(Custom("x")) == 422
    assert status_of(Unlisted("x")) == 500


def test_error_classes_have_distinct_types() -> None:
    types = [cls.type for cls in ERROR_CLASSES]
    assert len(types) == len(set(types))


# --- the body --------------------------------------------------------------------------


def test_error_body_shape() -> None:
    error = e.NotFound("no model 'x'")
    assert error_body(error, "req-1") == {
        "error": {
            "type": "not_found",
            "message": "no model 'x'",
            "suggestion": e.NotFound.default_suggestion,
            "request_id": "req-1",
        }
    }


def test_error_body_carries_details_when_present() -> None:
    details = {"errors": [{"field": "inputs.x", "message": "field required"}]}
    body = error_body(e.InvalidInput("bad", details=details), "r")
    assert body["error"]["details"] == details
    assert set(body["error"]) == {"type", "message", "suggestion", "request_id", "details"}


def test_explicit_suggestion_wins() -> None:
    body = error_body(e.ModelError("m", suggestion="do this"), "r")
    assert body["error"]["suggestion"] == "do this"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_response_is_json_in_the_one_shape(cls: type[e.WatchkeeperError]) -> None:
    response = error_response(cls("what happened"), "rid-9")
    assert response.media_type == "application/json"
    assert response.headers["content-type"].startswith("application/json")
    assert orjson.loads(response.body) == {
        "error": {
            "type": cls.type,
            "message": "what happened",
            "suggestion": cls.default_suggestion,
            "request_id": "rid-9",
        }
    }
    assert "retry-after" not in response.headers


def test_response_serializes_odd_details() -> None:
    response = error_response(e.ModelError("m", details={"raw": b"x", "n": 3}), "r")
    assert orjson.loads(response.body)["error"]["details"] == {"raw": "b'x'", "n": 3}


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [
        (0, "1"),
        (0.01, "1"),
        (0.5, "1"),
        (1, "1"),
        (1.0, "1"),
        (1.01, "2"),
        (2.5, "3"),
        (59.9, "60"),
        (60, "60"),
        (-3, "1"),
    ],
)
def test_retry_after_is_rounded_up_to_whole_seconds(retry_after_s: float, header: str) -> None:
    response = error_response(e.Overloaded("full", retry_after_s=retry_after_s), "r")
    assert response.status_code == 429
    assert response.headers["retry-after"] == header


@pytest.mark.parametrize("cls", [e.Unavailable, e.InputQuarantined])
def test_retry_after_on_other_statuses(cls: type[e.WatchkeeperError]) -> None:
    response = error_response(cls("x", retry_after_s=299.2), "r")
    assert response.headers["retry-after"] == "300"


# --- error_from_type -------------------------------------------------------------------


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_from_type_round_trips(cls: type[e.WatchkeeperError]) -> None:
    details = {"errors": [{"field": "f", "message": "m"}]}
    rebuilt = e.error_from_type(cls.type, "the message", details=details)
    assert type(rebuilt) is cls
    assert rebuilt.type == cls.type
    assert rebuilt.message == "the message"
    assert rebuilt.details == details
    assert rebuilt.suggestion == cls.default_suggestion
    assert status_of(rebuilt) == EXPECTED[cls]


def test_unknown_type_becomes_model_error() -> None:
    rebuilt = e.error_from_type("no_such_type", "x")
    assert type(rebuilt) is e.ModelError
    assert rebuilt.details == {}
