"""Framing of messages on a worker's socket (``watchkeeper.protocol.wire``), over real socket pairs."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from watchkeeper.protocol import messages as m
from watchkeeper.protocol.wire import (
    MAX_FRAME,
    BlockingChannel,
    ChannelClosed,
    decode,
    encode,
    encode_parts,
    read_message,
)

SCHEMA = m.ModelSchema(
    inputs={"type": "object", "properties": {"x": {"type": "integer"}}},
    params={"type": "object"},
    max_batch_size=4,
    has_probe=True,
)
ITEM = m.Item("req-1", {"text": "hi", "image": b"\x89PNG\r\n\x1a\n" + bytes(100)}, {"k": 2})

SAMPLES: dict[type, Any] = {
    m.WorkerSpec: m.WorkerSpec("cartoon", "watchkeeper.apps.chaos:Chaos", "cpu", 2, 0.5,
                               threads=2, log_level="debug"),
    m.ModelSchema: SCHEMA,
    m.Item: ITEM,
    m.RunBatch: m.RunBatch(7, (ITEM, m.Item("req-2", {}, {}))),
    m.RunProbe: m.RunProbe(3),
    m.Stop: m.Stop(),
    m.Cancel: m.Cancel(7),
    m.Progress: m.Progress(7, 0.25, "frame 8/32"),
    m.ErrorInfo: m.ErrorInfo("invalid_input", "bad", {"errors": [{"field": "inputs.x"}]}),
    m.ItemResult: m.ItemResult("req-1", outputs={"ok": True, "v": [1.5, None]}),
    m.Ready: m.Ready(1234, "cpu", SCHEMA, {"import": 1.5, "setup": 2.0, "warmup": 3.25}),
    m.LoadFailed: m.LoadFailed("setup", "RuntimeError: no", "Traceback ...\n"),
    m.Heartbeat: m.Heartbeat(),
    m.BatchDone: m.BatchDone(
        7,
        (
            m.ItemResult("req-1", outputs={"ok": True}),
            m.ItemResult("req-2", error=m.ErrorInfo("model_error", "boom")),
        ),
        12.5,
    ),
    m.ProbeDone: m.ProbeDone(3, False, "the output did not pass the check", 0.8),
    m.TemplateReady: m.TemplateReady(99, "cpu", {"import": 1.0, "setup": 2.0}, 3, None, True),
    m.PlanRequest: m.PlanRequest(2, {"resolution": 2048}),
    m.Planned: m.Planned(2, (({"resolution": 2048}, 75 * 2**20), ({"resolution": 1536}, None))),
    m.ForkRequest: m.ForkRequest(1, m.WorkerSpec("embed", "a.b:C", "cpu", 0, 1.0)),
    m.Forked: m.Forked(1, 1234, 12.5),
    m.ForkFailed: m.ForkFailed(1, "fork failed: EAGAIN"),
    m.ChildExited: m.ChildExited(1234, -9),
}

SOCKET_TIMEOUT_S = 10.0


def message_classes() -> list[type]:
    return [
        obj
        for obj in (getattr(m, name) for name in m.__all__)
        if isinstance(obj, type) and dataclasses.is_dataclass(obj)
    ]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(SOCKET_TIMEOUT_S)
    b.settimeout(SOCKET_TIMEOUT_S)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# --- encode / decode -------------------------------------------------------------------


def test_every_message_class_has_a_sample() -> None:
    assert set(message_classes()) == set(SAMPLES)


def parse_frame(frame: bytes) -> tuple[Any, bytes]:
    """Decode the first frame of ``frame`` by its documented layout; (message, the rest)."""
    stream_len, count = struct.unpack(">II", frame[:8])
    lengths = struct.unpack(f">{count}Q", frame[8 : 8 + 8 * count])
    at = 8 + 8 * count
    stream, at = frame[at : at + stream_len], at + stream_len
    buffers = []
    for n in lengths:
        buffers.append(frame[at : at + n])
        at += n
    return decode(stream, buffers), frame[at:]


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_encode_decode_round_trip(cls: type) -> None:
    message = SAMPLES[cls]
    restored, rest = parse_frame(encode(message))
    assert rest == b""
    assert type(restored) is cls
    assert restored == message


def test_exit_codes_round_trip() -> None:
    for code in m.ExitCode:
        assert parse_frame(encode(code))[0] is code


def test_bytes_round_trip_unchanged() -> None:
    payload = bytes(range(256)) * 1000
    assert parse_frame(encode(m.Item("r", {"f": payload}, {})))[0].inputs["f"] == payload


def test_frames_concatenate() -> None:
    first, rest = parse_frame(encode(m.Heartbeat()) + encode(m.RunProbe(1)))
    second, rest = parse_frame(rest)
    assert (first, second, rest) == (m.Heartbeat(), m.RunProbe(1), b"")


# --- BlockingChannel -------------------------------------------------------------------


def test_blocking_send_and_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    left, right = BlockingChannel(a), BlockingChannel(b)
    for message in SAMPLES.values():
        left.send(message)
        assert right.recv() == message
    right.send(m.Stop())
    assert left.recv() == m.Stop()


def test_poll_times_out_then_sees_a_message(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    left, right = BlockingChannel(a), BlockingChannel(b)
    start = time.monotonic()
    assert right.poll(0.05) is False
    assert time.monotonic() - start >= 0.04
    left.send(m.Heartbeat())
    assert right.poll(1.0) is True
    assert right.recv() == m.Heartbeat()
    assert right.poll(0) is False


def test_poll_sees_end_of_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    right = BlockingChannel(b)
    a.close()
    assert right.poll(1.0) is True
    with pytest.raises(ChannelClosed):
        right.recv()


def test_recv_of_a_large_bytes_payload(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    left, right = BlockingChannel(a), BlockingChannel(b)
    payload = bytes(range(256)) * (5 * 2**20 // 256)  # 5 MiB, larger than the socket buffer
    sender = threading.Thread(target=left.send, args=(m.Item("big", {"image": payload}, {}),))
    sender.start()
    try:
        received = right.recv()
    finally:
        sender.join(SOCKET_TIMEOUT_S)
    assert not sender.is_alive()
    assert received.request_id == "big"
    assert received.inputs["image"] == payload


def test_channel_closed_at_end_of_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    left, right = BlockingChannel(a), BlockingChannel(b)
    left.send(m.Heartbeat())
    a.close()
    assert right.recv() == m.Heartbeat()  # what was sent before the close still arrives
    with pytest.raises(ChannelClosed, match="end of stream"):
        right.recv()


def test_channel_closed_mid_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    right = BlockingChannel(b)
    frame = encode(m.RunProbe(1))
    a.sendall(frame[:-3])
    a.close()
    with pytest.raises(ChannelClosed):
        right.recv()


def test_channel_closed_mid_header(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    right = BlockingChannel(b)
    a.sendall(b"\x00\x00")
    a.close()
    with pytest.raises(ChannelClosed):
        right.recv()


def test_oversized_frame_header_closes_the_channel(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    right = BlockingChannel(b)
    a.sendall(struct.pack(">II", MAX_FRAME + 1, 0))
    with pytest.raises(ChannelClosed, match="over the limit"):
        right.recv()


def test_send_to_a_closed_peer_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    left = BlockingChannel(a)
    b.close()
    with pytest.raises(ChannelClosed):
        for _ in range(100):  # the first send may still land in the buffer
            left.send(m.Heartbeat())


# --- read_message (the front's asyncio side) -------------------------------------------


async def _read_all(sock: socket.socket, count: int) -> list[Any]:
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        return [
            await asyncio.wait_for(read_message(reader), SOCKET_TIMEOUT_S) for _ in range(count)
        ]
    finally:
        writer.close()
        await writer.wait_closed()


async def _read_until_closed(sock: socket.socket) -> tuple[list[Any], ChannelClosed | None]:
    reader, writer = await asyncio.open_connection(sock=sock)
    got: list[Any] = []
    try:
        while True:
            got.append(await asyncio.wait_for(read_message(reader), SOCKET_TIMEOUT_S))
    except ChannelClosed as exc:
        return got, exc
    finally:
        writer.close()
        await writer.wait_closed()


def test_read_message_reads_what_the_worker_sends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    worker = BlockingChannel(a)
    sent = list(SAMPLES.values())
    for message in sent:
        worker.send(message)
    b.setblocking(False)
    assert asyncio.run(_read_all(b, len(sent))) == sent


def test_read_message_of_a_large_payload(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    worker = BlockingChannel(a)
    payload = bytes(5 * 2**20)
    sender = threading.Thread(target=worker.send, args=(m.ItemResult("r", {"png": payload}),))
    sender.start()
    b.setblocking(False)
    try:
        (received,) = asyncio.run(_read_all(b, 1))
    finally:
        sender.join(SOCKET_TIMEOUT_S)
    assert received.outputs["png"] == payload


def test_read_message_channel_closed_at_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    BlockingChannel(a).send(m.Heartbeat())
    a.close()
    b.setblocking(False)
    got, exc = asyncio.run(_read_until_closed(b))
    assert got == [m.Heartbeat()]
    assert isinstance(exc, ChannelClosed)


def test_read_message_channel_closed_on_eof_mid_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(encode(m.Heartbeat()) + encode(m.RunProbe(9))[:-2])
    a.close()
    b.setblocking(False)
    got, exc = asyncio.run(_read_until_closed(b))
    assert got == [m.Heartbeat()]
    assert isinstance(exc, ChannelClosed)


def test_read_message_channel_closed_on_eof_mid_header(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(b"\x00")
    a.close()
    b.setblocking(False)
    got, exc = asyncio.run(_read_until_closed(b))
    assert got == []
    assert isinstance(exc, ChannelClosed)


def test_read_message_refuses_an_oversized_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(struct.pack(">II", MAX_FRAME + 1, 0) + b"xx")
    b.setblocking(False)
    got, exc = asyncio.run(_read_until_closed(b))
    assert got == []
    assert exc is not None and "over the limit" in str(exc)


# --- out-of-band buffers -------------------------------------------------------------


def test_large_arrays_travel_out_of_band(pair: tuple[socket.socket, socket.socket]) -> None:
    import numpy as np

    a, b = pair
    array = np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)  # 8 MB
    message = m.BatchDone(1, (m.ItemResult("r", outputs={"frames": array}),), 1.0)
    header, stream, *buffers = encode_parts(message)
    assert len(stream) < 2000  # the array's memory is not in the pickle stream
    assert [bytes(x) for x in buffers] and sum(memoryview(x).nbytes for x in buffers) == array.nbytes
    sender = threading.Thread(target=BlockingChannel(a).send, args=(message,))
    sender.start()
    got = BlockingChannel(b).recv()
    sender.join(SOCKET_TIMEOUT_S)
    out = got.results[0].outputs["frames"]
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array)
    out[0, 0] = -1  # the worker's copy is its own, writable memory


def test_read_message_rebuilds_out_of_band_arrays() -> None:
    import numpy as np

    array = np.random.default_rng(1).random((300, 400, 3))

    async def roundtrip() -> Any:
        a, b = socket.socketpair()
        reader, _ = await asyncio.open_connection(sock=b)
        sender = threading.Thread(target=BlockingChannel(a).send, args=({"x": array, "y": b"z"},))
        sender.start()
        try:
            return await asyncio.wait_for(read_message(reader), SOCKET_TIMEOUT_S)
        finally:
            sender.join(SOCKET_TIMEOUT_S)
            a.close()

    got = asyncio.run(roundtrip())
    assert np.array_equal(got["x"], array) and got["y"] == b"z"
