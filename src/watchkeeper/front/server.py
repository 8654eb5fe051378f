"""The front process: uvicorn serving the HTTP app, and its shutdown sequence.

Runs in the front process (``watchkeeper serve``). One thread runs the asyncio event loop
that carries everything: HTTP, the schedulers, supervisors, probers and the resource
monitor (its readings go through a worker thread). The front never imports a model.

Shutdown on SIGTERM or SIGINT, each step bounded:

1. The signal handler only schedules :meth:`Runtime.drain` on the loop and tells uvicorn
   to exit. A second signal forces the exit: uvicorn stops waiting for connections and
   :meth:`Runtime.cut_grace` ends the drain's wait at once.
2. ``drain``: ``/readyz`` turns 503, new requests get 503 + Retry-After, requests already
   accepted and running jobs may finish for ``grace_period_s``; what is left then gets 503
   (jobs go back to the store's queue), so no client is left hanging or cut off without an
   answer.
3. uvicorn closes its listening socket and waits for open requests (at most
   ``grace_period_s`` + ``UVICORN_GRACE_MARGIN_S``).
4. The app's lifespan ends: the runtime awaits the same drain (a job with no open
   connection still gets its grace period), then stops the workers (Stop, then SIGKILL after
   ``supervisor.STOP_TIMEOUT_S``) and closes the job store.

Under systemd (``NOTIFY_SOCKET`` set), ``front.systemd_notify`` sends READY=1 once uvicorn
serves, STATUS lines and watchdog pings from this loop, and STOPPING=1 when the drain starts.
"""

from __future__ import annotations

import asyncio
import math
from types import FrameType

import uvicorn

from watchkeeper.config import Config
from watchkeeper.front.runtime import Runtime
from watchkeeper.front.systemd_notify import SystemdLink, status_line
from watchkeeper.http.app import create_app
from watchkeeper.http.connections import ConnectionLimits, fit_open_files, protocol_class

__all__ = ["FrontServer", "UVICORN_GRACE_MARGIN_S", "run_front", "uvicorn_config"]

#: uvicorn waits this much longer than the drain, so the drain's 503s are delivered.
UVICORN_GRACE_MARGIN_S = 2.0


class FrontServer(uvicorn.Server):
    """uvicorn's server, with the runtime's drain started by the first exit signal."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime,
                 systemd: SystemdLink | None = None) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.systemd = systemd
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        try:
            await super().serve(sockets)
        finally:
            if self.systemd is not None:
                await self.systemd.close()

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().startup(sockets)
        if self.started and self.systemd is not None:
            self.systemd.serving()  # listening, the runtime started: READY=1 (systemd_notify)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.runtime.cut_grace)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain)
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        assert self._loop is not None
        if self.systemd is not None:
            self.systemd.stopping()
        self._loop.create_task(self.runtime.drain())


def run_front(config: Config) -> None:
    """Serve until a signal; returns after the shutdown sequence (workers stopped)."""
    runtime = Runtime(config)
    systemd = SystemdLink.from_environ(
        status=lambda stopping: status_line(*runtime.ready()[1:], stopping or runtime.shutting_down),
        watch_problem=runtime.watch_problem)
    FrontServer(uvicorn_config(config, runtime), runtime, systemd).run()


def uvicorn_config(config: Config, runtime: Runtime) -> uvicorn.Config:
    """uvicorn's configuration: the app, the listener, and client connections guarded by
    ``http.connections`` (read timeouts, the head limit, the connection cap)."""
    server = config.server
    limits = ConnectionLimits.of(server)
    fit_open_files(limits.max_connections)
    return uvicorn.Config(
        create_app(runtime),
        host=server.host,
        port=server.port,
        http=protocol_class(limits),
        log_config=None,
        access_log=False,
        proxy_headers=False,  # no client addresses are used; saves a middleware per request
        timeout_keep_alive=math.ceil(limits.keep_alive_timeout_s),  # (the protocol's is exact)
        timeout_graceful_shutdown=math.ceil(server.grace_period_s + UVICORN_GRACE_MARGIN_S),
    )

