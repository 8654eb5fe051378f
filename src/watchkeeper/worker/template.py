"""The template process: a model loaded once, from which workers are forked.

Runs in a model's template process, started by ``watchkeeper.supervision.template_handle`` as
``python -m watchkeeper.worker.template --fd N --parent-pid P --spec JSON``.

It imports the app and runs ``setup`` (weights read and deserialised once), and never
runs inference. Each ``ForkRequest`` forks a child that shares the loaded weights
copy-on-write, becomes an ordinary worker on the socket passed with the request, warms
up and reports Ready, so a replaced worker is serving in the time of a fork and a
warm-up instead of an interpreter start, imports and a weight load.

Forking is only safe in a process that has never initialised CUDA and has started no
Python threads; the template checks after ``setup`` and says so in ``TemplateReady``
(the front then spawns workers the ordinary way, and restarts the template plan-only).

The template also plans: for a request's params it returns the ladder of the model's
``degrade`` steps with each one's ``estimate_memory``, which the front's admission uses.
Started with ``--plan-only`` (GPU models, or forking turned off) it imports the model's
class but never calls ``setup``: it only plans.

Threads: one. State: the model, the control socket, the children. The template reaps
its children (SIGCHLD wakes the loop through a self-pipe) and reports their exit codes;
each forked child starts a session (a process group) of its own, and the template
SIGKILLs that group before reaping the child, so nothing the model started outlives its
worker (``supervision.process_group``). It dies with the front (PR_SET_PDEATHSIG) and its
children die with it. Idle, it sends a ``Heartbeat`` every ``heartbeat_interval_s``: a
template that stops answering (frozen, stopped) is seen by the front and replaced.
"""

from __future__ import annotations

import logging
import operator
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from watchkeeper.contract import Model
from watchkeeper.logs import configure_logging, log_event
from watchkeeper.protocol.messages import (
    ChildExited,
    ExitCode,
    Forked,
    ForkFailed,
    ForkRequest,
    Heartbeat,
    Planned,
    PlanRequest,
    TemplateReady,
    WorkerSpec,
)
from watchkeeper.protocol.wire import BlockingChannel
from watchkeeper.worker.loading import LoadError, load_model
from watchkeeper.worker.loop import Worker, describe_validation, error_info, run_worker
from watchkeeper.worker.process import die_with_parent, set_title, start_process

__all__ = ["MAX_MESSAGE", "MAX_RUNGS", "Template", "fork_hazard", "main",
           "native_threads"]

log = logging.getLogger("watchkeeper.template")

#: Largest control message; they are small dataclasses.
MAX_MESSAGE = 1 << 16
#: Most rungs of a degradation ladder (a degrade() that never ends is cut here).
MAX_RUNGS = 16


def native_threads() -> int:
    """OS threads in this process (Python and native, e.g. a maths library's pool)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def fork_hazard(device: str) -> str | None:
    """Why forking this process would be unsafe, or None when it is safe."""
    torch = sys.modules.get("torch")
    if device.startswith("cuda") or (torch is not None and torch.cuda.is_initialized()):
        return "CUDA is initialised, and CUDA cannot be used in a forked child"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        return f"setup() started Python threads ({names}); a forked child would not have them"
    return None


class Template:
    """The fork loop of a loaded model."""

    def __init__(self, control: socket.socket, model: Model, device: str, can_fork: bool,
                 heartbeat_interval_s: float = 1.0) -> None:
        self.control = control
        self.heartbeat_interval_s = heartbeat_interval_s
        self.model = model
        self.device = device
        self.can_fork = can_fork
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    def send(self, message: Any) -> None:
        self.control.send(pickle.dumps(message, protocol=5))

    def serve(self) -> int:
        """Fork on request and reap children until the front closes the socket; a
        heartbeat on every idle turn."""
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        while True:
            readable, _, _ = select.select([self.control.fileno(), self._wake_r], [], [],
                                           self.heartbeat_interval_s)
            if not readable:
                self.send(Heartbeat())
            if self._wake_r in readable:
                self._drain_wakeups()
                self.reap()
            if self.control.fileno() in readable:
                data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 1)
                if not data:
                    return ExitCode.OK  # the front is gone
                request = pickle.loads(data)
                if isinstance(request, PlanRequest):
                    self.send(self.plan(request))
                elif isinstance(request, ForkRequest) and fds:
                    self.fork(request, fds[0])

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def reap(self) -> None:
        """Reap each exited child, its process group SIGKILLed first (while the zombie
        holds the group's id), and report its exit code."""
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            _kill_group(info.si_pid)
            pid, status = os.waitpid(info.si_pid, 0)
            self.children.discard(pid)
            self.send(ChildExited(pid, os.waitstatus_to_exitcode(status)))

    def plan(self, request: PlanRequest) -> Planned:
        """The ladder of a request's params: each rung validated, with its estimate."""
        cls = type(self.model)
        try:
            params: Any = cls.Params.model_validate(request.params)
            rungs: list[tuple[dict[str, Any], int | None]] = []
            while params is not None and len(rungs) < MAX_RUNGS:
                rungs.append((params.model_dump(mode="json"), _bytes(self.model.estimate_memory(params))))
                params = self.model.degrade(params)
        except ValidationError as exc:
            return Planned(request.token, error=error_info(describe_validation("params", exc, cls.Params)))
        except Exception as exc:  # a bug in estimate_memory or degrade: the request gets 500
            log.exception("planning failed", extra={"app": type(self.model).__name__})
            return Planned(request.token, error=error_info(exc))
        return Planned(request.token, tuple(rungs))

    def fork(self, request: ForkRequest, fd: int) -> None:
        if not self.can_fork:
            os.close(fd)
            self.send(ForkFailed(request.token, "this template does not fork"))
            return
        start = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(fd)
            self.send(ForkFailed(request.token, f"fork failed: {exc}"))
            return
        if pid == 0:
            os._exit(self._become_worker(request, fd))
        os.close(fd)
        self.children.add(pid)
        self.send(Forked(request.token, pid, round((time.perf_counter() - start) * 1000, 2)))

    def _become_worker(self, request: ForkRequest, fd: int) -> int:
        """In the child: a process group of its own, drop the template's parts, then live
        as an ordinary worker."""
        try:
            os.setsid()  # what the model starts is killed with this worker, not the template
            template_pid = os.getppid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for own in (self._wake_r, self._wake_w):
                os.close(own)
            self.control.close()
            die_with_parent(template_pid)
            spec = request.spec
            configure_logging(spec.log_level, process="worker", model=spec.model, replica=spec.replica)
            set_title("worker", spec)
            worker = Worker(spec, BlockingChannel(socket.socket(fileno=fd)), self.model, self.device)
            return run_worker(worker)
        except BaseException:  # nothing may return into the template's loop
            log.exception("forked worker failed")
            return 1  # as an uncaught exception ends a spawned worker


def _bytes(estimate: Any) -> int | None:
    """``estimate_memory``'s answer as a plain int (a numpy integer would not cross)."""
    if estimate is None:
        return None
    try:
        return operator.index(estimate)
    except TypeError:
        raise TypeError(f"estimate_memory returned {type(estimate).__name__}, not an int or None") from None


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # it never became a group leader, or its group is gone


def main(argv: Sequence[str] | None = None) -> int:
    args, spec = start_process("template", argv)
    control = socket.socket(fileno=args.fd)
    try:
        return _run(control, spec, plan_only=bool(args.plan_only))
    except ConnectionError:  # the front is gone (it was killed): end quietly, as a worker does
        return ExitCode.OK


def _run(control: socket.socket, spec: WorkerSpec, plan_only: bool) -> int:

    def template_send(message: Any) -> None:
        control.send(pickle.dumps(message, protocol=5))

    timings: dict[str, float] = {}
    try:
        model, device = load_model(spec, timings, template_send, set_up=not plan_only)
    except LoadError as exc:
        return exc.exit_code
    hazard = "started plan-only" if plan_only else fork_hazard(device)
    plans = any(getattr(type(model), m) is not getattr(Model, m) for m in ("estimate_memory", "degrade"))
    template_send(TemplateReady(os.getpid(), device, timings, native_threads(), hazard, plans))
    log_event(log, "template.ready", device=device, startup_ms=timings, fork_hazard=hazard,
              plans=plans, threads=native_threads())
    return Template(control, model, device, can_fork=hazard is None,
                    heartbeat_interval_s=spec.heartbeat_interval_s).serve()


if __name__ == "__main__":
    sys.exit(main())
