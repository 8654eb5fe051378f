"""Loading a model in a worker or template process: import the app, set it up, time each stage.

Runs in worker and template processes. A stage that fails reports ``LoadFailed`` to the
front and raises :class:`LoadError`, whose exit code the process then exits with
(3: setup or warm-up failed, 4: the app cannot be imported).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from watchkeeper.contract import Model
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import ExitCode, LoadFailed, WorkerSpec
from watchkeeper.worker.process import limit_threads

__all__ = ["LoadError", "Report", "import_app", "load_model", "resolve_device", "timed_stage"]

log = logging.getLogger("watchkeeper.worker")


Report = Callable[[Any], None]


class LoadError(Exception):
    """Loading failed at ``stage``; the worker reports it and exits."""

    def __init__(self, stage: str, exit_code: ExitCode) -> None:
        super().__init__(stage)
        self.stage = stage
        self.exit_code = exit_code


def import_app(path: str) -> type[Model]:
    """Import ``package.module:ClassName`` and check it is a Model subclass."""
    module_name, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise TypeError(f"{path} is not a watchkeeper.Model subclass")
    return cls


def resolve_device(requested: str) -> str:
    """``auto`` means the first GPU when the model's code has torch and CUDA, else cpu."""
    if requested != "auto":
        return requested
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return "cuda:0"
    return "cpu"


def timed_stage(timings: dict[str, float], stage: str, code: ExitCode, report: Report,
           fn: Callable[..., Any], *args: Any) -> Any:
    """Run one start-up stage; on failure report LoadFailed and raise LoadError."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:
        report(LoadFailed(stage, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        log_event(log, "worker.load_failed", logging.ERROR, stage=stage, error=str(exc))
        raise LoadError(stage, code) from exc
    timings[stage] = round((time.perf_counter() - start) * 1000, 2)
    return result


def load_model(spec: WorkerSpec, timings: dict[str, float], report: Report,
               set_up: bool = True) -> tuple[Model, str]:
    """Import the app and (unless ``set_up`` is False) set the model up on its device."""
    cls = timed_stage(timings, "import", ExitCode.APP_NOT_FOUND, report, import_app, spec.app)
    limit_threads(spec.threads)
    stage = _set_up if set_up else _construct
    return timed_stage(timings, "setup", ExitCode.LOAD_FAILED, report, stage, cls, spec.device)  # type: ignore[no-any-return]


def _set_up(cls: type[Model], requested_device: str) -> tuple[Model, str]:
    model = cls()
    device = resolve_device(requested_device)
    model.setup(device)
    return model, device


def _construct(cls: type[Model], requested_device: str) -> tuple[Model, str]:
    return cls(), requested_device
