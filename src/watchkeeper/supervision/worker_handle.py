"""One worker process, seen from the front: start it, talk to it, kill it, see it exit.

Runs in the front process, on its event loop. No policy lives here (when to restart, what to
do with its requests): that is ``supervision.supervisor``'s and ``scheduling.scheduler``'s.

A replica is forked from its model's template (``watchkeeper.worker.template``: the weights are
already loaded) or started with ``subprocess.Popen`` (a fresh interpreter, nothing
inherited but one end of a socket pair), in a session of its own so a terminal's Ctrl-C
reaches only the front, which decides when workers stop. A worker asks the kernel to
SIGKILL it when its parent (the front, or the template) dies, and the template does the
same for the front, so no worker outlives its front. A kill is of the worker's whole
process group, and so is the clean-up after its exit (``supervision.process_group``):
what the model started dies with the worker.

Exit is noticed at once through a pidfd registered with the event loop; messages arrive
through an asyncio stream reader task. Both hand over to the owner's callbacks. A frame
the front cannot or will not decode (``protocol.wire.BadFrame``) ends the reading: it is
logged (``worker.bad_frame``) and the worker killed (reason ``bad_frame``), so its requests
get an error at once instead of waiting for their deadline.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import ExitCode, ModelSchema, WorkerSpec
from watchkeeper.protocol.wire import BadFrame, ChannelClosed, encode_parts, read_message
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.process_group import describe_returncode, kill_group
from watchkeeper.supervision.template_handle import TemplateHandle
from watchkeeper.supervision.worker_env import worker_environment

__all__ = ["ReplicaState", "WorkerHandle", "describe_exit"]


def _pid_alive(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

log = logging.getLogger("watchkeeper.replica")

#: The stream reader's buffer limit: large outputs arrive with less pausing and copying
#: (bench/transfer.py: 16 MB arrays 2x faster than with asyncio's default of 64 KiB).
READ_BUFFER_BYTES = 1 << 24


class ReplicaState(enum.Enum):
    STARTING = "starting"  # spawned, loading and warming up
    READY = "ready"  # idle, can take a batch
    BUSY = "busy"  # running a batch or a probe
    STOPPING = "stopping"  # told to stop, or being killed
    DEAD = "dead"


def describe_exit(returncode: int) -> str:
    """``exit code 3 (load_failed)`` or ``signal SIGKILL`` from a Popen return code: a
    worker's own exit codes named."""
    plain = describe_returncode(returncode)
    try:
        return f"{plain} ({ExitCode(returncode).name.lower()})" if returncode >= 0 else plain
    except ValueError:
        return plain


class WorkerHandle:
    """A handle on one worker process and its socket."""

    def __init__(
        self,
        spec: WorkerSpec,
        on_message: Callable[[WorkerHandle, Any], None],
        on_exit: Callable[[WorkerHandle, int], None],
    ) -> None:
        self.spec = spec
        self.index = spec.replica
        self.state = ReplicaState.STARTING
        self.pid: int | None = None
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.last_seen = self.started_at
        self.schema: ModelSchema | None = None
        self.device: str | None = None  # where the model runs, as the worker reported it
        self.timings_ms: dict[str, float] = {}
        self.kill_reason: KillReason | None = None
        self.kill_detail: str | None = None  # what was wrong, for a bad frame
        self.reporting = False  # the batch it runs has reported progress (a heartbeat)
        self.retiring = False  # recycled: its replacement serves; it takes no new work
        self.returncode: int | None = None
        self._on_message = on_message
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        self.forked_from: TemplateHandle | None = None
        self._exit_seen = False

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, template: TemplateHandle | None = None) -> None:
        """Fork the worker from ``template`` or spawn a fresh interpreter; returns once the
        process exists. Raises ForkError (the caller may spawn instead) or OSError."""
        ours, theirs = socket.socketpair()
        try:
            if template is not None:
                forked = await template.fork(self.spec, theirs.fileno())
                self.pid, self.forked_from = forked.pid, template
                self.timings_ms = {"fork": forked.fork_ms}
            else:
                self._proc = subprocess.Popen(
                    self._command(theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    env=worker_environment(self.spec.memory_limit_mb),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self.pid = self._proc.pid
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=READ_BUFFER_BYTES)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        self._watch_exit()

    def _command(self, fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "watchkeeper.worker",
            "--fd",
            str(fd),
            "--parent-pid",
            str(os.getpid()),
            "--spec",
            json.dumps(asdict(self.spec)),
        ]

    def _watch_exit(self) -> None:
        """Handle the exit as soon as the process ends (pidfd), or poll where there is none."""
        assert self.pid is not None
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            loop.create_task(self._poll_exit())
            return
        loop.add_reader(self._pidfd, self._pidfd_readable)

    async def _poll_exit(self) -> None:
        while self.pid is not None and _pid_alive(self.pid, self._proc):
            await asyncio.sleep(0.05)
        await self._exited()

    def _pidfd_readable(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        asyncio.get_running_loop().create_task(self._exited())

    async def _exited(self) -> None:
        if self._exit_seen:
            return
        self._exit_seen = True
        assert self.pid is not None
        if self.forked_from is not None:
            kill_group(self.pid, alone_too=False)  # its template reaps it, killing the group too
            self.returncode = await self.forked_from.exit_code(self.pid)
            if self.kill_reason is None and self.forked_from.dead:
                self.kill_reason = KillReason.TEMPLATE  # PDEATHSIG: it went with its template
        else:
            assert self._proc is not None
            # The pidfd is readable only once the process is a zombie: its group is still
            # its own to kill, and wait() returns at once.
            kill_group(self.pid, alone_too=False)
            self.returncode = self._proc.wait(timeout=5)
        self.state = ReplicaState.DEAD
        if self._writer is not None:
            self._writer.close()
        self._on_exit(self, self.returncode)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await read_message(reader)
            except ChannelClosed:
                return
            except BadFrame as exc:
                self._bad_frame(str(exc))
                return
            self.last_seen = time.monotonic()
            try:
                self._on_message(self, message)
            except Exception:  # a bug in a handler must not leave this worker unheard
                log.exception("handling a worker message failed",
                              extra={"model": self.spec.model, "pid": self.pid})

    def _bad_frame(self, error: str) -> None:
        log_event(log, "worker.bad_frame", logging.ERROR, model=self.spec.model,
                  replica=self.index, pid=self.pid, error=error)
        self.kill_detail = self.kill_detail or error
        self.kill(KillReason.BAD_FRAME)

    # --- talking and ending ------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Queue a message to the worker (never blocks; a dead socket shows up as an exit)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(encode_parts(message))

    def kill(self, reason: KillReason) -> None:
        """SIGKILL the worker; ``reason`` is kept for the logs, metrics and /health."""
        if self.state is ReplicaState.DEAD or self.pid is None:
            return
        self.kill_reason = self.kill_reason or reason
        log_event(log, "worker.killed", logging.WARNING, model=self.spec.model,
                  replica=self.index, pid=self.pid, reason=reason, state=self.state.value)
        self.state = ReplicaState.STOPPING
        kill_group(self.pid)

    async def wait_dead(self, timeout_s: float) -> bool:
        """Wait until the exit has been handled; False if it did not happen in time."""
        deadline = time.monotonic() + timeout_s
        while self.state is not ReplicaState.DEAD and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.state is ReplicaState.DEAD

    @property
    def alive(self) -> bool:
        return self.state is not ReplicaState.DEAD

    @property
    def idle(self) -> bool:
        """Ready for a batch: the scheduler sends work only to idle workers."""
        return self.state is ReplicaState.READY and not self.retiring
