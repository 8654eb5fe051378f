"""The worker process: loads one model once, warms it up, then serves batches.

Runs in a worker process, started by ``watchkeeper.supervision.worker_handle`` as
``python -m watchkeeper.worker --fd N --parent-pid P --spec JSON``.

Threads: one. Everything happens in the main loop below, so the loop turn *is* the
heartbeat: while idle the worker sends ``Heartbeat`` every ``heartbeat_interval_s``; while
a batch runs it sends nothing and the front's per-request deadline is the watchdog, unless
the model reports progress (``watchkeeper.worker.progress``): then each report is a
heartbeat too, and the same report is where a ``Cancel`` from the front is noticed.

State: the model instance and its pydantic classes. Nothing survives the process.

Timeouts: none of its own. The front kills this process (SIGKILL) when a deadline or a
heartbeat is missed; the kernel kills it (PR_SET_PDEATHSIG) when the front dies; and it
exits by itself at end of stream on its socket.

Exit codes (``messages.ExitCode``): 0 on Stop or when the front has gone, 3 when setup or
warm-up fails, 4 when the app cannot be imported.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from watchkeeper.contract import Example, Model
from watchkeeper.errors import InvalidInput, ModelError, WatchkeeperError
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import (
    BatchDone,
    ErrorInfo,
    ExitCode,
    Heartbeat,
    Item,
    ItemResult,
    ModelSchema,
    ProbeDone,
    Ready,
    RunBatch,
    RunProbe,
    Stop,
    WorkerSpec,
)
from watchkeeper.protocol.wire import BlockingChannel, ChannelClosed
from watchkeeper.worker.loading import LoadError, load_model, timed_stage
from watchkeeper.worker.memory import (
    DeviceMemoryGauge,
    PeakMeter,
    apply_limit,
    is_out_of_memory,
    oom_details,
    release_memory,
    rss_bytes,
)
from watchkeeper.worker.profiles import Profile, choose_profile, narrow_schema, violations
from watchkeeper.worker.progress import ProgressCallback, ProgressReporter, no_progress, takes_progress

__all__ = ["Worker", "batch_shape", "describe_validation", "device_memory_gb", "error_info",
           "run_worker"]


log = logging.getLogger("watchkeeper.worker")

#: A batch's params shape longer than this is cut short, with a digest of the whole.
SHAPE_MAX_CHARS = 200


def describe_validation(where: str, exc: ValidationError, cls: type[BaseModel]) -> InvalidInput:
    """Turn a pydantic error into an InvalidInput naming each field and what is allowed."""
    problems = []
    for err in exc.errors():
        field = ".".join([where, *(str(p) for p in err["loc"])])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field (allowed: {', '.join(cls.model_fields) or 'none'})"
        problems.append({"field": field, "message": message})
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidInput(summary, details={"errors": problems})


def batch_shape(items: Sequence[Item]) -> str:
    """The params shape of a batch, for the front's latency baselines: each distinct params
    dict as canonical JSON, joined by `` | `` (params that change the work change the shape);
    past ``SHAPE_MAX_CHARS``, its first half and a digest of the whole."""
    shapes = {orjson.dumps(item.params, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                           default=repr) for item in items}
    shape = " | ".join(sorted(s.decode() for s in shapes))
    if len(shape) <= SHAPE_MAX_CHARS:
        return shape
    digest = hashlib.blake2b(shape.encode(), digest_size=8).hexdigest()
    return f"{shape[:SHAPE_MAX_CHARS // 2]}... #{digest}"


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, WatchkeeperError):
        return ErrorInfo(exc.type, exc.message, exc.details, exc.suggestion or None)
    return ErrorInfo(ModelError.type, f"{type(exc).__name__}: {exc}")


class Worker:
    """One loaded model and the loop that serves it."""

    def __init__(self, spec: WorkerSpec, channel: BlockingChannel,
                 model: Model | None = None, device: str | None = None) -> None:
        self.spec = spec
        self.channel = channel
        self.model = model
        self.device = device or spec.device
        self.meter = PeakMeter(self.device)
        self.gauge = DeviceMemoryGauge(self.device)  # device memory, sent with batch results
        self.rss_at_ready = 0
        self._profile: Profile | None = None
        self._deferred: list[Any] = []  # messages read while a batch ran (see ProgressReporter)

    # --- start-up --------------------------------------------------------------

    def load(self, timings: dict[str, float] | None = None) -> dict[str, float]:
        """Load the model (unless a template did) and warm it up; the ms of each stage."""
        timings = dict(timings or {})
        if self.model is None:
            self.model, self.device = load_model(self.spec, timings, self.channel.send)
            self.meter, self.gauge = PeakMeter(self.device), DeviceMemoryGauge(self.device)
        timed_stage(timings, "warmup", ExitCode.LOAD_FAILED, self.channel.send, self._warm_up)
        apply_limit(self.spec.memory_limit_mb)
        self.rss_at_ready = rss_bytes()
        return timings

    def _warm_up(self) -> None:
        assert self.model is not None
        example = self.model.warmup()
        if example is not None:
            error = self._run_example(example)
            if error:
                raise RuntimeError(f"warm-up failed: {error}")

    def schema(self) -> ModelSchema:
        assert self.model is not None
        cls = type(self.model)
        return ModelSchema(
            inputs=cls.Inputs.model_json_schema(),
            params=narrow_schema(cls.Params.model_json_schema(), self.profile),
            max_batch_size=cls.max_batch_size,
            has_probe=self.model.probe() is not None,
            profile=self.profile.to_dict() if self.profile.limits else None,
            reports_progress=self.reports_progress,
        )

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            assert self.model is not None
            gb = self.spec.device_memory_gb or device_memory_gb(self.device)
            self._profile = choose_profile(type(self.model).profiles, gb)
        return self._profile

    @functools.cached_property
    def reports_progress(self) -> bool:
        """The model's ``predict`` declares ``progress`` and batches are its own (a model
        with its own ``predict_batch`` runs every batch, one item too, through that)."""
        if self.model is None or type(self.model).predict_batch is not Model.predict_batch:
            return False
        return takes_progress(self.model.predict)

    # --- serving ---------------------------------------------------------------

    def serve(self) -> int:
        """The work loop: one message per turn, a heartbeat on every idle turn."""
        interval = self.spec.heartbeat_interval_s
        while True:
            if self._deferred:
                message = self._deferred.pop(0)
            elif self.channel.poll(interval):
                message = self.channel.recv()
            else:
                self.channel.send(Heartbeat())
                continue
            if isinstance(message, RunBatch):
                self.channel.send(self.run_batch(message))
            elif isinstance(message, RunProbe):
                self.channel.send(self.run_probe(message))
            elif isinstance(message, Stop):
                return ExitCode.OK
            # A Cancel here came after its batch finished: nothing to stop.

    def run_batch(self, batch: RunBatch) -> BatchDone:
        start = time.perf_counter()
        if batch.measure:
            self.meter.start()
        reports = self.reports_progress and len(batch.items) == 1
        progress = ProgressReporter(self.channel, batch.batch_id, self._deferred) if reports else no_progress
        results = self.run_items(batch.items, progress)
        infer_ms = (time.perf_counter() - start) * 1000
        peak = self.meter.peak() if batch.measure else None
        shape = batch_shape(batch.items) if self.spec.report_shapes else ""
        return BatchDone(batch.batch_id, tuple(results), infer_ms, peak, self.gauge.read(), shape)

    def run_items(self, items: Sequence[Item], progress: ProgressCallback = no_progress) -> list[ItemResult]:
        """Validate each item, predict the valid ones together; results keep the items' order.

        A lone item whose model's ``predict`` takes ``progress`` gets ``progress``.

        Results are matched by position, never by request id: two clients may send the same
        X-Request-ID and land in one batch.
        """
        assert self.model is not None
        cls = type(self.model)
        results: list[ItemResult | None] = [None] * len(items)
        valid: list[tuple[int, Any, Any]] = []
        for index, item in enumerate(items):
            try:
                inputs = self._validate(cls.Inputs, "inputs", item.inputs)
                params = self._validate(cls.Params, "params", item.params)
                self._check_profile({k: getattr(params, k) for k in item.params if hasattr(params, k)})
            except WatchkeeperError as exc:
                results[index] = ItemResult(item.request_id, error=error_info(exc))
            else:
                valid.append((index, inputs, params))
        if valid:
            predicted = self._predict([(items[i], inp, par) for i, inp, par in valid], progress)
            for (index, _, _), result in zip(valid, predicted, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def _check_profile(self, params: dict[str, Any]) -> None:
        problems = violations(params, self.profile)
        if problems:
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise InvalidInput(summary, details={"errors": problems})

    @staticmethod
    def _validate(cls: type[BaseModel], where: str, data: dict[str, Any]) -> BaseModel:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise describe_validation(where, exc, cls) from None

    def _predict(self, valid: list[tuple[Item, Any, Any]],
                 progress: ProgressCallback = no_progress) -> list[ItemResult]:
        """Predict a batch; when it raises, run each item alone so one bad item fails alone."""
        assert self.model is not None
        try:
            if len(valid) == 1 and self.reports_progress:
                predict: Any = self.model.predict  # declares `progress` (the base class does not)
                outputs = [predict(valid[0][1], valid[0][2], progress=progress)]
            else:
                outputs = self.model.predict_batch([v[1] for v in valid], [v[2] for v in valid])
            if len(outputs) != len(valid):
                raise ModelError(f"predict_batch returned {len(outputs)} outputs for {len(valid)} inputs")
        except Exception as exc:
            if is_out_of_memory(exc):
                return self._out_of_memory(valid, exc)
            if len(valid) > 1:
                return [result for one in valid for result in self._predict([one])]
            if not isinstance(exc, WatchkeeperError):
                log.exception("model raised", extra={"model": self.spec.model})
            return [ItemResult(valid[0][0].request_id, error=error_info(exc))]
        return [
            ItemResult(item.request_id, outputs=out)
            for (item, _, _), out in zip(valid, outputs, strict=True)
        ]

    def _out_of_memory(self, valid: list[tuple[Item, Any, Any]], exc: BaseException) -> list[ItemResult]:
        """Free what the batch held and report OOM for each item (the front splits batches)."""
        exc.__traceback__ = None  # frames of the failed batch hold its arrays
        release_memory(self.device)
        details = oom_details(self.meter, self.rss_at_ready, self.spec.memory_limit_mb)
        log_event(log, "worker.out_of_memory", logging.WARNING, items=len(valid), **details)
        info = ErrorInfo("out_of_memory", f"out of memory running a batch of {len(valid)}: "
                         f"{type(exc).__name__}: {str(exc)[:200]}", details)
        return [ItemResult(item.request_id, error=info) for item, _, _ in valid]

    def run_probe(self, probe: RunProbe) -> ProbeDone:
        assert self.model is not None
        start = time.perf_counter()
        example = self.model.probe()
        error = self._run_example(example) if example is not None else None
        return ProbeDone(probe.probe_id, error is None, error, (time.perf_counter() - start) * 1000)

    def _run_example(self, example: Example) -> str | None:
        """Run an example through the normal path; the error text, or None when it passed."""
        (result,) = self.run_items([Item("example", example.inputs, example.params)])
        if result.error is not None:
            return f"{result.error.type}: {result.error.message}"
        try:
            if example.check is not None and example.check(result.outputs or {}) is False:
                return "the output did not pass the check"
        except Exception as exc:
            return f"the check raised {type(exc).__name__}: {exc}"
        return None


def device_memory_gb(device: str) -> float:
    """Memory of the device in GB: the GPU's total, or the machine's RAM."""
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        return float(torch.cuda.get_device_properties(device).total_memory) / 1e9
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def run_worker(worker: Worker, timings: dict[str, float] | None = None) -> int:
    """Load (or only warm up), say Ready, serve until Stop; the process's exit code."""
    try:
        timings = worker.load(timings)
        worker.channel.send(Ready(os.getpid(), worker.device, worker.schema(), timings))
        log_event(log, "worker.loaded", device=worker.device, startup_ms=timings)
        return worker.serve()
    except LoadError as exc:
        return exc.exit_code
    except ChannelClosed:
        return ExitCode.OK
