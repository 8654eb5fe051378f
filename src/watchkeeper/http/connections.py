"""Client connections no client can stall: read timeouts, a head limit and a connection cap.

Runs in the front process, on uvicorn's event loop: :func:`protocol_class` makes the HTTP/1.1
protocol class (uvicorn's httptools one, extended) that ``front.server`` hands to uvicorn,
which makes one instance per client connection. uvicorn has a keep-alive timeout but no read
timeout at all: a client that sends half a head, or a body at one byte a second, would hold
its connection (and a task) forever. Each connection here is in one phase at a time, each
with its own limit (:class:`ConnectionLimits`, from the ``[server]`` table):

- ``HEAD``: from the connection's opening (or the first byte of the next request on a kept-
  alive connection) until the request's head is complete: ``client_header_timeout_s``. Past
  it: 408 and the connection is closed (closed without an answer if nothing was sent).
  A head over ``max_head_kib``: 431 and closed.
- ``BODY``: from the end of the head until the body is complete: ``client_body_timeout_s``,
  plus a second for every ``client_body_min_kib_per_s`` KiB received (a big upload at a
  decent rate is never cut). Past it: 408, the connection is closed and the route sees the
  client gone.
- ``BUSY``: the request is read; the route's own deadline applies (e.g. the model's timeout).
- ``IDLE``: answered, waiting for the next request: ``keep_alive_timeout_s`` (uvicorn's timer).

Cap: past ``max_connections`` open connections, a new connection makes room by closing the
connections that hold nothing accepted (``IDLE``, or ``HEAD``), oldest first; if there are
none, the new connection is served in "over capacity" mode: the health probes (``/livez``,
``/readyz``, ``/health/simple``) are answered, any other request gets 503 + Retry-After, and
the connection closes after its answer. A request the parser refuses gets a 400 in the one
error shape (uvicorn's is plain text), with a request id.

State: per connection, its phase, when the phase began and the bytes counted in it, and at
most one timer (armed once per phase; when it fires early it re-arms for what is left, so
the per-request cost is a few attribute writes). Shared: uvicorn's set of open connections.
Logs: ``connection.header_timeout``, ``connection.body_timeout``, ``connection.head_too_large``,
``connection.bad_request``, ``connection.evicted``, ``connection.over_capacity`` (the last
two at most once a second, with a count); metrics: ``watchkeeper_connections_closed_total``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from watchkeeper.config import ServerConfig
from watchkeeper.errors import BadInput, PayloadTooLarge, Unavailable, WatchkeeperError
from watchkeeper.front import metrics
from watchkeeper.http.errors import error_body, error_response
from watchkeeper.http.request_id import RequestIdMiddleware, new_request_id, request_id_of
from watchkeeper.logs import log_event

__all__ = ["BODY_TIMED_OUT", "HEAD_TIMEOUT_STATUS", "HEAD_TOO_LARGE_STATUS", "PROBE_PATHS",
           "ConnectionLimits", "GuardedHttpProtocol", "fit_open_files", "open_connections",
           "protocol_class"]

log = logging.getLogger("watchkeeper.http")

#: The status of a request whose head or body did not arrive in time (Request Timeout).
HEAD_TIMEOUT_STATUS = 408
#: The status of a request whose head is over ``max_head_kib`` (Request Header Fields Too Large).
HEAD_TOO_LARGE_STATUS = 431
#: Answered even past the connection cap: a busy instance must not look dead.
PROBE_PATHS = frozenset({"/livez", "/readyz", "/health/simple"})
#: Set in a request's scope when its body timed out (the route then says so in its log).
BODY_TIMED_OUT = "watchkeeper.body_timed_out"
#: Retry-After of a request refused past the connection cap.
OVER_CAPACITY_RETRY_S = 1.0
#: The over-capacity and eviction logs are written at most this often (with a count).
LOG_EVERY_S = 1.0
#: After a refusal (400, 408, 431) the connection is half-closed and what the client still
#: sends is read and dropped for at most this long: closing a socket with unread data resets
#: it, and the reset can destroy the answer before the client reads it.
LINGER_S = 2.0
#: Open files kept for the front's own use (workers' sockets, the job store, logs) on top
#: of ``max_connections`` when the open-files limit is raised.
OPEN_FILES_RESERVE = 256


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What a client connection may take: the ``[server]`` keys, in seconds and bytes."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    body_min_bytes_per_s: float = 64 * 1024
    keep_alive_timeout_s: float = 5.0
    max_head_bytes: int = 16 * 1024
    max_connections: int = 1000

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(server.client_header_timeout_s, server.client_body_timeout_s,
                   server.client_body_min_kib_per_s * 1024, server.keep_alive_timeout_s,
                   server.max_head_kib * 1024, server.max_connections)


class Phase(enum.Enum):
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"
    IDLE = "idle"
    CLOSING = "closing"  # answered a refusal; reading and dropping until LINGER_S


_open: set[Any] = set()  # uvicorn's set of open connections, once one was made
_UNSET = -1.0  # a phase's start, until data_received reads the clock


def open_connections() -> int:
    """Client connections open now (for /health and /metrics)."""
    return len(_open)


def fit_open_files(max_connections: int) -> None:
    """Raise this process's open-files limit (up to its hard limit) to fit the connection
    cap; log ``server.open_files_limit`` when it cannot (connections past the limit would
    fail to be accepted instead of being refused cleanly)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + OPEN_FILES_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        log_event(log, "server.open_files_limit", logging.WARNING, open_files=raised,
                  max_connections=max_connections,
                  suggestion="Lower server.max_connections or raise the hard limit (ulimit -Hn).")


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """The protocol class to give uvicorn (``http=``), bound to ``limits``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


class _Throttled:
    """Counts an event and logs it at most once every LOG_EVERY_S (with the count)."""

    def __init__(self, event: str) -> None:
        self.event, self.count, self.last = event, 0, 0.0

    def note(self, n: int, max_connections: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            log_event(log, self.event, logging.WARNING, connections=self.count,
                      max_connections=max_connections)
            self.count, self.last = 0, now


_evicted = _Throttled("connection.evicted")
_over_capacity = _Throttled("connection.over_capacity")


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, a head limit and the cap."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._phase = Phase.HEAD
        self._since = 0.0
        self._counted = 0  # bytes of the head, or of the body, received so far
        self._sent_any = False  # any byte of the current request's head
        self._timer: asyncio.TimerHandle | None = None

    # --- uvicorn's callbacks, extended --------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        global _open
        _open = self.connections
        self._since = self.loop.time()
        self._arm(self.limits.header_timeout_s)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._phase is Phase.CLOSING:
            return  # dropped: the connection was answered and is lingering
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._refuse_bad_request(exc)
            return
        except httptools.HttpParserUpgrade:
            self._phase = Phase.BUSY  # no read deadline: the connection is no longer HTTP/1.1
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._phase is Phase.HEAD:
            self._counted += len(data)
            if self._counted > self.limits.max_head_bytes:
                self._refuse_head_too_large()
                return
        if self._phase is Phase.HEAD or self._phase is Phase.BODY:  # the request goes on
            if self._since < 0:
                self._since = self.loop.time()
            if self._timer is None:
                self._arm(self._left())

    # (A phase that begins in a callback is timed from the end of data_received, a few
    # microseconds later, and only if it goes on: a whole request in one read costs no clock.)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is not Phase.HEAD:  # a kept-alive connection's next request
            self._phase, self._since, self._counted = Phase.HEAD, _UNSET, 0
        self._sent_any = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase, self._since, self._counted = Phase.BODY, _UNSET, 0

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._counted += len(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = Phase.BUSY

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if self._phase is Phase.BUSY and not pipelined:
            self._phase, self._since, self._sent_any = Phase.IDLE, self.loop.time(), False

    # --- read deadlines ------------------------------------------------------------------

    def _arm(self, delay_s: float) -> None:
        self._timer = self.loop.call_later(max(delay_s, 0.0), self._check)

    def _left(self) -> float:
        """Seconds left in this phase's read deadline."""
        limits = self.limits
        if self._phase is Phase.HEAD:
            allowed = limits.header_timeout_s
        else:
            allowed = limits.body_timeout_s + self._counted / limits.body_min_bytes_per_s
        return self._since + allowed - self.loop.time()

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not (self._phase is Phase.HEAD or self._phase is Phase.BODY):
            return
        left = self._left()
        if left > 0:
            self._arm(left)
        elif self._phase is Phase.HEAD:
            self._head_timed_out()
        else:
            self._body_timed_out()

    def _head_timed_out(self) -> None:
        if not self._sent_any:  # nothing at all: a silent or speculative connection
            metrics.count_connection_closed("silent")
            self.transport.close()
            return
        limit = self.limits.header_timeout_s
        metrics.count_connection_closed("header_timeout")
        log_event(log, "connection.header_timeout", logging.WARNING, client=self._client(),
                  received_bytes=self._counted, client_header_timeout_s=limit)
        self._answer_and_close(HEAD_TIMEOUT_STATUS, BadInput(
            f"the request's head did not arrive within {limit:g} s "
            "(server.client_header_timeout_s)",
            suggestion="Send the request line and headers at once."), new_request_id())

    def _body_timed_out(self) -> None:
        limits, cycle, scope = self.limits, self.cycle, self.scope
        request_id = str(scope.get("state", {}).get("request_id") or new_request_id())
        took = self.loop.time() - self._since
        metrics.count_connection_closed("body_timeout")
        log_event(log, "connection.body_timeout", logging.WARNING, request_id=request_id,
                  client=self._client(), method=scope.get("method"), path=scope.get("path"),
                  received_bytes=self._counted, after_s=round(took, 1),
                  client_body_timeout_s=limits.body_timeout_s)
        scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        error = BadInput(
            f"the body did not arrive in time: {self._counted:,} bytes in {took:.0f} s "
            f"(server.client_body_timeout_s = {limits.body_timeout_s:g} s, extended by 1 s per "
            f"{limits.body_min_bytes_per_s / 1024:g} KiB received)",
            suggestion="Send the body at once, or at a steady rate.")
        started = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True  # the route's reads end; its answer is not sent
            cycle.message_event.set()
        if started:
            self.transport.close()
        else:
            self._answer_and_close(HEAD_TIMEOUT_STATUS, error, request_id)

    # --- refusals --------------------------------------------------------------------------

    def _refuse_head_too_large(self) -> None:
        limit = self.limits.max_head_bytes
        metrics.count_connection_closed("head_too_large")
        log_event(log, "connection.head_too_large", logging.WARNING, client=self._client(),
                  received_bytes=self._counted, max_head_bytes=limit)
        self._answer_and_close(HEAD_TOO_LARGE_STATUS, PayloadTooLarge(
            f"the request's head is over {limit // 1024} KiB (server.max_head_kib)",
            suggestion="Send shorter headers (large data belongs in the body)."), new_request_id())

    def _refuse_bad_request(self, exc: Exception) -> None:
        metrics.count_connection_closed("bad_request")
        log_event(log, "connection.bad_request", logging.INFO, client=self._client(),
                  error=str(exc))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self.transport.close()
            return
        error = BadInput(f"the request is not valid HTTP/1.1: {exc}",
                         suggestion="Send header names and values of visible ASCII characters.")
        self._answer_and_close(400, error, new_request_id())

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own 400 (a refused upgrade...), in the one error shape."""
        self._answer_and_close(400, BadInput(msg), new_request_id())

    def _answer_and_close(self, status: int, error: WatchkeeperError, request_id: str) -> None:
        """Write an error answer outside any route (no request is running) and close."""
        body = orjson.dumps(error_body(error, request_id))
        head = [STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers),
                b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                b"x-request-id: %s\r\nconnection: close\r\n\r\n" % request_id.encode("ascii")]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self._linger()

    def _linger(self) -> None:
        """Half-close (the answer, then FIN), drop what still comes, close after LINGER_S
        (or when the client closes its side: uvicorn's ``eof_received`` lets it)."""
        self._phase = Phase.CLOSING
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)
        try:
            self.transport.resume_reading()
            self.transport.write_eof()
        except (NotImplementedError, RuntimeError, OSError):
            self.transport.close()

    def _client(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None

    # --- the cap -----------------------------------------------------------------------------

    def _make_room(self) -> None:
        """Past the cap: close idle connections, oldest first; else serve in over-capacity mode."""
        excess = len(self.connections) - self.limits.max_connections
        idle = sorted((c for c in self.connections
                       if isinstance(c, GuardedHttpProtocol) and c is not self and c._idle()),
                      key=lambda c: c._since)[:excess]
        for connection in idle:
            metrics.count_connection_closed("evicted")
            connection.transport.close()
            self.connections.discard(connection)  # gone now, whenever its close completes
        if idle:
            _evicted.note(len(idle), self.limits.max_connections)
        if len(idle) < excess:
            metrics.count_connection_closed("over_capacity")
            _over_capacity.note(1, self.limits.max_connections)
            self.app = over_capacity_app(self.app, self.limits.max_connections)

    def _idle(self) -> bool:
        """Holds nothing accepted: between requests, or still sending a head."""
        if self._phase is Phase.IDLE:
            return True
        return self._phase is Phase.HEAD and (self.cycle is None or self.cycle.response_complete)


def over_capacity_app(app: ASGIApp, max_connections: int) -> ASGIApp:
    """``app`` for the health probes, 503 + Retry-After for anything else; then close."""
    refuse = RequestIdMiddleware(_refusal(max_connections))

    async def over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        target = app if scope.get("path") in PROBE_PATHS else refuse
        await target(scope, receive, send_closing)

    return over_capacity


def _refusal(max_connections: int) -> ASGIApp:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        error = Unavailable(
            f"the server has {max_connections} connections open, its limit "
            "(server.max_connections), and none of them is idle",
            suggestion="Retry after the number of seconds in Retry-After, on a new connection.",
            retry_after_s=OVER_CAPACITY_RETRY_S)
        await error_response(error, request_id_of(Request(scope)))(scope, receive, send)

    return refuse


