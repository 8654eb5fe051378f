"""The ``watchkeeper jobs`` CLI without a server: its argument parsing, and ``wait`` against
an in-process ``httpx.MockTransport`` playing the server: an event stream read by httpx-sse and
shown as plain lines, and what a real server cannot easily be made to do (a stream dropped
mid-job or mid-event, no event stream at all).

``NAME=VALUE`` values are in test_cli_assignments.py, the display in test_cli_progress.py; the
commands against real servers, in subprocesses, in tests/integration/test_cli_jobs.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from watchkeeper.cli import jobs as cli_jobs
from watchkeeper.cli.jobs import EXIT_OK, EXIT_UNREACHABLE, wait_job
from watchkeeper.cli.main import main
from watchkeeper.cli.progress import ProgressDisplay

BASE = "http://wk.test"

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


# --- wait, against an in-process httpx.MockTransport ---------------------------------------


def job(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "model": "m", "state": state, "progress": 0.0, "message": "", **extra}


def sse(*events: tuple[int, str, dict[str, Any]]) -> bytes:
    return b"".join(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n: keep-alive\n\n".encode()
                    for i, kind, data in events)


EVENT_STREAM = {"content-type": "text/event-stream; charset=utf-8"}


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait`` pauses a second between polls and reconnections; not here."""
    monkeypatch.setattr(cli_jobs, "POLL_INTERVAL_S", 0.01)


def run_wait_on_mock_server(handler: Callable[[httpx.Request], httpx.Response],
                            max_wait: float | None = 10) -> tuple[int, dict[str, Any] | None, list[str]]:
    """``wait`` for job j1, its progress not on a terminal and its clock stopped (0.0s)."""
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False, clock=lambda: 0.0)
    with httpx.Client(transport=httpx.MockTransport(handler), timeout=5) as client:
        code, final = wait_job(client, BASE, "j1", max_wait, display)
    return code, final, out.getvalue().splitlines()


def test_an_event_stream_is_shown_as_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """CRLF line ends, comments, data over two lines, and chunks cut anywhere: the stream is
    read by httpx-sse; the display prints state changes and 10 % steps."""
    stream = (b": hello\r\n\r\n" + sse((1, "state", {"state": "queued", "progress": 0.0}))
              + b'id: 2\r\nevent: state\r\ndata: {"state":\r\ndata: "running"}\r\n\r\n'
              + sse((3, "progress", {"progress": 0.25, "message": "frame 8/32"}),
                    (4, "progress", {"progress": 0.28, "message": "frame 9/32"}),
                    (5, "progress", {"progress": 0.5, "message": "frame 16/32"}),
                    (6, "message", {"state": "failed"}),  # not a job event: ignored
                    (7, "state", {"state": "succeeded", "progress": 1.0, "message": "frame 32/32"})))
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers=EVENT_STREAM,
                                  content=iter([stream[i:i + 7] for i in range(0, len(stream), 7)]))
        return httpx.Response(200, json=job("succeeded", progress=1.0) if requests[1:] else job("queued"))

    code, final, shown = run_wait_on_mock_server(handler)
    assert code == EXIT_OK and final == job("succeeded", progress=1.0)
    assert shown == [
        "[....................]   0%  queued 0.0s",
        "[....................]   0%  running 0.0s",
        "[#####...............]  25%  frame 8/32  running 0.0s",
        "[##########..........]  50%  frame 16/32  running 0.0s",
        "[####################] 100%  frame 32/32  succeeded 0.0s",
    ]
    events = [r for r in requests if r.url.path == "/v1/jobs/j1/events"]
    assert len(events) == 1 and events[0].headers["accept"] == "text/event-stream"
    assert "last-event-id" not in events[0].headers
    assert capsys.readouterr().err == "job j1 succeeded\n"


@pytest.mark.parametrize("ending", ["reset", "closed"])
def test_a_stream_cut_mid_job_is_resumed_with_last_event_id(ending: str) -> None:
    """The connection ends after event 2 and half of event 3 (a reset, or a server closing as
    it restarts): ``wait`` reconnects after event 2, the last one whole, and shows no event twice."""
    seen: list[str | None] = []

    def cut() -> Iterator[bytes]:
        yield sse((1, "state", {"state": "running"}), (2, "progress", {"progress": 0.3, "message": ""}))
        yield b'id: 3\nevent: progress\ndata: {"progress": 0.9, "message": "half an event"}\n'
        if ending == "reset":
            raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=job("succeeded", progress=1.0) if seen[1:] else job("queued"))
        seen.append(request.headers.get("last-event-id"))
        if len(seen) == 1:
            return httpx.Response(200, headers=EVENT_STREAM, content=cut())
        return httpx.Response(200, headers=EVENT_STREAM, content=sse(
            (3, "progress", {"progress": 0.6, "message": "again"}),
            (4, "state", {"state": "succeeded", "progress": 1.0, "message": ""})))

    code, _, shown = run_wait_on_mock_server(handler)
    assert code == EXIT_OK and seen == [None, "2"]
    assert shown == [
        "[....................]   0%  running 0.0s",
        "[######..............]  30%  running 0.0s",
        "[############........]  60%  again  running 0.0s",
        "[####################] 100%  succeeded 0.0s",
    ]


@pytest.mark.parametrize("answer", [
    httpx.Response(404, json={"detail": "Not Found"}),
    httpx.Response(200, headers={"content-type": "text/html"}, text="<html>a proxy's page</html>"),
])
def test_without_an_event_stream_the_job_is_polled(answer: httpx.Response) -> None:
    """E.g. a proxy in front of the server that does not pass /events through."""
    states = iter(["queued", "queued", "running", "succeeded"])
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path.endswith("/events"):
            return answer
        return httpx.Response(200, json=job(next(states)))

    code, final, shown = run_wait_on_mock_server(handler)
    assert code == EXIT_OK and final is not None and final["state"] == "succeeded"
    assert [line.split()[-2] for line in shown] == ["queued", "running", "succeeded"]
    assert asked.count("/v1/jobs/j1/events") == 1  # asked once, then polled
