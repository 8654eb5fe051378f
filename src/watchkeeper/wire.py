"""Framing of messages on a worker's socket: a 4-byte big-endian length, then a pickle.

Used by both processes: the worker reads and writes with blocking calls
(:class:`BlockingChannel`), the front with asyncio streams (:func:`read_message`), so a
worker that stops mid-message can never block the front's event loop. Pickle protocol 5
keeps large ``bytes`` (images) to a single copy.
"""

from __future__ import annotations

import asyncio
import pickle
import select
import socket
import struct
from typing import Any

__all__ = ["MAX_FRAME", "encode", "decode", "read_message", "BlockingChannel", "ChannelClosed"]

_HEADER = struct.Struct(">I")
#: Largest frame accepted (1 GiB); a longer length header means a corrupt stream.
MAX_FRAME = 1 << 30


class ChannelClosed(Exception):
    """The other end of the socket has gone (a dead process or a closed socket)."""


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return _HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    return pickle.loads(payload)


async def read_message(reader: asyncio.StreamReader) -> Any:
    """Read one message; raises ChannelClosed at end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ChannelClosed(f"frame of {size} bytes is over the limit")
        return decode(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc)) from None


class BlockingChannel:
    """The worker's end: blocking send, and receive with an optional timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(True)

    def send(self, message: Any) -> None:
        try:
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def poll(self, timeout_s: float) -> bool:
        """True when a message (or end of stream) is waiting, within ``timeout_s``."""
        readable, _, _ = select.select([self._sock], [], [], timeout_s)
        return bool(readable)

    def recv(self) -> Any:
        (size,) = _HEADER.unpack(self._recv_exactly(_HEADER.size))
        if size > MAX_FRAME:
            raise ChannelClosed(f"frame of {size} bytes is over the limit")
        return decode(self._recv_exactly(size))

    def _recv_exactly(self, size: int) -> bytes:
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
        return bytes(buf)
