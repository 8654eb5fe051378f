"""A worker's or template's process group: each starts in its own, and is killed whole.

Runs in the front process (the worker and template handles), and in the template for the
workers it forks. A model may start processes of its own (a converter, a tool); they
inherit its process group. Killing only the worker would leave them running, orphaned, for
ever; so the front SIGKILLs the whole group when it kills a worker or the template, and
again once the process has exited (what its children left behind). Spawned workers and
templates start a new session (``start_new_session``); a forked worker calls ``setsid``
first thing in the child (``worker.template``). Until then its group is its template's,
and killing falls back to the process alone.

The group is signalled while its leader is a zombie or has living members, so its id
cannot have been reused: call :func:`kill_group` before the leader is reaped.
"""

from __future__ import annotations

import os
import signal

__all__ = ["describe_returncode", "exited_unreaped", "kill_group"]


def describe_returncode(returncode: int) -> str:
    """``exit code 1`` or ``signal SIGKILL``, from a Popen (or waitid) return code."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def kill_group(pid: int, *, alone_too: bool = True) -> None:
    """SIGKILL the process group led by ``pid``; when it leads none (a forked worker before
    its ``setsid``) and ``alone_too``, the process alone. After an exit, pass
    ``alone_too=False``: the pid alone may already be reaped and reused."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except (ProcessLookupError, PermissionError):
        if not alone_too:
            return  # no group of that id: not (yet) its own group leader, or all gone
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def exited_unreaped(pid: int) -> bool:
    """True once child ``pid`` has exited; it stays a zombie (not reaped) for kill_group."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped
    return info is not None
