"""HTTP status codes and the error body (``watchkeeper.http.errors``)."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from watchkeeper import errors as e
from watchkeeper.front.api_keys import Scope
from watchkeeper.http.errors import STATUS, error_body, error_response, public_error, status_of
from watchkeeper.http.guard import ANONYMOUS, Principal

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


# --- no leaks: what a caller may see ------------------------------------------------------

CLIENT = Principal("web", frozenset({Scope.PREDICT, Scope.JOBS}))
ADMIN = Principal("ops", frozenset({Scope.ADMIN}))
MODEL_RAISED = e.ModelError("ValueError: bad pixel in /home/me/model/weights.bin",
                            details={"frames": ["/srv/app.py:12"]})


def test_a_model_error_is_reduced_to_its_type_for_a_non_admin_caller() -> None:
    body = error_body(MODEL_RAISED, "rid-7", CLIENT)["error"]
    assert body == {"type": "model_error", "message": "the model raised ValueError",
                    "suggestion": body["suggestion"], "request_id": "rid-7"}
    assert "rid-7" in body["suggestion"] and "log" in body["suggestion"]
    assert "bad pixel" not in orjson.dumps(body).decode()


@pytest.mark.parametrize("principal", [ADMIN, ANONYMOUS], ids=["admin", "anonymous"])
def test_an_admin_sees_the_whole_error(principal: Principal) -> None:
    body = error_body(MODEL_RAISED, "r", principal)["error"]
    assert body["message"] == MODEL_RAISED.message and body["details"] == MODEL_RAISED.details


def test_paths_are_replaced_for_a_non_admin_caller_and_api_paths_kept() -> None:
    error = e.Unavailable("job store /var/lib/wk/jobs.sqlite3 is gone; see '/tmp/x y' or C:\\data\\a",
                          suggestion="GET /v1/jobs/abc/events, /health and /admin/models/m/restart",
                          details={"file": "/etc/passwd", "n": 3, "ratio": "1/2"})
    body = error_body(error, "r", CLIENT)["error"]
    assert body["message"] == "job store <path> is gone; see '<path> y' or <path>"
    assert body["suggestion"] == error.suggestion
    assert body["details"] == {"file": "<path>", "n": 3, "ratio": "1/2"}
    assert error_body(error, "r", ADMIN)["error"]["message"] == error.message


def test_a_model_error_of_watchkeepers_own_keeps_its_text() -> None:
    error = e.ModelError("predict_batch returned 3 outputs for 2 inputs")
    assert error_body(error, "r", CLIENT)["error"]["message"] == error.message


def test_a_stored_job_error_passes_the_same_redaction() -> None:
    stored = {"type": "model_error", "message": "KeyError: 'secret'", "suggestion": "s"}
    shown = public_error(stored, CLIENT, "job-req")
    assert shown["message"] == "the model raised KeyError" and "job-req" in shown["suggestion"]
    assert public_error(stored, ADMIN, "job-req")["message"] == "KeyError: 'secret'"


async def _sent_body(response: object, scope: dict[str, object]) -> bytes:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    await response(scope, receive, send)  # type: ignore[operator]
    start = sent[0]
    length = dict(start["headers"])[b"content-length"]  # type: ignore[call-overload]
    body = sent[1]["body"]
    assert int(length) == len(body)  # type: ignore[arg-type]
    return body  # type: ignore[return-value]


@pytest.mark.parametrize(("principal", "leaks"), [(CLIENT, False), (ADMIN, True), (None, False)])
def test_a_response_without_a_principal_is_made_for_the_scopes_caller(
        principal: Principal | None, leaks: bool) -> None:
    scope = {"type": "http", "state": {} if principal is None else {"principal": principal}}
    body = asyncio.run(_sent_body(error_response(MODEL_RAISED, "r"), scope))
    assert (b"bad pixel" in body) is leaks
