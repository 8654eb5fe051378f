"""The template's plans (``worker.template.Template.plan``), in-process: what crosses to the
front is plain (an estimate from numpy becomes an int; anything else is the model's error).
Forking, reaping and process groups are tested for real in ``tests/integration``."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import Field

from watchkeeper import contract
from watchkeeper.protocol.messages import PlanRequest
from watchkeeper.protocol.unpickling import loads_allowed
from watchkeeper.worker.template import Template


class Sized(contract.Model):
    class Params(contract.Params):
        mb: int = Field(8, ge=1)

    estimate: Any = None

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        return {}

    def estimate_memory(self, params: Any) -> Any:
        return type(self).estimate(params.mb)

    def degrade(self, params: Any) -> Any | None:
        return params.model_copy(update={"mb": params.mb // 2}) if params.mb > 2 else None


@pytest.fixture
def control() -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield ours
    ours.close()
    theirs.close()


def plan(control: socket.socket, estimate: Any) -> Any:
    model = type("Model", (Sized,), {"estimate": staticmethod(estimate)})()
    planned = Template(control, model, "cpu", can_fork=False).plan(PlanRequest(1, {"mb": 8}))
    return loads_allowed(pickle.dumps(planned, protocol=5))  # what the front would read


def test_a_numpy_estimate_crosses_as_an_int(control: socket.socket) -> None:
    planned = plan(control, lambda mb: np.int64(mb * 2**20))
    assert planned.error is None
    assert [(p["mb"], e) for p, e in planned.rungs] == [(8, 8 * 2**20), (4, 4 * 2**20), (2, 2 * 2**20)]
    assert all(type(e) is int for _, e in planned.rungs)


def test_an_estimate_that_is_no_int_is_the_models_error(control: socket.socket) -> None:
    planned = plan(control, lambda mb: mb * 1.5)
    assert planned.rungs == () and planned.error is not None
    assert planned.error.type == "model_error" and "estimate_memory returned float" in planned.error.message
