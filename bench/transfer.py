"""Moving large arrays from a worker to the front: out-of-band pickle 5 vs in-band pickle.

A child process sends a float32 array of N MB over a real socket pair, as a worker sends
its outputs, and the parent decodes it. "in-band" is pickle with the array copied into the
stream and the frame joined into one bytes object (the first version of watchkeeper.protocol.wire);
"out-of-band" is watchkeeper.protocol.wire today. Prints MB/s and time per message for each size.

Run: .venv/bin/python bench/transfer.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table

from watchkeeper.protocol.wire import BlockingChannel, read_message

SIZES_MB = (1, 16, 128)
ROUNDS = 5
READ_LIMIT = 1 << 24


def send_in_band(sock: socket.socket, message: object) -> None:
    payload = pickle.dumps(message, protocol=5)
    sock.sendall(struct.pack(">II", len(payload), 0) + payload)


def sender(sock: socket.socket, size_mb: int, rounds: int, in_band: bool) -> None:
    array = np.ones(size_mb * 2**20 // 4, dtype=np.float32)
    channel = BlockingChannel(sock)
    for _ in range(rounds):
        sock.recv(1)  # the parent is ready: time one message at a time
        if in_band:
            send_in_band(sock, {"out": array})
        else:
            channel.send({"out": array})


async def receive(sock: socket.socket, rounds: int) -> list[float]:
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        writer.write(b"g")
        message = await read_message(reader)
        assert float(message["out"][-1]) == 1.0
        times.append(time.perf_counter() - start)
    writer.close()
    return times


def measure(size_mb: int, in_band: bool) -> float:
    ours, theirs = socket.socketpair()
    child = multiprocessing.get_context("fork").Process(
        target=sender, args=(theirs, size_mb, ROUNDS, in_band))
    child.start()
    theirs.close()
    times = asyncio.run(receive(ours, ROUNDS))
    child.join(30)
    return statistics.median(times)


def main() -> None:
    rows = []
    for size in SIZES_MB:
        old, new = measure(size, in_band=True), measure(size, in_band=False)
        rows.append([f"{size} MB", f"{old * 1000:.1f}", f"{new * 1000:.1f}",
                     f"{size / new:.0f}", f"{old / new:.2f}x"])
    print(f"an array from a worker to the front over its socket, median of {ROUNDS}; {machine()}\n")
    print(table(["array", "in-band ms", "out-of-band ms", "out-of-band MB/s", "speed-up"], rows))


if __name__ == "__main__":
    main()
