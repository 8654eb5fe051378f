"""What the front will unpickle (``protocol.unpickling``), and a bad frame on a real socket
(``protocol.wire.read_message``): the allow-list refuses model classes before any import."""

from __future__ import annotations

import asyncio
import datetime
import os
import pickle
import socket
import sys
import types
import uuid
from typing import Any

import pytest

from tests.unit.protocol.test_wire import SAMPLES, SOCKET_TIMEOUT_S
from watchkeeper.protocol import messages as m
from watchkeeper.protocol.blob import Blob
from watchkeeper.protocol.unpickling import ALLOWED_GLOBALS, RefusedGlobal, loads_allowed
from watchkeeper.protocol.wire import BadFrame, BlockingChannel, decode_from_worker, read_message


def frame(value: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(value, protocol=5, buffer_callback=buffers.append), buffers


def round_trip(value: Any) -> Any:
    stream, buffers = frame(value)
    return loads_allowed(stream, [b.raw() for b in buffers])


@pytest.mark.parametrize("message", list(SAMPLES.values()), ids=lambda v: type(v).__name__)
def test_every_message_is_allowed(message: Any) -> None:
    assert round_trip(message) == message


def test_what_outputs_may_hold_is_allowed() -> None:
    outputs = {"json": [1, 2.5, "x", None, True, {"k": (1, 2)}], "bytes": b"\x00\x01",
               "buf": bytearray(b"ab"), "blob": Blob(b"png", "image/png"),
               "when": datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
               "day": datetime.date(2024, 1, 2), "id": uuid.UUID(int=7)}
    assert round_trip(m.BatchDone(1, (m.ItemResult("r", outputs),), 1.0)).results[0].outputs == outputs


def test_numpy_arrays_and_scalars_are_allowed() -> None:
    import numpy as np

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = round_trip({"a": array, "strided": array[:, ::2], "s": np.float32(1.5), "i": np.int64(3)})
    assert np.array_equal(got["a"], array) and np.array_equal(got["strided"], array[:, ::2])
    assert got["s"] == np.float32(1.5) and got["i"] == 3


class ModelThing:
    """Stands for a class of a model's own."""


def test_a_model_class_is_refused() -> None:
    stream, _ = frame({"thing": ModelThing()})
    with pytest.raises(RefusedGlobal, match=f"{__name__}.ModelThing.*outputs may hold"):
        loads_allowed(stream)


def test_a_refused_module_is_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class from a module only the worker has: plain pickle would try to import it."""
    module = types.ModuleType("wk_worker_only")
    thing = type("Thing", (), {"__module__": "wk_worker_only"})
    module.Thing = thing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wk_worker_only", module)
    stream = pickle.dumps(thing(), protocol=5)
    monkeypatch.delitem(sys.modules, "wk_worker_only")
    with pytest.raises(RefusedGlobal, match="wk_worker_only.Thing"):
        loads_allowed(stream)
    assert "wk_worker_only" not in sys.modules


class Exploit:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, ("exit 3",)


def test_a_callable_global_is_refused_and_not_called() -> None:
    stream, _ = frame(Exploit())
    with pytest.raises(RefusedGlobal, match=r"\.system"):
        loads_allowed(stream)


def test_every_allowed_global_exists() -> None:
    for module, name in ALLOWED_GLOBALS:
        if module.startswith("numpy.core"):
            continue  # numpy 1's name; numpy 2 keeps it only as a deprecated alias
        assert hasattr(__import__(module, fromlist=[name]), name), (module, name)


class BrokenBlob:
    """Pickles fine; rebuilds as Blob(data) without its media type, which raises."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Blob, (b"x",)


def test_an_object_that_fails_to_rebuild_is_a_bad_frame() -> None:
    stream, _ = frame({"x": BrokenBlob()})
    with pytest.raises(BadFrame, match="TypeError.*media_type"):
        decode_from_worker(stream)


def test_a_bad_frame_on_the_socket_leaves_the_next_message_readable() -> None:
    async def read_two() -> list[Any]:
        a, b = socket.socketpair()
        channel = BlockingChannel(a)
        channel.send({"thing": ModelThing()})
        channel.send(m.Heartbeat())
        reader, writer = await asyncio.open_connection(sock=b)
        got: list[Any] = []
        try:
            for _ in range(2):
                try:
                    got.append(await asyncio.wait_for(read_message(reader), SOCKET_TIMEOUT_S))
                except BadFrame as exc:
                    got.append(exc)
        finally:
            writer.close()
            a.close()
        return got

    bad, good = asyncio.run(read_two())
    assert isinstance(bad, BadFrame) and "ModelThing" in str(bad)
    assert good == m.Heartbeat()
