"""The ``watchkeeper jobs`` CLI without a server: its pure pieces (``cli_progress``), its
argument parsing, and what a real server cannot easily be made to do (a stream dropped mid-job,
no event stream at all), played by an in-process ``httpx.MockTransport``.

The commands against real servers, in subprocesses, are in tests/integration/test_cli_jobs.py.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from watchkeeper.cli import jobs as cli_jobs
from watchkeeper.cli.jobs import EXIT_OK, EXIT_UNREACHABLE, wait_job
from watchkeeper.cli.main import main
from watchkeeper.cli.progress import (
    ProgressDisplay,
    SseEvent,
    SseParser,
    format_bar,
    parse_assignment,
    parse_file_assignment,
    parse_value,
    percent,
)

BASE = "http://wk.test"

# --- NAME=VALUE ---------------------------------------------------------------------------


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


# --- SSE ----------------------------------------------------------------------------------


def parse_sse(text: str, parser: SseParser | None = None) -> list[SseEvent]:
    return list((parser or SseParser()).feed_lines(text.splitlines()))


def test_sse_events_with_ids_types_comments_and_multiline_data() -> None:
    stream = (": keep-alive\n\nid: 1\nevent: state\ndata: {\"state\": \"running\"}\n\n"
              ": keep-alive\nid: 2\nevent: progress\n"
              "data: {\"progress\": 0.5,\ndata:  \"message\": \"x\"}\n\n"
              "data:no-space\n\n")
    parser = SseParser()
    assert parse_sse(stream, parser) == [
        SseEvent("1", "state", '{"state": "running"}'),
        SseEvent("2", "progress", '{"progress": 0.5,\n "message": "x"}'),
        SseEvent("2", "message", "no-space"),  # the last id carries on; the type defaults
    ]
    assert parser.last_id == "2"


def test_sse_handles_crlf_and_keeps_partial_events_until_the_blank_line() -> None:
    parser = SseParser()
    assert parser.feed("id: 7\r\n") is None
    assert parser.feed("event: state\r\n") is None
    assert parser.feed("data: {}\r\n") is None
    assert parser.feed("\r\n") == SseEvent("7", "state", "{}")


def test_sse_ignores_events_without_data_unknown_fields_and_nul_ids() -> None:
    parser = SseParser(last_id="3")
    assert parse_sse("event: state\n\nretry: 100\nfoo: bar\n\nid: a\0b\ndata: x\n\n", parser) == [
        SseEvent("3", "message", "x")]
    assert parse_sse("data: unfinished") == []


# --- progress -----------------------------------------------------------------------------


def test_format_bar_looks_like_the_spec() -> None:
    assert format_bar(0.5, "frame 16/32", "running", 12.34) == \
        "[##########..........]  50%  frame 16/32  running 12.3s"


@pytest.mark.parametrize(("progress", "bar", "shown"), [
    (0.0, "." * 20, "  0%"), (1.0, "#" * 20, "100%"), (1.7, "#" * 20, "100%"), (-0.2, "." * 20, "  0%"),
    (float("nan"), "." * 20, "  0%"), (0.29, "#" * 5 + "." * 15, " 29%"), (0.999, "#" * 19 + ".", " 99%"),
])
def test_format_bar_clamps_and_rounds_down(progress: float, bar: str, shown: str) -> None:
    assert format_bar(progress, "", "queued", 0) == f"[{bar}] {shown}  queued 0.0s"


@pytest.mark.parametrize(("progress", "shown"), [
    (0.0, 0), (0.29, 29), (0.999, 99), (1.0, 100), (2.0, 100), (-1.0, 0), (float("nan"), 0)])
def test_percent_clamps_and_rounds_down(progress: float, shown: int) -> None:
    assert percent(progress) == shown


def test_format_bar_cleans_and_shortens_the_message() -> None:
    line = format_bar(0.1, "a\nb\x1b[2J\r\tc " + "x" * 100, "running", 1, width=10)
    assert line.startswith("[#.........]  10%  a b [2J c xxx")
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert "…  running 1.0s" in line and len(line) < 100


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_without_a_tty_prints_state_changes_and_ten_percent_steps() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=False, clock=clock)
    display.update("queued", 0.0, "")
    clock.now += 2
    display.update("running", 0.0, "")
    for step in range(1, 33):
        clock.now += 0.5
        display.update("running", step / 32, f"frame {step}/32")
    display.update("succeeded", 1.0, "done")
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[....................]   0%  queued 0.0s"
    assert lines[1] == "[....................]   0%  running 0.0s"
    assert [line.split("%")[0][-3:].strip() for line in lines[2:-1]] == [
        "12", "21", "31", "40", "50", "62", "71", "81", "90", "100"]
    assert lines[6] == "[##########..........]  50%  frame 16/32  running 8.0s"
    assert lines[-1] == "[####################] 100%  done  succeeded 0.0s"


def test_progress_on_a_tty_redraws_one_line() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, clock=Clock())
    display.update("running", 0.25, "a")
    display.update("running", 0.5, "b")
    display.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "\r[#####...............]  25%  a  running 0.0s\x1b[K" in text


# --- argument parsing ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["jobs", "submit", "m", "--param", "oops"],
    ["jobs", "submit", "m", "--input", "=5"],
    ["jobs", "submit", "m", "--file", "image"],
    ["jobs", "submit"],
    ["jobs"],
    ["jobs", "wait", "j", "--max-wait", "-1"],
    ["jobs", "wait", "j", "--max-wait", "soon"],
    ["jobs", "result", "j"],
    ["jobs", "list", "--state", "sleeping"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_param_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["jobs", "submit", "m", "--param", "oops"])
    assert "argument --param: expected NAME=VALUE, got 'oops'" in capsys.readouterr().err


def test_an_input_given_twice_is_refused_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["jobs", "submit", "m", "--image", "a.png", "--file", "image=b.png", "--input", "x=1",
            "--url", "http://127.0.0.1:9"]
    assert main(argv) == EXIT_UNREACHABLE
    assert "an input is given twice: image\n" in capsys.readouterr().err


def test_a_file_that_is_not_there_is_refused_before_any_request(tmp_path: Any,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["jobs", "submit", "m", "--image", str(tmp_path / "nope.png"), "--url", "http://127.0.0.1:9"]
    assert main(argv) == EXIT_UNREACHABLE
    assert "cannot read" in capsys.readouterr().err


# --- what a real server cannot easily do: an in-process httpx.MockTransport plays it ---------


def job(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "model": "m", "state": state, "progress": 0.0, "message": "", **extra}


def sse(*events: tuple[int, str, dict[str, Any]]) -> bytes:
    return b"".join(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n: keep-alive\n\n".encode()
                    for i, kind, data in events)


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait`` pauses a second between polls and reconnections; not here."""
    monkeypatch.setattr(cli_jobs, "POLL_INTERVAL_S", 0.01)


def run_wait_on_mock_server(handler: Callable[[httpx.Request], httpx.Response],
                            max_wait: float | None = 10) -> tuple[int, dict[str, Any] | None, str]:
    out = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(handler), timeout=5) as client:
        code, final = wait_job(client, BASE, "j1", max_wait, ProgressDisplay(out, tty=False))
    return code, final, out.getvalue()


def test_mock_server_drops_the_stream_mid_job_and_wait_resumes_with_last_event_id() -> None:
    seen: list[str | None] = []

    def dropped() -> Iterator[bytes]:
        yield sse((1, "state", {"state": "running"}), (2, "progress", {"progress": 0.3, "message": ""}))
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=job("succeeded" if seen[1:] else "queued"))
        seen.append(request.headers.get("last-event-id"))
        headers = {"content-type": "text/event-stream"}
        if len(seen) == 1:
            return httpx.Response(200, headers=headers, content=dropped())
        return httpx.Response(200, headers=headers, content=sse((3, "state", {"state": "succeeded"})))

    code, _, shown = run_wait_on_mock_server(handler)
    assert code == EXIT_OK and seen == [None, "2"]
    assert " 30%  running" in shown


def test_mock_server_without_an_event_stream_is_polled() -> None:
    """E.g. a proxy in front of the server that does not pass /events through."""
    states = iter(["queued", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json=job(next(states)))

    code, final, shown = run_wait_on_mock_server(handler)
    assert code == EXIT_OK and final is not None and "running" in shown
