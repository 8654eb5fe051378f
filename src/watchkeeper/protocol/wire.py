"""Framing of messages on a worker's socket: pickle protocol 5 with out-of-band buffers.

Used by both processes: the worker reads and writes with blocking calls
(:class:`BlockingChannel`), the front with asyncio streams (:func:`read_message`), so a
worker that stops mid-message can never block the front's event loop. The front decodes
with an allow-list of globals (``protocol.unpickling``): a whole frame it cannot or will
not decode raises :class:`BadFrame`, a fault of the worker that sent it.

A frame is a header, the pickle stream, then each out-of-band buffer raw::

    [stream length: u32][buffer count: u32][buffer lengths: u64 x count][stream][buffers...]

Large arrays (numpy's ``__reduce_ex__`` hands its memory to pickle protocol 5 as a
``PickleBuffer``) are therefore never copied into the pickle stream: the sender passes
their memory straight to the socket (scatter/gather), and the receiver reads each one
into its own buffer that becomes the array's memory. Plain ``bytes`` are pickled inline.
"""

from __future__ import annotations

import asyncio
import pickle
import select
import socket
import struct
from collections.abc import Sequence
from typing import Any

from watchkeeper.protocol.unpickling import RefusedGlobal, loads_allowed

__all__ = [
    "MAX_FRAME",
    "BadFrame",
    "ChannelClosed",
    "encode",
    "encode_parts",
    "decode",
    "decode_from_worker",
    "read_message",
    "BlockingChannel",
]

_HEAD = struct.Struct(">II")
_LENGTH = struct.Struct(">Q")
#: Largest pickle stream or buffer accepted (1 GiB); longer means a corrupt stream.
MAX_FRAME = 1 << 30
#: Most out-of-band buffers in one message.
MAX_BUFFERS = 4096


class ChannelClosed(Exception):
    """The other end of the socket has gone (a dead process or a closed socket)."""


class BadFrame(Exception):
    """A whole frame arrived but cannot be decoded: a global the front does not unpickle,
    or an object that fails to rebuild. The socket is still in step (the frame was read)."""


def decode_from_worker(stream: bytes | bytearray | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """Decode a frame in the front: allowed globals only; anything wrong is a BadFrame."""
    try:
        return loads_allowed(stream, buffers)
    except RefusedGlobal as exc:
        raise BadFrame(str(exc)) from None
    except Exception as exc:  # an allowed global that fails to rebuild, a corrupt stream
        raise BadFrame(f"{type(exc).__name__}: {exc}") from None


def encode_parts(message: Any) -> list[bytes | memoryview]:
    """The frame of ``message`` as parts to write in order (buffers are not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [buf.raw() for buf in buffers]
    header = _HEAD.pack(len(stream), len(views)) + b"".join(_LENGTH.pack(v.nbytes) for v in views)
    return [header, stream, *views]


def encode(message: Any) -> bytes:
    """The whole frame as one bytes object (tests and small messages)."""
    return b"".join(bytes(part) for part in encode_parts(message))


def decode(stream: bytes | bytearray | memoryview, buffers: Sequence[Any] = ()) -> Any:
    return pickle.loads(stream, buffers=buffers)


def _check_sizes(stream_len: int, count: int) -> None:
    if stream_len > MAX_FRAME or count > MAX_BUFFERS:
        raise ChannelClosed(f"frame of {stream_len} bytes and {count} buffers is over the limit")


async def read_message(reader: asyncio.StreamReader) -> Any:
    """Read one message in the front; raises ChannelClosed at end of stream, BadFrame when
    the frame cannot be decoded."""
    try:
        stream_len, count = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        _check_sizes(stream_len, count)
        lengths = [_LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0] for _ in range(count)]
        if any(n > MAX_FRAME for n in lengths):
            raise ChannelClosed("buffer over the limit")
        stream = await reader.readexactly(stream_len)
        buffers = [await reader.readexactly(n) for n in lengths]
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc)) from None
    return decode_from_worker(stream, buffers)


class BlockingChannel:
    """The worker's end: blocking send, and receive with an optional timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(True)

    def send(self, message: Any) -> None:
        """Write the frame with scatter/gather writes: array memory goes straight out."""
        parts = [memoryview(p).cast("B") for p in encode_parts(message)]
        try:
            while parts:
                sent = self._sock.sendmsg(parts)
                while parts and sent >= parts[0].nbytes:
                    sent -= parts[0].nbytes
                    parts.pop(0)
                if parts and sent:
                    parts[0] = parts[0][sent:]
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def poll(self, timeout_s: float) -> bool:
        """True when a message (or end of stream) is waiting, within ``timeout_s``."""
        readable, _, _ = select.select([self._sock], [], [], timeout_s)
        return bool(readable)

    def recv(self) -> Any:
        stream_len, count = _HEAD.unpack(self._recv_exactly(_HEAD.size))
        _check_sizes(stream_len, count)
        lengths = [_LENGTH.unpack(self._recv_exactly(_LENGTH.size))[0] for _ in range(count)]
        if any(n > MAX_FRAME for n in lengths):
            raise ChannelClosed("buffer over the limit")
        stream = self._recv_exactly(stream_len)
        return decode(stream, [self._recv_exactly(n) for n in lengths])

    def _recv_exactly(self, size: int) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            try:
                n = self._sock.recv_into(view[got:], size - got)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if n == 0:
                raise ChannelClosed("end of stream")
            got += n
        return buf
