"""What a worker or template process does first: watch its parent, ignore Ctrl-C, lower its
priority, cap the maths libraries' threads, configure logging, name itself.

Runs in worker and template processes, before anything else.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from collections.abc import Sequence

from watchkeeper.logs import configure_logging
from watchkeeper.protocol.messages import ExitCode, WorkerSpec

__all__ = ["WORKER_NICENESS", "die_with_parent", "limit_threads", "set_title", "start_process"]


_PR_SET_PDEATHSIG = 1


#: Workers run slightly below the front so health answers stay fast when inference saturates the CPU.
WORKER_NICENESS = 5


def limit_threads(threads: int) -> None:
    """Cap the maths libraries' thread pools (set before import; torch told again after)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def set_title(role: str, spec: WorkerSpec) -> None:
    """Name the process for ps/top: ``watchkeeper worker embed#0`` (forked ones too)."""
    title = f"watchkeeper {role} {spec.model}" + (f"#{spec.replica}" if spec.replica >= 0 else "")
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # optional: ps then shows the interpreter's command line
        pass


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the front dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: end of stream on the socket still ends the worker
    if os.getppid() != parent_pid:
        os._exit(ExitCode.OK)


def start_process(role: str, argv: Sequence[str] | None) -> tuple[argparse.Namespace, WorkerSpec]:
    """What a worker or template process does first: parent watch, signals, threads, logs."""
    parser = argparse.ArgumentParser(prog=f"watchkeeper.{role}")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--plan-only", action="store_true", help="template: never call setup()")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when workers stop
    os.nice(WORKER_NICENESS)  # under CPU contention the front (health, routing) goes first
    spec = WorkerSpec(**json.loads(args.spec))
    limit_threads(spec.threads)
    configure_logging(spec.log_level, process=role, model=spec.model, replica=spec.replica)
    set_title(role, spec)
    return args, spec
