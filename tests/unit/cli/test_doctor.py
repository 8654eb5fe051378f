"""`watchkeeper doctor`: the diagnosis rules (cli/diagnosis.py) on made-up logs, and what the
command prints: plain lines in a pipe, a table on a terminal, JSON with --json."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.cli import diagnosis
from watchkeeper.cli.doctor import plain_lines, print_report
from watchkeeper.cli.main import main


def end(model: str, total_ms: float, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"event": "request.end", "level": "info", "model": model, "status": 200,
            "total_ms": total_ms, "queue_ms": 0.1, "params": params or {"scale": 1},
            "request_id": f"r{total_ms}", **kw}


def error(model: str, kind: str, status: int, **kw: Any) -> dict[str, Any]:
    return {"event": "request.error", "level": "warning", "model": model, "status": status, "error": kind,
            "message": f"{kind} happened", "params": {"scale": 2}, **kw}


def exit_(model: str, code: int, killed_for: str | None = None, level: str = "error") -> dict[str, Any]:
    return {"event": "worker.exit", "level": level, "model": model, "replica": 0, "pid": 7,
            "exit_code": code, "exit": f"exit code {code}", "killed_for": killed_for}


def kinds(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    return {(f.kind, f.model, f.cause): f.count for f in diagnosis.diagnose(records).findings}


def test_errors_are_grouped_by_model_and_type() -> None:
    found = kinds([error("a", "deadline_exceeded", 504), error("a", "deadline_exceeded", 504),
                   error("b", "model_error", 500)])
    assert found == {("error", "a", "deadline_exceeded"): 2, ("error", "b", "model_error"): 1}


def test_restarts_are_named_by_their_cause_and_shutdown_exits_left_out() -> None:
    found = kinds([exit_("a", -9, "deadline", "warning"), exit_("a", 13), exit_("a", -11),
                   exit_("a", 3), exit_("a", 0, None, "info"), exit_("a", -9, "shutdown", "info")])
    assert found == {("restart", "a", "deadline"): 1, ("restart", "a", "crash: exit code 13"): 1,
                     ("restart", "a", "crash: exit code -11"): 1, ("restart", "a", "load_failed"): 1}


def test_a_request_shape_that_got_much_slower_is_flagged() -> None:
    slow = [end("m", ms) for ms in (3000, 3000, 2900, 3000, 3200, 21000, 20500, 21500)]
    steady = [end("m", ms, {"scale": 5}) for ms in (3000, 3100, 2900, 3000, 3200, 3300, 3100, 3000)]
    findings = [f for f in diagnosis.diagnose(slow + steady).findings if f.kind == "slowdown"]
    assert [(f.model, f.cause) for f in findings] == [("m", '{"scale": 1}')]
    assert "3.00 s early, 21.00 s recently (7.0x)" in findings[0].detail


def test_small_or_short_slowdowns_are_not_flagged() -> None:
    tiny = [end("m", ms) for ms in (2, 2, 2, 9, 9, 9)]  # 4.5x, but 7 ms
    few = [end("n", ms) for ms in (100, 5000, 6000)]  # too few requests to compare
    assert not [f for f in diagnosis.diagnose(tiny + few).findings if f.kind == "slowdown"]


def test_out_of_memory_names_the_params_that_caused_it() -> None:
    records = [{"event": "worker.out_of_memory", "level": "warning", "model": "h", "items": 1},
               error("h", "out_of_memory", 503, params={"mb": 300}),
               end("h", 50, {"mb": 100}, degraded={"from": {"mb": 200}, "to": {"mb": 100},
                                                    "reason": "out of memory at {'mb': 200}"})]
    (oom,) = [f for f in diagnosis.diagnose(records).findings if f.kind == "out_of_memory"]
    assert oom.count == 3 and '{"mb": 300}' in oom.detail and '{"mb": 200}' in oom.detail
    (degraded,) = [f for f in diagnosis.diagnose(records).findings if f.kind == "degraded"]
    assert (degraded.model, degraded.cause) == ("h", "out_of_memory")


def test_probes_failed_models_and_the_job_store_are_findings() -> None:
    found = kinds([{"event": "probe.failed", "model": "p", "error": "wrong answer", "failures": 1},
                   {"event": "model.failed", "model": "q", "reason": "setup raised"},
                   {"event": "jobs.store_failing", "fault": "full", "reason": "disk full"}])
    assert found == {("probe", "p", "wrong answer"): 1, ("model", "q", "setup raised"): 1,
                     ("jobs", "-", "full"): 1}


def test_findings_come_worst_first_each_with_a_suggestion() -> None:
    report = diagnosis.diagnose([error("a", "overloaded", 429), exit_("a", 13),
                                 {"event": "model.failed", "model": "q", "reason": "x"}])
    assert [f.kind for f in report.findings] == ["model", "restart", "error"]
    assert all(f.suggestion for f in report.findings)


def test_slowest_requests_come_with_their_params() -> None:
    rows = diagnosis.slowest([end("a", 10), end("a", 900, {"scale": 9}), end("a", 50)], top=2)
    assert [(r["total_ms"], r["params"]) for r in rows] == [(900, {"scale": 9}), (50, {"scale": 1})]


def test_lines_that_are_not_json_records_are_counted_not_fatal() -> None:
    records, bad = diagnosis.parse_lines(['{"event": "x"}', "Traceback (most recent", "", "[1]"])
    assert records == [{"event": "x"}] and bad == 2


def test_a_pipe_gets_plain_lines_and_a_terminal_a_table() -> None:
    report = diagnosis.diagnose([error("a", "deadline_exceeded", 504)])
    piped = io.StringIO()
    print_report(report, piped, tty=False)
    assert "\x1b[" not in piped.getvalue()
    assert piped.getvalue().splitlines() == plain_lines(report)
    assert "ERROR" in piped.getvalue() and "suggestion: Requests hit their deadline" in piped.getvalue()
    terminal = io.StringIO()
    print_report(report, terminal, tty=True)
    assert "┏" in terminal.getvalue() and "\x1b[33merror" in terminal.getvalue()  # yellow


def test_the_command_reads_a_file_and_answers_json(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(json.dumps(r) for r in [error("a", "model_error", 500), end("a", 5)]))
    assert main(["doctor", str(log), "--json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["requests"] == 2 and body["findings"][0]["cause"] == "model_error"


def test_a_clean_log_exits_0_and_a_missing_file_2(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "server.log"
    log.write_text(json.dumps(end("a", 5)) + "\n")
    assert main(["doctor", str(log)]) == 0
    assert "no finding" in capsys.readouterr().out
    assert main(["doctor", str(tmp_path / "nope.log")]) == 2
