"""The front speaks systemd's notify protocol to a real ``NOTIFY_SOCKET``: READY=1 once it
serves, STATUS lines with the models' states, WATCHDOG=1 every half of ``WATCHDOG_USEC``
that stop while its event loop is blocked (the front SIGSTOPped; or its loop alone, stuck
writing a log line to a pipe nobody reads), and STOPPING=1 on SIGTERM.

The test plays systemd: it binds the AF_UNIX datagram socket, reads it in a thread and
stamps each message with the time it arrived.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import (
    CHAOS,
    FAST,
    Servers,
    free_port,
    in_background,
    wait_for,
    write_config,
)

WATCHDOG_USEC = 400_000  # a ping every 0.2 s


class FakeSystemd:
    """The notify socket, read in a thread: every message with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.heard: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.heard.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def lines(self) -> list[str]:
        return [line for _, message in list(self.heard) for line in message.split("\n")]

    def pings_between(self, start: float, end: float) -> list[float]:
        return [t for t, m in list(self.heard) if m == "WATCHDOG=1" and start <= t <= end]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def test_ready_status_watchdog_and_stopping(servers: Servers, systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    srv = servers.start({"chaos": {"app": CHAOS, **FAST}}, env=env, wait=False)
    wait_for(lambda: "READY=1" in systemd.lines(), 10)
    first = systemd.lines().index("READY=1")
    assert systemd.lines()[first + 1].startswith("STATUS=")  # sent with READY
    srv.wait_ready()
    wait_for(lambda: "STATUS=1/1 models ready: chaos ready" in systemd.lines(), 5)

    # Pings every 0.2 s while the loop turns.
    time.sleep(1.5)
    now = time.monotonic()
    pings = systemd.pings_between(now - 1.0, now)
    assert 3 <= len(pings) <= 7, pings

    # The front stopped (its loop with it): no ping; resumed: pings again.
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        time.sleep(1.2)
        resumed_at = time.monotonic()
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    # (a ping sent just before the stop may be read a little late)
    assert systemd.pings_between(stopped_at + 0.3, resumed_at) == []
    wait_for(lambda: systemd.pings_between(resumed_at, time.monotonic()), 3)

    # SIGTERM: STOPPING=1 with a draining STATUS line, then the process exits.
    assert "STOPPING=1" not in systemd.lines()
    srv.stop()
    lines = systemd.lines()
    stopping = lines.index("STOPPING=1")
    assert lines[stopping + 1].startswith("STATUS=draining: ")


def test_no_notify_socket_means_no_messages(servers: Servers, systemd: FakeSystemd) -> None:
    """Without NOTIFY_SOCKET the front sends nothing, even with WATCHDOG_USEC set."""
    srv = servers.start({"chaos": {"app": CHAOS, **FAST}},
                        env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    time.sleep(0.5)
    srv.stop()
    assert systemd.heard == []


def test_pings_stop_while_only_the_event_loop_is_blocked(tmp_path: Path,
                                                         systemd: FakeSystemd) -> None:
    """A wedge of the event loop alone, with the process running: the front's stderr is a
    pipe nobody reads (as when the log reader stalls), so its next log line blocks the loop
    thread in write() while its other threads go on. Pings from a thread would go on too;
    the front's stop, and come back once the pipe is read again."""
    port = free_port()
    config = tmp_path / "watchkeeper.toml"
    write_config(config, {"chaos": {"app": CHAOS, **FAST}},
                 {"port": port, "data_dir": str(tmp_path / "data"),
                  "cache_dir": str(tmp_path / "cache"), "grace_period_s": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
    env.update({"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    fcntl.fcntl(proc.stderr.fileno(), F_SETPIPE_SZ, 4096)  # fills with a dozen lines
    reader = PausableReader(proc.stderr.fileno())
    try:
        wait_for(lambda: "STATUS=1/1 models ready: chaos ready" in systemd.lines(), 30)
        reader.reading.clear()
        flood = in_background(send_unknown_model_requests, f"http://127.0.0.1:{port}")
        # Blocked once no ping came for 5 intervals; then silent for 7 more.
        wait_for(lambda: not systemd.pings_between(time.monotonic() - 1.0, time.monotonic()), 10)
        blocked_at = time.monotonic()
        time.sleep(1.4)
        assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED
        assert systemd.pings_between(blocked_at, time.monotonic()) == []
        reader.reading.set()
        resumed_at = time.monotonic()
        wait_for(lambda: len(systemd.pings_between(resumed_at, time.monotonic())) >= 2, 5)
        flood["thread"].join(30)
    finally:
        reader.reading.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.done.wait(5)
    assert "STOPPING=1" in systemd.lines()


F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the fcntl module from Python 3.10 on Linux


class PausableReader:
    """Reads a pipe in a thread while ``reading`` is set; a cleared event lets it fill."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reading = threading.Event()
        self.reading.set()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.reading.wait()
            if not os.read(self.fd, 65536):
                self.done.set()
                return


def send_unknown_model_requests(url: str) -> None:
    """Requests for a model that is not served: each one logs a request.error line."""
    with httpx.Client(base_url=url, timeout=0.5) as client:
        for _ in range(60):
            try:
                client.post("/v1/models/nothere/predict", json={"inputs": {}})
            except httpx.HTTPError:
                pass
