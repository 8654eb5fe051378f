"""Keeps the web UI process alive: starts it, watches it, restarts it, stops it with the front.

Runs in the front process, as one asyncio task (``front.runtime`` starts it when ``[ui] enabled``
or ``watchkeeper serve --ui``). The UI (``python -m watchkeeper.ui``) is a client of the HTTP API
in a process of its own, so a crash or a hang in it never touches the API. The keeper:

- starts it once the models have settled (none is ``starting``; at most ``START_GATE_MAX_S``),
  so its import (Gradio) does not take the CPU from the models' loading: ``/readyz`` comes as
  soon as without a UI. The UI runs in a session (process group) of its own, ``UI_NICENESS``
  below the front, with ``GRADIO_ANALYTICS_ENABLED=False``, and dies with the front: a small
  launcher asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, as the
  workers do) and then execs the UI, so nothing runs between fork and exec in the front.
- watches it: its exit is seen at once (a pidfd); every ``check_interval_s`` it asks
  ``GET /livez`` (``check_timeout_s``); ``check_failures`` failed checks in a row (a hang, a
  SIGSTOP) get its whole process group SIGKILLed. A new process has ``start_timeout_s`` to
  pass its first check (checked every ``STARTING_CHECK_S`` until then).
- starts it again after 0.5 s, doubling up to ``restart_backoff_max_s``; back to 0.5 s once a
  UI has stayed up ``STABLE_AFTER_S``.
- starts none while its port is taken by another process: ``ui.port_taken`` in the log,
  ``ui.error`` in ``/health``, and another try on the same back-off.
- stops it when the front drains: SIGTERM, then SIGKILL of the group after ``UI_STOP_TIMEOUT_S``.

Nothing here blocks the loop: the checks are asyncio connections with a timeout, the exit a
pidfd reader. Its state (:meth:`UiKeeper.view`) is ``/health``'s ``ui``; every restart counts
in ``watchkeeper_ui_restarts_total{reason}`` (reasons: ``front.metrics.UI_RESTART_REASONS``).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from watchkeeper.config import ServerConfig, UiConfig
from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.supervision.process_group import describe_returncode, kill_group

__all__ = ["STABLE_AFTER_S", "START_GATE_MAX_S", "UI_NICENESS", "UI_PROGRAM", "UI_STOP_TIMEOUT_S",
           "UiKeeper", "UiState", "api_url", "ui_url"]

log = logging.getLogger("watchkeeper.ui_keeper")

#: What is started, before its arguments (tests start a stand-in instead).
UI_PROGRAM: tuple[str, ...] = (sys.executable, "-m", "watchkeeper.ui")
#: The UI runs this much below the front's priority: the API goes first when the CPU is busy.
UI_NICENESS = 5
#: How long a stop waits after SIGTERM before it SIGKILLs the UI's process group.
UI_STOP_TIMEOUT_S = 3.0
#: A UI up this long resets the restart back-off to its first step.
STABLE_AFTER_S = 10.0
#: Longest the first start waits for the models to settle.
START_GATE_MAX_S = 60.0
#: How often a starting UI is asked for /livez (until it answers, or ``start_timeout_s``).
STARTING_CHECK_S = 0.2
FIRST_BACKOFF_S = 0.5

#: Run with ``python -c``: die with the front (argv[1] is its pid), lower the priority, exec the UI.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(0)\n"
    f"os.nice({UI_NICENESS})\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
_ANY_ADDRESS = ("", "0.0.0.0", "::")


class UiState(enum.Enum):
    STARTING = "starting"  # waiting for the models, or started and not yet answering /livez
    UP = "up"  # answers its liveness checks
    RESTARTING = "restarting"  # gone (exited, killed) or its port taken: the back-off runs
    STOPPED = "stopped"  # the front is stopping


def _local(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard: the loopback)."""
    return "127.0.0.1" if host in _ANY_ADDRESS else host


def _in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def api_url(server: ServerConfig) -> str:
    """The API's address as the UI calls it (``http://127.0.0.1:8000`` for ``0.0.0.0``)."""
    return f"http://{_in_url(_local(server.host))}:{server.port}"


def ui_url(ui: UiConfig, server: ServerConfig) -> str:
    """The UI's address on this machine (printed at start-up, in ``/health``)."""
    return f"http://{_in_url(_local(ui.host or server.host))}:{ui.port}"


class UiKeeper:
    """The web UI process of one front: kept up until :meth:`stop`."""

    def __init__(self, ui: UiConfig, server: ServerConfig, *, gate: Callable[[], bool] = lambda: True,
                 program: Sequence[str] = UI_PROGRAM) -> None:
        self.ui = ui
        self.host = ui.host or server.host
        self.port = ui.port
        self.url = ui_url(ui, server)
        self.api = api_url(server)
        self.allowed_hosts = list(server.allowed_hosts)
        self.program = list(program)
        self.state = UiState.STARTING
        self.pid: int | None = None
        self.restarts = 0  # processes started after the first one
        self.last_exit: str | None = None
        self.last_exit_at: float | None = None
        self.last_restart_reason: str | None = None
        self.error: str | None = None  # why no UI runs now (its port taken), else None
        self.up_since: float | None = None
        self.failed_checks = 0
        self._gate = gate
        self._started = 0
        self._backoff = FIRST_BACKOFF_S
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited = asyncio.Event()
        self._pidfd: int | None = None
        self._kill: tuple[str, str] | None = None  # (reason, detail) of our own kill
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    # --- the front's side ------------------------------------------------------------

    def start(self) -> None:
        """Start keeping the UI (a task on the running loop); returns at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep())

    def stop_soon(self) -> None:
        """Begin the stop (the front's drain); :meth:`stop` awaits it."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop_once())

    async def stop(self) -> None:
        """Stop keeping it: SIGTERM, SIGKILL after ``UI_STOP_TIMEOUT_S``. Started once; every
        caller awaits the same stop."""
        self.stop_soon()
        assert self._stopping is not None
        await asyncio.shield(self._stopping)

    def arguments(self) -> list[str]:
        """The UI's command-line arguments: the API to call, where to listen, the hosts allowed."""
        args = ["--api", self.api, "--host", self.host, "--port", str(self.port)]
        for host in self.allowed_hosts:
            args += ["--allowed-host", host]
        return args

    def view(self) -> dict[str, Any]:
        """``/health``'s ``ui``."""
        return {
            "state": self.state.value,
            "url": self.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "last_restart_reason": self.last_restart_reason,
            "error": self.error,
            "up_since": self.up_since,
            "failed_checks": self.failed_checks,
        }

    # --- keeping -----------------------------------------------------------------------

    async def _keep(self) -> None:
        deadline = time.monotonic() + START_GATE_MAX_S
        while not self._gate() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        while True:
            try:
                reason = await self._run_once()
            except Exception as exc:  # a bug here must not leave the UI unkept
                log_event(log, "ui.keeper_error", logging.ERROR, exc_info=exc)
                reason = "exit"
            self.state, self.up_since, self.last_restart_reason = UiState.RESTARTING, None, reason
            metrics.count_ui_restart(reason)
            cap = self.ui.restart_backoff_max_s
            delay, self._backoff = min(self._backoff, cap), min(self._backoff * 2, cap)
            log_event(log, "ui.restart", logging.WARNING, reason=reason, in_s=delay,
                      last_exit=self.last_exit, error=self.error)
            await asyncio.sleep(delay)

    async def _run_once(self) -> str:
        """Start one UI and watch it until it is gone; why it is to be started again."""
        problem = await self._port_problem()
        if problem is not None:
            if problem != self.error:
                log_event(log, "ui.port_taken", logging.ERROR, host=self.host, port=self.port,
                          error=problem, suggestion="Free the port, or set [ui] port to another one; "
                          "the API serves meanwhile.")
            self.error = problem
            return "port_taken"
        self.error = None
        try:
            self._spawn()
        except OSError as exc:
            self.error = f"could not start the UI: {exc}"
            log_event(log, "ui.spawn_failed", logging.ERROR, error=self.error)
            return "exit"
        return await self._watch()

    def _spawn(self) -> None:
        command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *self.program, *self.arguments()]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self._proc, self.pid, self._kill, self.failed_checks = proc, proc.pid, None, 0
        self._exited = asyncio.Event()
        if self._started:
            self.restarts += 1
        self._started += 1
        self.state = UiState.STARTING
        self._watch_exit(proc.pid)
        log_event(log, "ui.start", pid=proc.pid, url=self.url, api=self.api, restarts=self.restarts)

    async def _watch(self) -> str:
        started = time.monotonic()
        while True:
            interval = STARTING_CHECK_S if self.state is UiState.STARTING else self.ui.check_interval_s
            if await self._exit_within(interval):
                return self._kill[0] if self._kill else "exit"
            ok, why = await self._check()
            if self._exited.is_set():
                continue
            if ok:
                self._passed(started)
            elif self.state is UiState.STARTING:
                if time.monotonic() - started > self.ui.start_timeout_s:
                    return await self._kill_and_wait(
                        "start_timeout", f"no answer to /livez within {self.ui.start_timeout_s:g} s: {why}")
            else:
                self.failed_checks += 1
                log_event(log, "ui.check_failed", logging.WARNING, pid=self.pid, error=why,
                          failed_checks=self.failed_checks, of=self.ui.check_failures)
                if self.failed_checks >= self.ui.check_failures:
                    return await self._kill_and_wait(
                        "unresponsive", f"{self.failed_checks} liveness checks failed: {why}")

    def _passed(self, started: float) -> None:
        self.failed_checks = 0
        now = time.time()
        if self.state is UiState.STARTING:
            self.state, self.up_since = UiState.UP, now
            log_event(log, "ui.up", pid=self.pid, url=self.url,
                      startup_s=round(time.monotonic() - started, 2))
        elif self.up_since is not None and now - self.up_since >= STABLE_AFTER_S:
            self._backoff = FIRST_BACKOFF_S

    async def _kill_and_wait(self, reason: str, detail: str) -> str:
        self._kill = (reason, detail)
        log_event(log, "ui.killed", logging.WARNING, pid=self.pid, reason=reason, detail=detail)
        if self.pid is not None:
            kill_group(self.pid)
        await self._exit_within(UI_STOP_TIMEOUT_S)
        return reason

    async def _check(self) -> tuple[bool, str]:
        """``GET /livez`` of the UI: (answered 200, else what went wrong)."""
        host, timeout = _local(self.host), self.ui.check_timeout_s
        request = (f"GET /livez HTTP/1.1\r\nHost: {_in_url(host)}:{self.port}\r\n"
                   "Connection: close\r\n\r\n").encode("ascii")
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, self.port)
                writer.write(request)
                line = await reader.readline()
        except TimeoutError:
            return False, f"no answer within {timeout:g} s"
        except (OSError, ValueError) as exc:
            return False, getattr(exc, "strerror", None) or str(exc)
        finally:
            if writer is not None:
                writer.transport.abort()
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) == HTTPStatus.OK:
            return True, ""
        return False, f"answered {line.decode('latin-1').strip()!r}"

    async def _port_problem(self) -> str | None:
        """Why the UI could not listen on its port now (taken by another process), else None."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            return f"the UI's host {self.host!r} does not resolve: {exc}"
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {self.port} on {self.host} is taken by another process"
                return f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
        return None

    # --- the process's exit ------------------------------------------------------------

    def _watch_exit(self, pid: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            loop.create_task(self._poll_exit(pid))
            return
        loop.add_reader(self._pidfd, self._exit_seen, pid)

    async def _poll_exit(self, pid: int) -> None:
        while self._proc is not None and self._proc.pid == pid and self._proc.poll() is None:
            await asyncio.sleep(0.05)
        self._exit_seen(pid)

    def _exit_seen(self, pid: int) -> None:
        """The UI exited: clean up its group (it is a zombie: the group id is still its own),
        reap it, say how it ended."""
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        proc = self._proc
        if proc is None or proc.pid != pid or self._exited.is_set():
            return
        kill_group(pid, alone_too=False)
        returncode = proc.wait()
        self.last_exit = describe_returncode(returncode)
        if self._kill is not None:
            self.last_exit += f", killed: {self._kill[0]} ({self._kill[1]})"
        self.last_exit_at, self.pid = time.time(), None
        level = logging.INFO if self._stopping is not None else logging.WARNING
        log_event(log, "ui.exit", level, pid=pid, returncode=returncode, exit=self.last_exit)
        self._exited.set()

    async def _exit_within(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _stop_once(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=UI_STOP_TIMEOUT_S)
        proc = self._proc
        if proc is not None and not self._exited.is_set():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            if not await self._exit_within(UI_STOP_TIMEOUT_S):
                self._kill = ("stopped", f"no exit within {UI_STOP_TIMEOUT_S:g} s of SIGTERM")
                kill_group(proc.pid)
                await self._exit_within(UI_STOP_TIMEOUT_S)
        self.state, self.up_since = UiState.STOPPED, None
        log_event(log, "ui.stop", last_exit=self.last_exit)
