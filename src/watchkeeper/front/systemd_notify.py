"""systemd's notify protocol, spoken by the front process: READY, STATUS, WATCHDOG, STOPPING.

Runs in the front process. :class:`Notifier` is a datagram socket to ``$NOTIFY_SOCKET`` (a
path, or an abstract name written ``@name``), written with the standard library; without
``NOTIFY_SOCKET`` there is no link at all, so the front behaves the same outside systemd.
The three variables are read once and removed from the environment, so the worker and
template processes (which inherit it) never see them.

:class:`SystemdLink` runs one task on the front's event loop, and sends:

- ``READY=1`` when uvicorn serves: its socket listens and the runtime has started (the
  models load after that). Not when ``/readyz`` would first say ready, because
  ``READY=1`` means "the service is up", and the front is up: it answers and tells the
  truth about its models, which is its job. Waiting for the models would hold
  ``systemctl start`` (and every unit ordered after it) for as long as the slowest model
  loads, and a model that cannot load (``failed``, waiting for an operator) would make
  systemd kill and restart, forever, a front that works as designed; model readiness is
  ``/readyz``'s business, for load balancers. And systemd enforces the watchdog only from
  ``READY=1`` on, so a front that wedges while its models load is caught too.
- ``STATUS=`` lines with the models' states (``2/3 models ready: cartoon starting, chaos
  ready, embed ready``), shown by ``systemctl status``; sent when the line changes,
  checked every ``STATUS_INTERVAL_S``.
- ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` (read as ``sd_watchdog_enabled()`` reads
  it: a positive integer, and ``WATCHDOG_PID`` unset or this process), from the event loop's
  own task, and only while every supervisor's watch task runs: a wedged loop or a dead
  watch stops the pings, and systemd (``WatchdogSec=``) kills the front and restarts the
  service. A withheld ping is logged once (``systemd.watchdog_withheld``), with why.
- ``STOPPING=1`` when the drain starts (the first SIGTERM or SIGINT). From then on the pings
  go on while the loop turns, without the watch condition: the watches end on purpose in
  the shutdown's last step.

Sends never block and never raise: a datagram that cannot be sent (systemd gone, its
queue full) is dropped, and the first such failure is logged. Nothing is waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

from watchkeeper.front.health import SERVING_STATES
from watchkeeper.logs import log_event

__all__ = [
    "Notifier",
    "STATUS_INTERVAL_S",
    "SystemdLink",
    "notify_address",
    "status_line",
    "watchdog_interval_s",
]

log = logging.getLogger("watchkeeper.systemd")

#: How often the STATUS line is rebuilt (sent only when it changed).
STATUS_INTERVAL_S = 1.0
#: The environment variables of the protocol, removed once read.
ENV_NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names: an absolute path, or ``@name`` for
    Linux's abstract namespace (a leading NUL byte); None for anything else (e.g. the
    ``vsock:`` addresses of newer systemd, which the front does not speak)."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when the watchdog is off for this
    process: the variable unset or not a positive integer, or ``WATCHDOG_PID`` naming
    another process (it is then meant for a parent); as ``sd_watchdog_enabled()``."""
    usec = _positive_int(environ.get("WATCHDOG_USEC", ""))
    if usec is None:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None and _positive_int(watchdog_pid) != pid:
        return None
    return usec / 2 / 1_000_000


def _positive_int(text: str) -> int | None:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        return None
    return value if value > 0 else None


def status_line(states: Mapping[str, str], overloaded: list[str], shutting_down: bool) -> str:
    """One line for ``systemctl status``: ``2/3 models ready: cartoon starting, chaos
    ready, embed ready`` (``draining:`` first during a shutdown; full queues last)."""
    serving = sum(1 for state in states.values() if state in SERVING_STATES)
    models = ", ".join(f"{name} {state}" for name, state in sorted(states.items()))
    line = f"{serving}/{len(states)} models ready: {models or 'none configured'}"
    if overloaded:
        line += f"; queue full: {', '.join(overloaded)}"
    return f"draining: {line}" if shutting_down else line


class Notifier:
    """A datagram socket to systemd's notify socket; each ``send`` is one message."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._failed = False

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False (and logged once) if it failed."""
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log_event(log, "systemd.notify_failed", logging.WARNING,
                          socket=repr(self.address), error=str(exc))
            self._failed = True
            return False
        return True

    def close(self) -> None:
        self._sock.close()


class SystemdLink:
    """What the front tells systemd: READY, STATUS, WATCHDOG and STOPPING (module doc).

    ``status(stopping)`` builds the STATUS line; ``watch_problem()`` says why a ping must be
    withheld (None: send it)."""

    def __init__(self, notifier: Notifier, *, watchdog_s: float | None,
                 status: Callable[[bool], str], watch_problem: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self.tick_s = min(STATUS_INTERVAL_S, watchdog_s or STATUS_INTERVAL_S)
        self._status = status
        self._watch_problem = watch_problem
        self._clock = clock
        self._last_status = ""
        self._last_ping = clock()
        self._withheld: str | None = None
        self.is_stopping = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_environ(cls, *, status: Callable[[bool], str], watch_problem: Callable[[], str | None],
                     environ: MutableMapping[str, str] | None = None) -> SystemdLink | None:
        """The link systemd asks for (None without ``NOTIFY_SOCKET``); the protocol's
        variables are removed from ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        values = {name: env.pop(name) for name in ENV_NAMES if name in env}
        address = notify_address(values.get("NOTIFY_SOCKET", ""))
        if address is None:
            return None
        watchdog_s = watchdog_interval_s(values, os.getpid())
        return cls(Notifier(address), watchdog_s=watchdog_s, status=status,
                   watch_problem=watch_problem)

    def serving(self) -> None:
        """The front serves: READY=1 with the first STATUS line, then the periodic task."""
        self._last_status = self._status(False)
        self.notifier.send("READY=1", f"STATUS={self._last_status}")
        self._last_ping = self._clock()
        log_event(log, "systemd.ready", watchdog_interval_s=self.watchdog_s)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stopping(self) -> None:
        """The drain has started: STOPPING=1 (once) and the draining STATUS line."""
        if self.is_stopping:
            return
        self.is_stopping = True
        self._last_status = self._status(True)
        self.notifier.send("STOPPING=1", f"STATUS={self._last_status}")

    async def close(self) -> None:
        """Stop the periodic task and close the socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.notifier.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:  # the link must outlive any one bad step
                log.exception("systemd notify step failed")

    def tick(self) -> None:
        """One turn of the periodic task: the STATUS line if it changed, and the watchdog
        ping when it is due and allowed."""
        line = self._status(self.is_stopping)
        if line != self._last_status:
            self._last_status = line
            self.notifier.send(f"STATUS={line}")
        if self.watchdog_s is not None and self._ping_due():
            self._ping()

    def _ping_due(self) -> bool:
        """Due once half the timeout has passed, less half a tick (so a tick that wakes a
        little early never makes a ping one whole tick late)."""
        return self._clock() - self._last_ping + self.tick_s / 2 >= (self.watchdog_s or 0.0)

    def _ping(self) -> None:
        problem = None if self.is_stopping else self._watch_problem()
        if problem is not None:
            if problem != self._withheld:
                log_event(log, "systemd.watchdog_withheld", logging.ERROR, reason=problem)
            self._withheld = problem
            return
        self._withheld = None
        self._last_ping = self._clock()
        self.notifier.send("WATCHDOG=1")
