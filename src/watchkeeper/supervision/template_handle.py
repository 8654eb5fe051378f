"""A model's template process, seen from the front: start it, ask it to fork workers.

Runs in the front process, on its event loop. The template (``watchkeeper.worker.template``)
loads the model once; each :meth:`TemplateHandle.fork` hands it one end of a new worker's
socket and gets back the pid of a child that is already past the import and the weight
load. Children are the template's, so it reports their exit codes (``ChildExited``); the
front still sees each exit at once through the child's pidfd.

Messages travel on a SOCK_SEQPACKET socket (one message per packet, file descriptors
attached), read by a reader callback registered with the event loop and decoded with the
front's allow-list (``protocol.unpickling``; a frame it refuses gets the template killed).

A template that stops answering is FROZEN and killed (its process group, see
``supervision.process_group``; the keeper starts another): no answer to a fork within
``FORK_TIMEOUT_S``, to a plan within ``PLAN_TIMEOUT_S``, or no message at all (it sends a
``Heartbeat`` every idle ``heartbeat_interval_s``) for the model's ``heartbeat_timeout_s``
(checked by ``silent_for``, from the supervisor's watch loop). A plan cut short by its
request's own deadline says nothing about the template.
"""

from __future__ import annotations

import array
import asyncio
import enum
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import (
    ChildExited,
    Forked,
    ForkFailed,
    ForkRequest,
    LoadFailed,
    Planned,
    PlanRequest,
    TemplateReady,
    WorkerSpec,
)
from watchkeeper.protocol.wire import BadFrame, decode_from_worker
from watchkeeper.supervision.process_group import exited_unreaped, kill_group
from watchkeeper.supervision.worker_env import worker_environment

__all__ = ["TemplateState", "TemplateHandle", "ForkError", "FORK_TIMEOUT_S", "PLAN_TIMEOUT_S"]

log = logging.getLogger("watchkeeper.template")

#: Longest a fork may take before the template is considered stuck (and killed).
FORK_TIMEOUT_S = 5.0
#: Longest a plan (a request's degradation ladder) may take.
PLAN_TIMEOUT_S = 2.0
#: How long to wait for a dead child's exit code from its template.
EXIT_CODE_TIMEOUT_S = 2.0
#: How often the template's exit is looked for (it is not the front's own child's pidfd).
EXIT_POLL_INTERVAL_S = 0.05


class TemplateState(enum.Enum):
    STARTING = "starting"
    READY = "ready"  # loaded: plans, and forks unless fork_hazard says why not
    FROZEN = "frozen"  # stopped answering: being killed and replaced
    FAILED = "failed"  # setup failed (LoadFailed)
    DEAD = "dead"


class ForkError(Exception):
    """The template could not fork a worker (it failed, timed out or is gone)."""


class TemplateHandle:
    """The front's handle on one template process."""

    def __init__(self, spec: WorkerSpec, plan_only: bool = False) -> None:
        self.spec = spec
        self.plan_only = plan_only
        self.fork_hazard: str | None = None
        self.plans = False
        self.state = TemplateState.STARTING
        self.pid: int | None = None
        self.timings_ms: dict[str, float] = {}
        self.error: str | None = None
        self.returncode: int | None = None
        self.dead = False
        self.failed_stage: str | None = None  # import | setup, when loading failed
        self.last_seen = time.monotonic()  # its last message (a Heartbeat at least, when idle)
        self.kill_reason: str | None = None  # frozen | bad_frame | a keeper's reason
        self.kill_detail: str | None = None
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._changed = asyncio.Event()
        self._tokens = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Any]] = {}  # token -> Forked or Planned
        self._exits: dict[int, asyncio.Future[int]] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [sys.executable, "-m", "watchkeeper.worker.template", "--fd", str(theirs.fileno()),
                       "--parent-pid", str(os.getpid()), "--spec", json.dumps(asdict(self.spec))]
            self._proc = subprocess.Popen(
                command + (["--plan-only"] if self.plan_only else []),
                env=worker_environment(self.spec.memory_limit_mb),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self.last_seen = time.monotonic()
        ours.setblocking(False)
        self._sock = ours
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), self._readable)
        loop.create_task(self._wait_exit())
        log_event(log, "template.start", model=self.spec.model, pid=self.pid)

    async def _wait_exit(self) -> None:
        assert self._proc is not None and self.pid is not None
        while not exited_unreaped(self.pid):
            await asyncio.sleep(EXIT_POLL_INTERVAL_S)
        kill_group(self.pid, alone_too=False)  # what its setup started; before the reap
        self.returncode = self._proc.wait()
        self._gone(f"the template exited ({self.returncode})")

    def _gone(self, why: str) -> None:
        """The process or its socket is gone (FAILED is kept as it was)."""
        if self.dead:
            return
        self.dead = True
        if self.state in (TemplateState.STARTING, TemplateState.READY, TemplateState.FROZEN):
            self.state, self.error = TemplateState.DEAD, self.error or why
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        futures: list[asyncio.Future[Any]] = [*self._answers.values(), *self._exits.values()]
        for future in futures:
            if not future.done():
                future.set_exception(ForkError(why))
        self._changed.set()

    def poll(self) -> int | None:
        """The process's return code once it has exited (None while it runs)."""
        return self._proc.poll() if self._proc is not None else None

    def kill(self, reason: str | None = None, detail: str | None = None) -> None:
        """SIGKILL the template's process group; the first reason given is kept."""
        if self.kill_reason is None:
            self.kill_reason, self.kill_detail = reason, detail
        if self._proc is not None and self.pid is not None and self._proc.returncode is None:
            kill_group(self.pid)

    def freeze(self, why: str) -> None:
        """It stopped answering: FROZEN, then killed (the keeper starts another)."""
        if self.dead or self.state is TemplateState.FROZEN:
            return
        self.state = TemplateState.FROZEN
        log_event(log, "template.frozen", logging.ERROR, model=self.spec.model, pid=self.pid,
                  reason=why)
        self.kill("frozen", why)
        self._changed.set()

    def silent_for(self, now: float) -> float:
        """Seconds since its last message, while it is READY (0 in any other state)."""
        return now - self.last_seen if self.state is TemplateState.READY else 0.0

    async def wait_settled(self, timeout_s: float) -> TemplateState:
        """Wait until the template is ready, unsafe, failed or dead (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        while self.state is TemplateState.STARTING:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        return self.state

    async def wait_dead(self) -> None:
        while not self.dead:
            self._changed.clear()
            await self._changed.wait()

    # --- messages ---------------------------------------------------------------------

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(f"the template's socket failed: {exc}")
            return
        if not data:
            self._gone("the template closed its socket")
            return
        self.last_seen = time.monotonic()
        try:
            message = decode_from_worker(data)
        except BadFrame as exc:
            log_event(log, "template.bad_frame", logging.ERROR, model=self.spec.model,
                      pid=self.pid, error=str(exc))
            self.kill("bad_frame", str(exc))
            return
        self._handle(message)

    def _handle(self, message: Any) -> None:
        if isinstance(message, Forked | ForkFailed | Planned):
            future = self._answers.pop(message.token, None)
            if future is not None and not future.done():
                if isinstance(message, ForkFailed):
                    future.set_exception(ForkError(message.error))
                else:
                    future.set_result(message)
        elif isinstance(message, ChildExited):
            self._exit_future(message.pid).set_result(message.returncode)
        elif isinstance(message, TemplateReady):
            self.state, self.timings_ms = TemplateState.READY, message.timings_ms
            self.fork_hazard, self.plans = message.fork_hazard, message.plans
            log_event(log, "template.ready", model=self.spec.model, pid=self.pid,
                      startup_ms=message.timings_ms, fork_hazard=message.fork_hazard,
                      plans=message.plans, threads=message.native_threads)
        elif isinstance(message, LoadFailed):
            self.state, self.error = TemplateState.FAILED, f"{message.stage}: {message.error}"
            self.failed_stage = message.stage
        self._changed.set()

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
        return future

    # --- forking ---------------------------------------------------------------------

    @property
    def can_fork(self) -> bool:
        return self.state is TemplateState.READY and self.fork_hazard is None

    async def fork(self, spec: WorkerSpec, fd: int) -> Forked:
        """Fork a worker that will speak on ``fd``; raises ForkError."""
        if not self.can_fork:
            raise ForkError(f"the template cannot fork ({self.fork_hazard or self.state.value})")
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        try:
            forked: Forked = await self._ask(lambda token: ForkRequest(token, spec), fds,
                                             FORK_TIMEOUT_S)
        except TimeoutError:
            self.freeze(f"no answer to a fork within {FORK_TIMEOUT_S} s")
            raise ForkError(f"the template did not fork within {FORK_TIMEOUT_S} s") from None
        return forked

    async def plan(self, params: dict[str, Any], timeout_s: float = PLAN_TIMEOUT_S) -> Planned:
        """The ladder for ``params``, waited for at most ``timeout_s`` (what is left of the
        request's deadline) and ``PLAN_TIMEOUT_S``; raises ForkError or TimeoutError. Only
        a wait of the whole ``PLAN_TIMEOUT_S`` finds the template frozen."""
        if self.state is not TemplateState.READY:
            raise ForkError(f"the template is {self.state.value}")
        wait_s = max(0.0, min(PLAN_TIMEOUT_S, timeout_s))
        try:
            planned: Planned = await self._ask(lambda token: PlanRequest(token, params), [], wait_s)
        except TimeoutError:
            if wait_s >= PLAN_TIMEOUT_S:
                self.freeze(f"no answer to a plan within {PLAN_TIMEOUT_S} s")
            raise
        return planned

    async def _ask(self, make: Any, fds: list[Any], timeout_s: float) -> Any:
        if self._sock is None:
            raise ForkError("the template is gone")
        token = next(self._tokens)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[token] = future
        try:
            self._sock.sendmsg([pickle.dumps(make(token), protocol=5)], fds)
            return await asyncio.wait_for(future, timeout_s)
        except OSError as exc:
            raise ForkError(f"could not reach the template: {exc}") from None
        finally:
            self._answers.pop(token, None)

    async def exit_code(self, pid: int) -> int:
        """A forked child's return code, as its template reports it (-9 if unknown)."""
        if self.dead and pid not in self._exits:
            return -signal.SIGKILL  # its template is gone and took it along (PDEATHSIG)
        try:
            return await asyncio.wait_for(self._exit_future(pid), EXIT_CODE_TIMEOUT_S)
        except (TimeoutError, ForkError):
            return -signal.SIGKILL  # its template died, and took it along (PDEATHSIG)
        finally:
            self._exits.pop(pid, None)
