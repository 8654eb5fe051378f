"""JSON-lines logging to stderr, for both the front process and the worker processes.

Nothing here runs at import: each entry point (the front's ``serve`` command, each spawned
worker's main) calls :func:`configure_logging` once, with the static fields that tell its
lines apart, e.g. ``process="front"`` or ``process="worker", model="cartoon", replica=0``.
Every line on stderr is then one JSON object::

    {"ts": "2026-11-22T01:50:27.123Z", "level": "info", "event": "request.end",
     "logger": "watchkeeper.http", "process": "front", "request_id": "9f1c...",
     "model": "cartoon", "status": 200, "queue_ms": 0.4, "inference_ms": 88.1, ...}

Keys, in order: ``ts`` (UTC, milliseconds), ``level``, ``event`` (the log message),
``logger``, the static fields, then the fields the call passed (``extra=`` or
:func:`log_event` keywords), then ``exc`` (the formatted traceback) when the record carries
``exc_info``. The four first keys cannot be overridden by fields; a call's fields override
static fields of the same name. Values JSON cannot hold are written with ``str()``.

No value makes a long line: every field (the event, static fields, the call's fields) is cut
to about ``MAX_VALUE_CHARS`` characters of JSON, strings keeping their head and containers
their first items, each cut marked with how much was left out (``"xxxx…[4,193,792
characters cut]"``, ``"…[9,990 of 10,000 items cut]"``); a traceback keeps its first and
last ``MAX_TRACEBACK_CHARS / 2`` characters. A line that is short as a whole costs no check.

Events are short dotted names, so logs can be filtered on ``event`` alone:

- ``server.start``                the front's models are starting (models)
- ``server.stop``                 the front has stopped every worker
- ``request.start``               (debug) a predict request was read (request_id, model, params,
                                  timeout_s)
- ``request.end``                 it was answered 200 (status, queue_ms, inference_ms, total_ms,
                                  worker_pid, attempts, params, timeout_s)
- ``request.error``               it was answered with an error (status, error, message, total_ms,
                                  params, timeout_s)
- ``worker.start``                a worker process was spawned (model, replica, pid)
- ``worker.loaded``               (worker) the model is set up and warm (device, startup_ms)
- ``worker.ready``                (front) a worker counts as ready (pid, startup_ms, since_spawn_ms)
- ``worker.exit``                 a worker process ended (pid, exit_code, exit, killed_for)
- ``worker.killed``               the front SIGKILLed a worker (pid, reason: deadline, heartbeat,
                                  probe, operator, load_timeout, model_failed, shutdown)
- ``worker.load_failed``          a worker could not import, set up or warm its model (stage, error)
- ``model.failed``                a model is FAILED: loading failed load_retries times (reason)
- ``probe.failed``                a canary inference failed or gave a wrong answer (error, failures)
- ``resources.read_failed``       reading memory, disk or GPU figures for /health failed (error)
- ``resources.recovered``         readings work again after a failure (previous_error)
- ``resources.nvml_unavailable``  (debug) no GPU readings: NVML could not start (error)
- ``connection.header_timeout``   a client sent part of a request head, then stalled: 408 and
                                  closed (client, received_bytes, client_header_timeout_s)
- ``connection.body_timeout``     a request's body did not arrive in time: 408 and closed
                                  (request_id, client, method, path, received_bytes, after_s)
- ``connection.head_too_large``   a request head over server.max_head_kib: 431 and closed
- ``connection.bad_request``      (info) the HTTP parser refused a request: 400 and closed (error)
- ``connection.evicted``          idle connections closed past server.max_connections
                                  (connections: how many since the last such line; once a second)
- ``connection.over_capacity``    past server.max_connections with none idle: new requests get
                                  503, probes are answered (connections; once a second)
- ``job.stream_failed``           a job's event feed could not read the store: its streams end
                                  (job_id, error); clients resume with Last-Event-ID
- ``server.open_files_limit``     the open-files limit is below server.max_connections (open_files)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from watchkeeper.errors import ConfigError

__all__ = ["JsonFormatter", "configure_logging", "log_event"]

#: Loggers that log every request or connection at INFO; kept at WARNING.
NOISY_LOGGERS: tuple[str, ...] = ("uvicorn.access", "httpx", "httpcore")

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD_ATTRS: frozenset[str] = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn adds color_message

# Fields of log_event whose names clash with LogRecord attributes travel under this key.
_CLASH_KEY = "_wk_fields"
_CORE_KEYS = ("ts", "level", "event", "logger")
_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
#: Longest a logged value may be, in characters of JSON (about; a client's 4 MB param is
#: logged as its first MAX_VALUE_CHARS characters and a marker saying how many were cut).
MAX_VALUE_CHARS = 512
#: Longest a traceback (``exc``, ``stack``) may be: its head and tail are kept.
MAX_TRACEBACK_CHARS = 16384
_TRACEBACK_KEYS = frozenset({"exc", "stack"})
_MAX_LOG_DEPTH = 16


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no trailing newline); see the module docstring."""

    def __init__(self, static: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.static: dict[str, object] = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        payload: dict[str, object] = dict(self.static)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key != _CLASH_KEY:
                payload[key] = value
        payload.update(getattr(record, _CLASH_KEY, None) or {})
        payload.update(
            ts=_iso_utc(record),
            level=record.levelname.lower(),
            event=record.getMessage(),
            logger=record.name,
        )
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        ordered = {key: payload.pop(key) for key in _CORE_KEYS}
        ordered.update(payload)
        return _dumps(ordered)


class _StderrHandler(logging.Handler):
    """Writes each formatted record and a newline to whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_event(self, logger: str, level: int, event: str, fields: Mapping[str, object]) -> None:
        """The line ``emit`` would write for ``log_event``'s record, built directly."""
        formatter = self.formatter
        static = formatter.static if isinstance(formatter, JsonFormatter) else {}
        payload: dict[str, object] = {"ts": _iso_time(time.time()),
                                      "level": logging.getLevelName(level).lower(),
                                      "event": event, "logger": logger}
        rest = dict(static)  # then the fields, those named like LogRecord attributes last:
        rest.update((k, v) for k, v in fields.items() if k not in _STANDARD_ATTRS)
        rest.update((k, v) for k, v in fields.items() if k in _STANDARD_ATTRS)  # as in format()
        for key, value in rest.items():
            if key not in _CORE_KEYS:
                payload[key] = value
        try:
            self._write(_dumps(payload))
        except Exception:  # as logging does: a broken stderr must not fail the request
            pass

    @staticmethod
    def _write(line: str) -> None:
        stream = sys.stderr
        stream.write(line + "\n")
        stream.flush()


def configure_logging(level: str = "info", **static: object) -> None:
    """Send every log record of this process to stderr as one JSON object per line.

    Call once from an entry point. Calling again replaces the level and static fields of
    the handler installed the first time instead of adding a second one. Handlers other
    code installed on the root logger are left alone.

    Raises:
        ConfigError: ``level`` is not debug, info, warning, error or critical.
    """
    numeric = _LEVELS.get(level.strip().lower())
    if numeric is None:
        raise ConfigError(
            f"unknown log level {level!r}",
            suggestion="Use one of: " + ", ".join(_LEVELS) + ".",
        )
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter(static))
    root.setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    exc_info: bool | BaseException | None = None,
    **fields: object,
) -> None:
    """Log ``event`` with ``fields`` as JSON keys: ``logger.log(level, event, extra=fields)``.

    Does nothing (and builds nothing) when ``level`` is disabled for ``logger``. Fields
    named like LogRecord attributes (``name``, ``module``, ``process``...) are accepted
    and written under their own names instead of raising KeyError as ``extra=`` would.
    """
    if not logger.isEnabledFor(level):
        return
    handler = None if exc_info else _only_stderr_handler(logger, level)
    if handler is not None:
        handler.write_event(logger.name, level, event, fields)
        return
    extra: dict[str, Any] = fields
    clashing = [key for key in fields if key in _STANDARD_ATTRS]
    if clashing:
        extra = dict(fields)
        extra[_CLASH_KEY] = {key: extra.pop(key) for key in clashing}
    logger.log(level, event, exc_info=exc_info, extra=extra, stacklevel=2)


def _only_stderr_handler(logger: logging.Logger, level: int) -> _StderrHandler | None:
    """Our handler when it is the only place a record of ``logger`` would go, unfiltered.

    Then :func:`log_event` writes the line itself, skipping the LogRecord, the caller lookup
    and the handler lock (a third of a request's cost in the front); the line is the same.
    """
    current: logging.Logger | None = logger
    while current is not None and current.parent is not None:  # up to the root
        if current.handlers or current.filters or not current.propagate:
            return None
        current = current.parent
    if current is None or current.filters or len(current.handlers) != 1:
        return None
    handler = current.handlers[0]
    if type(handler) is not _StderrHandler or handler.filters or handler.level > level:
        return None
    return handler


def _iso_utc(record: logging.LogRecord) -> str:
    return _iso_time(record.created)


_second_text: tuple[int, str] = (-1, "")


def _iso_time(created: float) -> str:
    """``2026-11-22T01:50:27.123Z``; the seconds part is formatted once per second."""
    global _second_text
    whole = int(created)
    if _second_text[0] != whole:
        _second_text = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second_text[1]}.{int((created - whole) * 1000):03d}Z"


def _dumps(payload: dict[str, object]) -> str:
    """The line; a line longer than MAX_VALUE_CHARS is checked field by field and cut."""
    line = _dumps_bytes(payload)
    if len(line) > MAX_VALUE_CHARS:  # only then can one field be over the limit
        cut = _cut_fields(payload)
        if cut is not None:
            line = _dumps_bytes(cut)
    return line.decode()


def _dumps_bytes(payload: dict[str, object]) -> bytes:
    try:
        return orjson.dumps(payload, default=str, option=_DUMPS_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        # e.g. an int over 64 bits, which orjson refuses without calling default: write
        # each value orjson refuses as text and keep the others.
        return orjson.dumps({key: _jsonable(value) for key, value in payload.items()})


def _cut_fields(payload: dict[str, object]) -> dict[str, object] | None:
    """``payload`` with each value over its limit cut (None if none is)."""
    cut: dict[str, object] = {}
    changed = False
    for key, value in payload.items():
        if key in _TRACEBACK_KEYS and isinstance(value, str):
            short: object = _cut_middle(value, MAX_TRACEBACK_CHARS)
        else:
            short = _shrink(value, MAX_VALUE_CHARS, 0)[0]
        changed = changed or short is not value
        cut[key] = short
    return cut if changed else None


def _shrink(value: object, budget: int, depth: int) -> tuple[object, int]:
    """``value`` cut to about ``budget`` characters of JSON (itself when it fits), and the
    characters it takes. Strings keep their head; containers their first items (each item
    gets half of what is left); each cut ends with a marker saying how much was left out.
    Walks at most about ``budget`` items, however large the value."""
    if value is None or isinstance(value, bool | int | float):
        return value, 8
    if isinstance(value, str):
        if len(value) <= budget:
            return value, len(value) + 2
        return f"{value[:max(budget, 0)]}…[{len(value) - budget:,} characters cut]", budget + 30
    if isinstance(value, bytes | bytearray | memoryview):
        size = len(value)
        if size <= budget // 4:
            return value, size * 4
        return f"{bytes(value[:budget // 4])!r}…[{size - budget // 4:,} bytes cut]", budget + 30
    if depth >= _MAX_LOG_DEPTH:
        return f"[{type(value).__name__} nested deeper than {_MAX_LOG_DEPTH} levels: cut]", 50
    if isinstance(value, dict):
        return _shrink_dict(value, budget, depth)
    if isinstance(value, list | tuple):
        return _shrink_list(value, budget, depth)
    return _shrink(str(value), budget, depth)


def _shrink_dict(value: dict[Any, Any], budget: int, depth: int) -> tuple[object, int]:
    out: dict[Any, Any] = {}
    used, changed = 2, False
    for key, item in value.items():
        if used >= budget:
            out["…"] = f"[{len(value) - len(out):,} of {len(value):,} entries cut]"
            return out, used + 40
        short, size = _shrink(item, _share(budget - used), depth + 1)
        out[key] = short
        used += size + len(str(key)) + 4
        changed = changed or short is not item
    return (out if changed else value), used


def _shrink_list(value: list[Any] | tuple[Any, ...], budget: int, depth: int) -> tuple[object, int]:
    out: list[Any] = []
    used, changed = 2, False
    for item in value:
        if used >= budget:
            out.append(f"…[{len(value) - len(out):,} of {len(value):,} items cut]")
            return out, used + 40
        short, size = _shrink(item, _share(budget - used), depth + 1)
        out.append(short)
        used += size + 1
        changed = changed or short is not item
    return (out if changed else value), used


def _share(left: int) -> int:
    """What one item of a container may take: half of what is left (so one huge item
    leaves room for the small ones after it), and at least a short prefix."""
    return max(left // 2, 32)


def _cut_middle(text: str, limit: int) -> str:
    """A traceback: its head and its tail (where the error is), the middle cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - 2 * half:,} characters cut]…\n{text[-half:]}"


def _jsonable(value: object) -> object:
    try:
        return orjson.Fragment(orjson.dumps(value, default=str, option=_DUMPS_OPTIONS))
    except (TypeError, orjson.JSONEncodeError):
        return str(value)
