"""The worker's logic in-process (``watchkeeper.worker.loop``): no process is spawned.

Only the chaos actions that return (``ok``, ``raise``, invalid inputs) run here; ``crash``,
``segfault``, ``hang`` and ``spin`` would take the test process with them.
"""

from __future__ import annotations

import os
import socket
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pydantic import Field, ValidationError

from watchkeeper import contract
from watchkeeper.apps.chaos import Chaos
from watchkeeper.front.metrics import STARTUP_PHASES
from watchkeeper.protocol.messages import (
    BatchDone,
    ExitCode,
    Item,
    ItemResult,
    LoadFailed,
    ProbeDone,
    RunBatch,
    RunProbe,
    WorkerSpec,
)
from watchkeeper.protocol.wire import BlockingChannel
from watchkeeper.worker.loading import LoadError, import_app, resolve_device
from watchkeeper.worker.loop import Worker, describe_validation

CHAOS = "watchkeeper.apps.chaos:Chaos"


def spec(app: str = CHAOS, device: str = "cpu") -> WorkerSpec:
    return WorkerSpec(model="chaos", app=app, device=device, replica=0, heartbeat_interval_s=1.0)


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    worker_end, front_end = socket.socketpair()
    front_end.settimeout(5.0)
    try:
        yield worker_end, front_end
    finally:
        worker_end.close()
        front_end.close()


@pytest.fixture
def worker(sockets: tuple[socket.socket, socket.socket]) -> Worker:
    worker = Worker(spec(), BlockingChannel(sockets[0]))
    worker.load()
    return worker


def error_fields(result: ItemResult) -> list[str]:
    assert result.error is not None
    return [e["field"] for e in result.error.details["errors"]]


# --- loading ---------------------------------------------------------------------------


def test_load_imports_sets_up_and_warms_up(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    worker = Worker(spec(), BlockingChannel(sockets[0]))
    timings = worker.load()
    assert set(timings) == {"import", "prepare", "setup", "warmup"}
    assert set(timings) <= set(STARTUP_PHASES)  # the front's metric takes every phase
    assert all(ms >= 0 for ms in timings.values())
    assert isinstance(worker.model, Chaos)
    assert worker.device == "cpu"
    front = BlockingChannel(sockets[1])
    assert front.poll(0) is False  # a successful load sends nothing (main() sends Ready)


def test_schema(worker: Worker) -> None:
    schema = worker.schema()
    assert schema.max_batch_size == Chaos.max_batch_size
    assert schema.has_probe is True
    assert set(schema.inputs["properties"]) == {"action", "seconds", "mb", "tag", "echo", "steps",
                                                "blob_kb"}
    assert schema.params["properties"]["scale"]["maximum"] == 10


def test_failing_setup_reports_load_failed(sockets: tuple[socket.socket, socket.socket]) -> None:
    worker = Worker(spec("watchkeeper.apps.chaos:FailingSetup"), BlockingChannel(sockets[0]))
    with pytest.raises(LoadError) as info:
        worker.load()
    assert info.value.stage == "setup"
    assert info.value.exit_code is ExitCode.LOAD_FAILED
    message = BlockingChannel(sockets[1]).recv()
    assert isinstance(message, LoadFailed)
    assert message.stage == "setup"
    assert message.error == "RuntimeError: chaos: setup fails on purpose"
    assert "RuntimeError" in message.traceback


def test_unimportable_app_reports_load_failed(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    worker = Worker(spec("no.such.module:X"), BlockingChannel(sockets[0]))
    with pytest.raises(LoadError) as info:
        worker.load()
    assert info.value.stage == "import"
    assert info.value.exit_code is ExitCode.APP_NOT_FOUND
    message = BlockingChannel(sockets[1]).recv()
    assert isinstance(message, LoadFailed)
    assert message.stage == "import"
    assert message.error.startswith("ModuleNotFoundError")


# --- import_app / resolve_device -------------------------------------------------------


def test_import_app() -> None:
    assert import_app(CHAOS) is Chaos


def test_import_app_refuses_a_non_model() -> None:
    with pytest.raises(TypeError, match="not a watchkeeper.Model subclass"):
        import_app("os.path:join")


def test_import_app_refuses_a_non_class() -> None:
    with pytest.raises(TypeError):
        import_app("watchkeeper.apps.chaos:CRASH_EXIT_CODE")


def test_import_app_of_a_missing_module() -> None:
    with pytest.raises(ModuleNotFoundError):
        import_app("no.such.module:X")


def test_import_app_of_a_missing_attribute() -> None:
    with pytest.raises(AttributeError):
        import_app("watchkeeper.apps.chaos:NoSuchModel")


@pytest.mark.parametrize("device", ["cpu", "cuda:0", "cuda:1", "mps"])
def test_resolve_device_keeps_an_explicit_device(device: str) -> None:
    assert resolve_device(device) == device


def test_resolve_device_auto_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize(("cuda", "expected"), [(True, "cuda:0"), (False, "cpu")])
def test_resolve_device_auto_with_torch(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, expected: str
) -> None:
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: cuda))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    assert resolve_device("auto") == expected


# --- describe_validation ---------------------------------------------------------------


class Shape(contract.Params):
    width: int = Field(ge=1, le=100)
    name: str = "x"


def test_describe_validation_names_each_field() -> None:
    with pytest.raises(ValidationError) as info:
        Shape.model_validate({"width": 0, "colour": "red"})
    error = describe_validation("params", info.value, Shape)
    assert error.type == "invalid_input"
    problems = error.details["errors"]
    assert [p["field"] for p in problems] == ["params.width", "params.colour"]
    assert "greater than or equal to 1" in problems[0]["message"]
    assert problems[1]["message"] == "unknown field (allowed: width, name)"
    assert error.message == "; ".join(f"{p['field']}: {p['message']}" for p in problems)


def test_describe_validation_of_a_missing_field() -> None:
    with pytest.raises(ValidationError) as info:
        Shape.model_validate({})
    error = describe_validation("params", info.value, Shape)
    assert error.details["errors"] == [{"field": "params.width", "message": "Field required"}]


def test_describe_validation_without_fields() -> None:
    with pytest.raises(ValidationError) as info:
        contract.NoParams.model_validate({"x": 1})
    error = describe_validation("params", info.value, contract.NoParams)
    assert error.details["errors"][0]["message"] == "unknown field (allowed: none)"


# --- run_items -------------------------------------------------------------------------


def test_run_items_mixes_valid_and_invalid_in_order(worker: Worker) -> None:
    items = [
        Item("ok-1", {"echo": [1, "a"]}, {}),
        Item("bad-action", {"action": "explode"}, {}),
        Item("unknown-field", {"colour": "red"}, {}),
        Item("ok-2", {"tag": "t", "echo": {"k": None}}, {"scale": 10}),
        Item("bad-scale", {}, {"scale": 99}),
        Item("ok-3", {}, {}),
    ]
    results = worker.run_items(items)
    assert [r.request_id for r in results] == [i.request_id for i in items]

    for index, echo in ((0, [1, "a"]), (3, {"k": None}), (5, None)):
        assert results[index].error is None
        assert results[index].outputs == {"ok": True, "echo": echo, "pid": os.getpid()}

    for index, field in ((1, "inputs.action"), (2, "inputs.colour"), (4, "params.scale")):
        result = results[index]
        assert result.outputs is None
        assert result.error is not None
        assert result.error.type == "invalid_input"
        assert error_fields(result) == [field]
        assert field in result.error.message


def test_unknown_field_lists_the_allowed_ones(worker: Worker) -> None:
    (result,) = worker.run_items([Item("r", {"colour": "red"}, {})])
    assert result.error is not None
    assert "unknown field (allowed: action, seconds, mb, tag, echo, steps, blob_kb)" in result.error.message


def test_out_of_bounds_param_says_the_bound(worker: Worker) -> None:
    (result,) = worker.run_items([Item("r", {}, {"scale": 99})])
    assert result.error is not None
    assert "less than or equal to 10" in result.error.message


def test_raise_is_a_model_error(worker: Worker) -> None:
    results = worker.run_items(
        [Item("bad", {"action": "nope"}, {}), Item("boom", {"action": "raise"}, {})]
    )
    assert results[0].error is not None and results[0].error.type == "invalid_input"
    assert results[1].error is not None
    assert results[1].error.type == "model_error"
    assert results[1].error.message == "RuntimeError: chaos: raised on request"


def test_a_raise_fails_only_its_own_item(worker: Worker) -> None:
    items = [
        Item("a", {"echo": "a"}, {}),
        Item("boom", {"action": "raise"}, {}),
        Item("invalid", {"seconds": -1}, {}),
        Item("c", {"echo": "c"}, {}),
    ]
    results = worker.run_items(items)
    assert [r.request_id for r in results] == ["a", "boom", "invalid", "c"]
    assert [r.error.type if r.error else None for r in results] == [
        None,
        "model_error",
        "invalid_input",
        None,
    ]
    assert [r.outputs["echo"] for r in results if r.outputs] == ["a", "c"]
    assert error_fields(results[2]) == ["inputs.seconds"]


class ShortBatch(Chaos):
    """A model whose predict_batch drops the last output (a broken batching implementation)."""

    def warmup(self) -> None:
        return None

    def predict_batch(self, inputs: Sequence[Any], params: Sequence[Any]) -> list[dict[str, Any]]:
        return super().predict_batch(inputs, params)[:-1]


def test_wrong_number_of_outputs_is_a_model_error(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    worker = Worker(spec(f"{__name__}:ShortBatch"), BlockingChannel(sockets[0]))
    worker.load()
    results = worker.run_items([Item("a", {}, {}), Item("b", {}, {})])
    assert [r.request_id for r in results] == ["a", "b"]
    for result in results:
        assert result.error is not None
        assert result.error.type == "model_error"
        assert result.error.message == "predict_batch returned 0 outputs for 1 inputs"


def test_worker_still_serves_after_a_model_error(worker: Worker) -> None:
    worker.run_items([Item("boom", {"action": "raise"}, {})])
    (result,) = worker.run_items([Item("ok", {}, {})])
    assert result.outputs is not None and result.outputs["ok"] is True


def test_run_items_of_nothing(worker: Worker) -> None:
    assert worker.run_items([]) == []


def test_items_with_the_same_request_id_keep_their_own_results(worker: Worker) -> None:
    results = worker.run_items(
        [Item("same", {"echo": "alice"}, {}), Item("same", {"echo": "bob"}, {})]
    )
    assert [r.outputs["echo"] for r in results if r.outputs] == ["alice", "bob"]


def test_run_batch_and_run_probe(worker: Worker) -> None:
    done = worker.run_batch(RunBatch(5, (Item("a", {}, {}), Item("b", {"action": "?"}, {}))))
    assert isinstance(done, BatchDone)
    assert done.batch_id == 5
    assert [r.request_id for r in done.results] == ["a", "b"]
    assert done.infer_ms >= 0
    probe = worker.run_probe(RunProbe(2))
    assert isinstance(probe, ProbeDone)
    assert (probe.probe_id, probe.ok, probe.error) == (2, True, None)
