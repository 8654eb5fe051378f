"""Health verdicts from model and resource states (``watchkeeper.front.health``)."""

from __future__ import annotations

import pytest

from watchkeeper.front.health import SERVING_STATES, is_ready, overall_status
from watchkeeper.http.health import health_status


def test_serving_states() -> None:
    assert SERVING_STATES == {"ready", "degraded"}


@pytest.mark.parametrize(
    ("states", "ready"),
    [
        ({}, True),
        ({"a": "ready"}, True),
        ({"a": "ready", "b": "degraded"}, True),
        ({"a": "ready", "b": "starting"}, False),
        ({"a": "failed"}, False),
        ({"a": "unready"}, False),
    ],
)
def test_is_ready(states: dict[str, str], ready: bool) -> None:
    assert is_ready(states) is ready


def test_not_ready_while_shutting_down() -> None:
    assert is_ready({"a": "ready"}, shutting_down=True) is False
    assert is_ready({}, shutting_down=True) is False


@pytest.mark.parametrize(
    ("states", "resources", "shutting_down", "expected"),
    [
        ({"a": "ready"}, "ok", False, "ok"),
        ({}, "ok", False, "ok"),
        ({"a": "ready", "b": "degraded"}, "ok", False, "degraded"),
        ({"a": "ready"}, "warning", False, "degraded"),
        ({"a": "ready"}, "critical", False, "fail"),
        ({"a": "ready", "b": "failed"}, "ok", False, "fail"),
        ({"a": "starting"}, "ok", False, "fail"),
        ({"a": "ready"}, "ok", True, "fail"),
        ({"a": "degraded"}, "critical", False, "fail"),
    ],
)
def test_overall_status(
    states: dict[str, str], resources: str, shutting_down: bool, expected: str
) -> None:
    assert overall_status(states, resources, shutting_down) == expected


@pytest.mark.parametrize(("status", "code"), [("ok", 200), ("degraded", 200), ("fail", 503)])
def test_http_status(status: str, code: int) -> None:
    assert health_status(status) == code
