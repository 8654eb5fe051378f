"""Tests of watchkeeper.logs: one JSON object per stderr line, fields, exc, idempotence."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from watchkeeper.errors import ConfigError
from watchkeeper.logs import JsonFormatter, configure_logging, log_event

TS_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("uvicorn.access").level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(access_level)


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]


def lines(err: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in err.splitlines()]


def test_each_record_is_one_json_line_with_the_core_and_static_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", process="front", replica=0)
    log = logging.getLogger("watchkeeper.test")
    log.info("server.start")
    log.warning("request.error")
    records = lines(capsys.readouterr().err)
    assert len(records) == 2
    first = records[0]
    assert list(first)[:4] == ["ts", "level", "event", "logger"]
    assert TS_PATTERN.match(first["ts"])
    assert first["level"] == "info"
    assert first["event"] == "server.start"
    assert first["logger"] == "watchkeeper.test"
    assert first["process"] == "front"
    assert first["replica"] == 0
    assert records[1]["level"] == "warning"
    assert "exc" not in first


def test_extra_fields_are_keys_and_standard_attributes_are_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(process="front")
    logging.getLogger("wk").info("request.end", extra={"status": 200, "duration_s": 0.25})
    (record,) = lines(capsys.readouterr().err)
    assert record["status"] == 200
    assert record["duration_s"] == 0.25
    for standard in ("msg", "args", "levelno", "pathname", "lineno", "created", "thread"):
        assert standard not in record
    assert record["process"] == "front"  # the static field, not LogRecord.process (the pid)


def test_log_event_writes_fields_and_accepts_names_that_clash_with_log_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(process="front")
    log = logging.getLogger("wk.supervisor")
    log_event(log, "worker.exit", model="x", pid=1, exit_code=-9, signal="SIGKILL")
    log_event(log, "worker.start", name="replica-0", module="m", process="worker")
    exit_, start = lines(capsys.readouterr().err)
    assert exit_["event"] == "worker.exit"
    assert exit_ | {"model": "x", "pid": 1, "exit_code": -9, "signal": "SIGKILL"} == exit_
    assert (start["name"], start["module"], start["process"]) == ("replica-0", "m", "worker")
    assert start["logger"] == "wk.supervisor"


def test_non_json_values_are_written_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    log = logging.getLogger("wk")
    log_event(log, "model.ready", path=Path("/data/m"), error=ValueError("bad"), big=2**70, pid=7)
    (record,) = lines(capsys.readouterr().err)
    assert record["path"] == "/data/m"
    assert record["error"] == "bad"
    assert record["big"] == str(2**70)
    assert record["pid"] == 7


def test_exc_info_adds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    log = logging.getLogger("wk")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("request.error", extra={"request_id": "r1"})
    try:
        raise KeyError("k")
    except KeyError as exc:
        log_event(log, "probe.failed", logging.ERROR, exc_info=exc, model="m")
    first, second = lines(capsys.readouterr().err)
    assert first["level"] == "error"
    assert first["request_id"] == "r1"
    assert first["exc"].startswith("Traceback")
    assert "RuntimeError: boom" in first["exc"]
    assert "KeyError: 'k'" in second["exc"]
    assert second["model"] == "m"


def test_configuring_twice_keeps_one_handler_and_takes_the_new_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", process="front")
    configure_logging("warning", process="worker", model="m")
    assert len(ours()) == 1
    log = logging.getLogger("wk")
    log.info("hidden")
    log.warning("shown")
    (record,) = lines(capsys.readouterr().err)
    assert record["event"] == "shown"
    assert (record["process"], record["model"]) == ("worker", "m")


def test_level_names_and_noisy_loggers() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("uvicorn.access").level == logging.WARNING
    with pytest.raises(ConfigError):
        configure_logging("loud")


def test_log_event_is_a_no_op_below_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning")

    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted a disabled record")

    log_event(logging.getLogger("wk"), "request.start", logging.DEBUG, value=Exploding())
    assert capsys.readouterr().err == ""


def test_log_event_points_at_its_caller(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log = logging.getLogger("wk.caller")
    handler = Keep()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log_event(log, "server.stop", reason="test")
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
    assert seen[0].funcName == "test_log_event_points_at_its_caller"
    assert seen[0].reason == "test"  # type: ignore[attr-defined]


def test_the_direct_path_writes_the_same_line_as_the_logging_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With our handler alone on the root, log_event skips the LogRecord; same line either way."""
    configure_logging(process="front", model="static")
    root = logging.getLogger()
    (handler,) = ours()
    others = [h for h in root.handlers if h is not handler]
    for other in others:  # pytest's capture handlers: without them the direct path is taken
        root.removeHandler(other)
    log = logging.getLogger("wk.direct")
    fields = {"model": "m", "pid": 3, "name": "clash", "ts": "ignored", "big": 2**70, "p": Path("/x")}
    try:
        log_event(log, "request.end", **fields)
        handler.addFilter(lambda record: True)  # any filter sends records through logging
        log_event(log, "request.end", **fields)
        handler.setLevel(logging.ERROR)
        handler.filters.clear()
        log_event(log, "request.end", **fields)  # under the handler's level: nothing
    finally:
        handler.filters.clear()
        handler.setLevel(logging.NOTSET)
        for other in others:
            root.addHandler(other)
    direct, logged = lines(capsys.readouterr().err)
    assert TS_PATTERN.match(direct["ts"]) and direct.pop("ts") != "ignored"
    logged.pop("ts")
    assert list(direct.items()) == list(logged.items())
    assert direct["model"] == "m" and direct["big"] == str(2**70)


# --- no value makes a long line ----------------------------------------------------------


def test_a_4_mb_field_is_cut_with_a_marker_and_the_others_kept(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    log_event(logging.getLogger("watchkeeper.http"), "request.error", request_id="r1",
              params={"scale": "x" * 4_000_000, "k": 3}, status=422)
    err = capsys.readouterr().err
    assert len(err) < 2000
    line = lines(err)[0]
    assert line["request_id"] == "r1" and line["status"] == 422 and line["params"]["k"] == 3
    assert line["params"]["scale"].startswith("x" * 200)
    assert re.fullmatch(r"x+…\[3,99\d,\d{3} characters cut\]", line["params"]["scale"])


def test_every_kind_of_field_is_cut_on_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    """The direct path (log_event) and the logging path (logger.info with extra=, the
    formatter) cut alike: strings, lists, dicts, bytes, objects and the event itself."""
    configure_logging("info", static_big="s" * 5000)
    logger = logging.getLogger("watchkeeper.test")
    fields: dict[str, Any] = {"items": list(range(100_000)), "nested": {"a": {"b": ["y" * 9000]}},
                              "blob": b"\x00" * 100_000, "thing": Path("p" * 3000)}
    log_event(logger, "e" * 3000, **fields)
    logger.info("e" * 3000, extra=fields)
    records = lines(capsys.readouterr().err)
    assert len(records) == 2
    for line in records:
        assert all(len(orjson.dumps(value)) < 700 for value in line.values()), line
        assert line["event"] == "e" * 512 + "…[2,488 characters cut]"
        assert line["static_big"].endswith("characters cut]")
        assert re.fullmatch(r"…\[99,\d{3} of 100,000 items cut\]", line["items"][-1])
        assert line["items"][:3] == [0, 1, 2]
        assert line["nested"]["a"]["b"][0].endswith("characters cut]")
        assert line["blob"].endswith("bytes cut]") and line["thing"].endswith("characters cut]")


def test_short_lines_are_not_touched(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    value = {"resolution": 512, "style": [1.5, None, True], "t": "é" * 100}
    log_event(logging.getLogger("watchkeeper.http"), "request.end", params=value)
    assert lines(capsys.readouterr().err)[0]["params"] == value


def test_a_long_traceback_keeps_its_head_and_its_tail(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    try:
        raise ValueError("z" * 100_000 + " the end")
    except ValueError:
        logging.getLogger("watchkeeper.test").exception("failed")
    exc = lines(capsys.readouterr().err)[0]["exc"]
    assert exc.startswith("Traceback (most recent call last):")
    assert exc.endswith(" the end") and "characters cut]…" in exc
    assert len(exc) < 17_000
