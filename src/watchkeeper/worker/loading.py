"""Loading a model in a worker or template process: import the app, check its options and
files, set it up, time each stage.

Runs in worker and template processes. The stages: ``import`` (the app class), ``prepare``
(the ``[models.NAME.options]`` table validated by the model's ``Options``, and the files of
``Model.files`` checked in the model cache, see ``watchkeeper.model_cache``), ``setup``. A
stage that fails reports ``LoadFailed`` to the front and raises :class:`LoadError`, whose exit
code the process then exits with (3: setup or warm-up failed, 4: the app cannot be imported,
5: its options or files are wrong; after 4 and 5 the model is marked failed at once).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from watchkeeper.contract import Model, Options
from watchkeeper.errors import ConfigError
from watchkeeper.logs import log_event
from watchkeeper.model_cache import model_folder, prepare
from watchkeeper.protocol.messages import ExitCode, LoadFailed, WorkerSpec
from watchkeeper.worker.process import limit_threads

__all__ = ["LoadError", "Report", "import_app", "load_model", "model_options", "resolve_device",
           "timed_stage"]

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
    model = timed_stage(timings, "prepare", ExitCode.BAD_SETUP, report, _prepared, cls, spec, set_up)
    if not set_up:
        return model, spec.device
    device = resolve_device(spec.device)
    timed_stage(timings, "setup", ExitCode.LOAD_FAILED, report, model.setup, device)
    return model, device


def model_options(cls: type[Model], model: str, table: dict[str, Any]) -> Options:
    """``table`` validated by the model's ``Options``; ConfigError naming each bad key."""
    try:
        return cls.Options.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(
            f"models.{model}.options.{'.'.join(map(str, err['loc'])) or '(table)'}: {err['msg']}"
            for err in exc.errors())
        allowed = ", ".join(cls.Options.model_fields) or "none"
        raise ConfigError(f"{problems} (options of {cls.__name__}: {allowed})") from None


def _prepared(cls: type[Model], spec: WorkerSpec, with_files: bool) -> Model:
    """The model object with its options and (``with_files``) its checked files set."""
    model = cls()
    model.options = model_options(cls, spec.model, spec.options)
    if with_files:
        folder = model_folder(Path(spec.cache_dir).expanduser(), spec.model)
        model._files = prepare(cls.files(model.options), folder)
    return model
