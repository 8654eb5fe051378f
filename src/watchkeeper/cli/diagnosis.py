"""What ``watchkeeper doctor`` finds in a server's JSON log: pure functions over its records.

Runs in the CLI process, on records already parsed (one dict per log line, as
``watchkeeper.logs`` writes them); no I/O, no clock, so every rule is tested on plain lists.
:func:`diagnose` turns the records into :class:`Finding` rows, worst first, each with its
evidence and one suggestion:

- ``error``: failed requests (``request.error``) by model and error type, timeouts included;
- ``restart``: worker exits (``worker.exit``) by model and cause (the kill reason, or how it died);
- ``out_of_memory``: out-of-memory errors of workers and requests, with the params that caused them;
- ``degraded``: answers given with smaller params (``request.end`` with ``degraded``);
- ``slowdown``: one model and params shape whose recent latency is several times its early one;
- ``probe``, ``model``, ``jobs``: failing deep probes, failed models, a failing job store.

:func:`slowest` lists the slowest successful requests with their params.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "Report", "SLOWDOWN_MIN_DELTA_S", "SLOWDOWN_RATIO", "diagnose", "parse_lines",
           "slowest"]

Record = Mapping[str, Any]

#: A shape is flagged when its recent median latency is this many times its early one...
SLOWDOWN_RATIO = 2.0
#: ...and at least this many seconds longer (so 2 ms becoming 5 ms is not news).
SLOWDOWN_MIN_DELTA_S = 0.2
#: Requests of one shape needed to compare its early latency with its recent one.
SLOWDOWN_MIN_REQUESTS = 4
#: Severity order of finding kinds, worst first.
_SEVERITY = ("model", "jobs", "restart", "out_of_memory", "error", "probe", "slowdown", "degraded")

_ERROR_ADVICE = {
    "deadline_exceeded": "Requests hit their deadline: look for hangs (worker.killed reason deadline), "
                         "add replicas if they waited in the queue, or raise timeout_s.",
    "overloaded": "The queue was full (429): add replicas or raise max_queue; clients should honour "
                  "Retry-After.",
    "unavailable": "No replica could serve (or the expected wait exceeded the deadline): check the model's "
                   "state in /health and add replicas if it is load.",
    "out_of_memory": "Requests did not fit in memory: allow degrading, lower the params, or give the model "
                     "more memory (memory_budget_mb, a larger device).",
    "input_quarantined": "An input killed two workers and is refused for a while: find it by request_id "
                         "and fix the model for it.",
    "worker_crashed": "The worker died under the request: see the restart finding for how it died.",
    "model_error": "The model raised: read the `model raised` traceback in the worker's lines.",
    "internal_error": "A bug in watchkeeper: report the `unhandled error` line with its traceback.",
}
_RESTART_ADVICE = {
    "deadline": "Workers were killed for a missed deadline: a request hung or ran too long; "
                "find its params in the errors, raise timeout_s if the work is legitimately long.",
    "heartbeat": "Workers went silent while idle (frozen or holding the GIL): look for native code or a "
                 "busy loop in the model.",
    "oom": "Workers were recycled after running out of memory: look for a leak "
           "(watchkeeper_worker_rss_bytes) or set memory_limit_mb with room to spare.",
    "probe": "Workers were replaced after failing deep probes: the model answers wrongly; check its weights.",
    "load_failed": "Workers could not load the model: read worker.load_failed (stage, error).",
    "load_timeout": "Loading took longer than load_timeout_s: raise it, or warm the model cache.",
    "operator": "An operator restarted the model (POST /admin/models/NAME/restart).",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the log shows, with how often, its evidence and what to do."""

    kind: str
    model: str
    cause: str
    count: int
    detail: str
    suggestion: str
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``watchkeeper doctor`` prints."""

    records: int
    unreadable: int
    requests: int
    findings: list[Finding]
    slowest: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "unreadable_lines": self.unreadable, "requests": self.requests,
                "findings": [f.to_dict() for f in self.findings], "slowest": self.slowest}


def parse_lines(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects among ``lines``, and how many non-blank lines were not one."""
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict) and "event" in record:
            records.append(record)
        else:
            bad += 1
    return records, bad


def _events(records: Iterable[Record], *names: str) -> list[Record]:
    return [r for r in records if r.get("event") in names]


def _shape(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=str) if params is not None else "{}"


def _example(record: Record, *keys: str) -> dict[str, Any]:
    return {k: record.get(k) for k in ("ts", "request_id", *keys) if record.get(k) is not None}


def errors(records: Iterable[Record]) -> list[Finding]:
    """Failed requests by model and error type."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in _events(records, "request.error"):
        groups[(str(r.get("model")), str(r.get("error")))].append(r)
    findings = []
    for (model, error), rows in groups.items():
        statuses = ", ".join(sorted({str(r.get("status")) for r in rows}))
        findings.append(Finding(
            "error", model, error, len(rows),
            f"{len(rows)} x {error} ({statuses}): {rows[-1].get('message')}",
            _ERROR_ADVICE.get(error, "Client errors: check what the clients send (the message says what)."),
            [_example(r, "status", "params", "total_ms") for r in rows[-3:]]))
    return findings


def exit_cause(record: Record) -> str:
    """Why a worker ended: the front's kill reason, else how it died (``crash: signal SIGSEGV``)."""
    if record.get("killed_for"):
        return str(record["killed_for"])
    code = record.get("exit_code")
    if code == 3:
        return "load_failed"
    if code == 4:
        return "import_failed"
    return f"crash: {record.get('exit') or f'exit code {code}'}"


def restarts(records: Iterable[Record]) -> list[Finding]:
    """Worker exits by model and cause; exits during a shutdown (logged at info) are left out."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in _events(records, "worker.exit"):
        if r.get("level") != "info" and r.get("killed_for") not in ("shutdown", "model_failed"):
            groups[(str(r.get("model")), exit_cause(r))].append(r)
    findings = []
    for (model, cause), rows in groups.items():
        advice = _RESTART_ADVICE.get(cause) or (
            "Workers crashed: a segfault points at native code (a library, a driver), an exit code at "
            "the model calling exit; the replacement is started with a back-off.")
        findings.append(Finding("restart", model, cause, len(rows), f"{len(rows)} worker exit(s): {cause}",
                                advice, [_example(r, "replica", "pid", "exit") for r in rows[-3:]]))
    return findings


def out_of_memory(records: Iterable[Record]) -> list[Finding]:
    """Out-of-memory errors in workers and requests, by model, with the params that caused them."""
    records = list(records)
    workers = Counter(str(r.get("model")) for r in _events(records, "worker.out_of_memory"))
    params: dict[str, list[Any]] = defaultdict(list)
    for r in _events(records, "request.error"):
        if r.get("error") == "out_of_memory":
            params[str(r.get("model"))].append(r.get("params"))
    for r in _events(records, "request.end"):
        reason = str((r.get("degraded") or {}).get("reason", ""))
        if reason.startswith("out of memory"):
            params[str(r.get("model"))].append((r.get("degraded") or {}).get("from"))
    findings = []
    for model in sorted(set(workers) | set(params)):
        shapes = Counter(_shape(p) for p in params[model])
        worst = ", ".join(f"{shape} ({n}x)" for shape, n in shapes.most_common(3)) or "unknown"
        count = workers[model] + len(params[model])
        findings.append(Finding(
            "out_of_memory", model, "memory", count,
            f"{workers[model]} worker out-of-memory error(s); params that did not fit: {worst}",
            "Declare estimate_memory and degrade in the model (the server then plans around it), lower the "
            "default params, or set memory_budget_mb / memory_limit_mb to what the device really has.",
            [{"params": json.loads(shape), "count": n} for shape, n in shapes.most_common(3)]))
    return findings


def degradations(records: Iterable[Record]) -> list[Finding]:
    """Answers given with smaller params than asked, by model and cause."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in _events(records, "request.end"):
        degraded = r.get("degraded")
        if degraded:
            cause = "memory" if str(degraded.get("reason", "")).startswith("memory") else "out_of_memory"
            groups[(str(r.get("model")), cause)].append(r)
    return [Finding("degraded", model, cause, len(rows),
                    f"{len(rows)} answer(s) degraded: {rows[-1]['degraded'].get('reason')}",
                    "Clients got smaller results than asked: give the model more memory, run fewer large "
                    "requests at once, or lower the default params.",
                    [{"ts": r.get("ts"), "request_id": r.get("request_id"), "from": r["degraded"].get("from"),
                      "to": r["degraded"].get("to")} for r in rows[-3:]])
            for (model, cause), rows in groups.items()]


def slowdowns(records: Iterable[Record]) -> list[Finding]:
    """Per model and params shape, in log order: its recent median latency against its early one."""
    series: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in _events(records, "request.end"):
        if isinstance(r.get("total_ms"), (int, float)):
            series[(str(r.get("model")), _shape(r.get("params")))].append(float(r["total_ms"]) / 1000)
    findings = []
    for (model, shape), seconds in series.items():
        if len(seconds) < SLOWDOWN_MIN_REQUESTS:
            continue
        window = max(2, len(seconds) // 4)
        early, recent = statistics.median(seconds[:window]), statistics.median(seconds[-window:])
        if recent >= SLOWDOWN_RATIO * early and recent - early >= SLOWDOWN_MIN_DELTA_S:
            findings.append(Finding(
                "slowdown", model, shape, len(seconds),
                f"params {shape}: {early:.2f} s early, {recent:.2f} s recently ({recent / early:.1f}x)",
                "The same work got slower: a leak or fragmentation in the worker (watch "
                "watchkeeper_worker_rss_bytes), a contended device, or a queue; restart the model "
                "to compare.",
                [{"early_s": round(early, 3), "recent_s": round(recent, 3), "requests": len(seconds)}]))
    return findings


def _simple(records: list[Record], event: str, kind: str, cause_key: str, advice: str) -> list[Finding]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in _events(records, event):
        groups[str(r.get("model", "-"))].append(r)
    return [Finding(kind, model, str(rows[-1].get(cause_key)), len(rows),
                    f"{len(rows)} x {event}: {rows[-1].get(cause_key)}", advice,
                    [_example(rows[-1], cause_key)])
            for model, rows in groups.items()]


def diagnose(records: Iterable[Record], unreadable: int = 0, top: int = 5) -> Report:
    """Every finding of the log, worst kind first and then by count."""
    records = list(records)
    findings = (errors(records) + restarts(records) + out_of_memory(records) + degradations(records)
                + slowdowns(records)
                + _simple(records, "probe.failed", "probe", "error",
                          "The deep probe fails: the model answers wrongly or not at all; /health shows the "
                          "last probe. The model becomes unready after two failures in a row.")
                + _simple(records, "model.failed", "model", "reason",
                          "The model cannot load: fix the cause, then POST /admin/models/NAME/restart.")
                + _simple(records, "jobs.store_failing", "jobs", "fault",
                          "The job store takes no writes: free disk space or fix the data dir (see fault)."))
    findings.sort(key=lambda f: (_SEVERITY.index(f.kind), -f.count, f.model, f.cause))
    requests = len(_events(records, "request.end", "request.error"))
    return Report(len(records), unreadable, requests, findings, slowest(records, top))


def slowest(records: Iterable[Record], top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` slowest successful requests, with their params and where their time went."""
    ended = [r for r in _events(records, "request.end") if isinstance(r.get("total_ms"), (int, float))]
    ended.sort(key=lambda r: -float(r["total_ms"]))
    return [_example(r, "model", "total_ms", "queue_ms", "inference_ms", "params", "worker_pid")
            for r in ended[:top]]
