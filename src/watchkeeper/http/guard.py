"""Who may do what: the Host and Origin checks, CORS, API keys and scopes, rate limits, and
the security headers on every response.

Runs in the front process, as a pure ASGI middleware just inside the request-id one (so every
refusal has a request id and the one error shape). Per request it reads the headers once,
looks the key up in the ring's cache (a verified key costs a dictionary lookup; only a key
never seen before is hashed, in a thread), and stores the caller as ``scope["state"]
["principal"]`` for the routes (job owners, quotas, error detail). In order:

1. ``Host`` must name this server (``server.allowed_hosts``): 400 otherwise (DNS rebinding).
2. A browser's preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered
   here: 204 for a listed origin (``server.cors_origins``), 403 for any other.
3. A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not listed: 403.
4. The route's scope (``route_scope``): open routes (``/livez``, ``/readyz``,
   ``/health/simple``, and ``/ui``, a redirect to the web UI's port) need nothing; the others
   need a key with the scope (401 without a valid key, 403 with one that lacks it), unless
   the server runs without keys (anonymous: the caller is one owner with every scope).
5. The caller's request rate (a token bucket per key): 429 with Retry-After beyond it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watchkeeper.errors import BadInput, Forbidden, Overloaded, Unauthenticated, WatchkeeperError
from watchkeeper.front.api_keys import KeyLimits, KeyRecord, KeyRing
from watchkeeper.front.api_keys import Scope as KeyScope
from watchkeeper.hosts import LOOPBACK_HOSTS, host_name
from watchkeeper.http.errors import error_response

__all__ = ["ANONYMOUS", "OPEN", "Guard", "GuardPolicy", "Principal", "RateLimiter", "host_name",
           "principal_of", "route_scope"]


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the key's name (or ``anonymous``), its scopes and limits."""

    owner: str
    scopes: frozenset[KeyScope]
    limits: KeyLimits = field(default_factory=KeyLimits)

    @property
    def admin(self) -> bool:
        return KeyScope.ADMIN in self.scopes


#: The caller when the server runs without keys: one owner, every scope.
ANONYMOUS = Principal("anonymous", frozenset(KeyScope))
#: The scope of a route that needs none.
OPEN = "open"

_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: (methods, path pattern, scope), first match wins; an unlisted route needs ``read``.
_ROUTES: tuple[tuple[frozenset[str] | None, re.Pattern[str], str], ...] = (
    (None, re.compile(r"^/(livez|readyz|health/simple|ui)$"), OPEN),
    (frozenset({"POST"}), re.compile(r"^/v1/models/[^/]+/predict$"), KeyScope.PREDICT),
    (None, re.compile(r"^/v2(/|$)"), KeyScope.PREDICT),
    (None, re.compile(r"^/v1/models/[^/]+/jobs$"), KeyScope.JOBS),
    (None, re.compile(r"^/v1/jobs(/|$)"), KeyScope.JOBS),
    (None, re.compile(r"^/admin(/|$)"), KeyScope.ADMIN),
)
_ALLOW_HEADERS = ("authorization, content-type, x-api-key, x-request-id, x-request-timeout, "
                  "idempotency-key, last-event-id, range")
#: No scripts, frames or loads of anything: JSON and files only.
_CSP_API = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: FastAPI's /docs page: its own inline script and the Swagger UI bundle; still no framing.
_CSP_DOCS = (b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
             b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
             b"https://fastapi.tiangolo.com; frame-ancestors 'none'; base-uri 'none'")


def route_scope(method: str, path: str) -> str:
    """The scope a request needs (``OPEN`` for probes); unknown routes need ``read``."""
    for methods, pattern, scope in _ROUTES:
        if (methods is None or method in methods) and pattern.match(path):
            return scope
    return KeyScope.READ


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per owner: ``rate`` requests a second, bursts of up to ``rate`` (at
    least 1). ``take`` says how many seconds to wait, 0 when the request may go now."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._clock = clock

    def take(self, owner: str, rate: float | None) -> float:
        if rate is None or rate <= 0:
            return 0.0
        now = self._clock()
        burst = max(1.0, rate)
        bucket = self._buckets.setdefault(owner, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard enforces, from the ``[server]`` table."""

    allowed_hosts: frozenset[str]  # host names without port; "*" allows any
    cors_origins: frozenset[str]  # e.g. "https://app.example.com"; "*" allows any
    keys: KeyRing | None  # None: no key file, every caller is ANONYMOUS
    default_requests_per_s: float | None = None

    @classmethod
    def build(cls, host: str, allowed_hosts: Iterable[str], cors_origins: Iterable[str],
              keys: KeyRing | None, default_requests_per_s: float | None = None) -> GuardPolicy:
        hosts = {host_name(h) for h in (host, *LOOPBACK_HOSTS, *allowed_hosts)}
        return cls(frozenset(hosts), frozenset(o.rstrip("/") for o in cors_origins), keys,
                   default_requests_per_s)

    def host_allowed(self, host: str | None) -> bool:
        return "*" in self.allowed_hosts or (host is not None and host_name(host) in self.allowed_hosts)

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins


def principal_of(scope: Scope) -> Principal:
    """The caller the guard let in (ANONYMOUS outside a guarded app, e.g. in unit tests)."""
    principal: Principal = scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


class Guard:
    """The ASGI middleware; see the module docstring for the order of the checks."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy
        self.limiter = RateLimiter()
        self._principals: dict[str, tuple[KeyRecord, Principal]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _Headers(scope["headers"])
        origin = headers.origin if headers.origin and self.policy.origin_allowed(headers.origin) else None
        send = _with_security_headers(send, scope["path"], origin)
        try:
            preflight = self._check_request(scope, headers)
            if preflight:
                await send({"type": "http.response.start", "status": 204,
                            "headers": _preflight_headers()})
                await send({"type": "http.response.body", "body": b""})
                return
            principal = await self._principal(scope, headers)
        except WatchkeeperError as exc:
            request_id = scope.get("state", {}).get("request_id", "")
            await error_response(exc, request_id)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _check_request(self, scope: Scope, headers: _Headers) -> bool:
        """Host, preflight and Origin checks; True when this is a preflight to answer 204."""
        if not self.policy.host_allowed(headers.host):
            raise BadInput("this server does not answer to that Host name",
                           suggestion="Use the server's configured name (server.allowed_hosts).")
        method = scope["method"]
        if method == "OPTIONS" and headers.preflight:
            if headers.origin and self.policy.origin_allowed(headers.origin):
                return True
            raise Forbidden("cross-origin requests from this origin are not allowed",
                            suggestion="List the origin in server.cors_origins.")
        if method in _STATE_CHANGING and headers.origin is not None and not \
                self.policy.origin_allowed(headers.origin):
            raise Forbidden("a web page on another origin may not change anything here",
                            suggestion="List the origin in server.cors_origins, or call from a server.")
        return False

    async def _principal(self, scope: Scope, headers: _Headers) -> Principal:
        needed = route_scope(scope["method"], scope["path"])
        if needed == OPEN:
            return ANONYMOUS
        principal = await self._caller(headers.key)
        if needed not in principal.scopes:
            raise Forbidden(f"this key ({principal.owner}) lacks the '{needed}' scope",
                            suggestion=f"Use a key with the '{needed}' scope "
                                       "(watchkeeper keys add NAME --scopes ...).")
        rate = principal.limits.requests_per_s or self.policy.default_requests_per_s
        wait_s = self.limiter.take(principal.owner, rate)
        if wait_s > 0:
            raise Overloaded(f"key {principal.owner} is over its {rate:g} requests a second",
                             retry_after_s=max(1, math.ceil(wait_s)))
        return principal

    async def _caller(self, key: str | None) -> Principal:
        ring = self.policy.keys
        if ring is None:
            return ANONYMOUS
        if not key:
            raise Unauthenticated("this request needs an API key")
        known, record = ring.cached(key)  # the usual case: no await, no hash of the secret
        if not known:
            record = await ring.verify(key)
        if record is None:
            raise Unauthenticated("the API key is not valid (unknown, revoked or mistyped)")
        return self._principal_of(record)

    def _principal_of(self, record: KeyRecord) -> Principal:
        """The principal of a verified key, made once per record (the ring makes new records
        when it re-reads the file)."""
        made = self._principals.get(record.id)
        if made is None or made[0] is not record:
            principal = Principal(record.name, frozenset(KeyScope(s) for s in record.scopes),
                                  record.limits)
            made = self._principals[record.id] = (record, principal)
        return made[1]


class _Headers:
    """The few request headers the guard reads, in one pass."""

    __slots__ = ("host", "origin", "key", "preflight")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.host: str | None = None
        self.origin: str | None = None
        self.key: str | None = None
        self.preflight = False
        for name, value in raw:
            if name == b"host":
                self.host = value.decode("latin-1")
            elif name == b"origin":
                self.origin = value.decode("latin-1")
            elif name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    self.key = token.strip()
            elif name == b"x-api-key" and self.key is None:
                self.key = value.decode("latin-1").strip()
            elif name == b"access-control-request-method":
                self.preflight = True


_API_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", _CSP_API),
                (b"referrer-policy", b"no-referrer")]
_DOCS_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", _CSP_DOCS),
                 (b"referrer-policy", b"no-referrer")]


def _preflight_headers() -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
            (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
            (b"access-control-max-age", b"600"), (b"content-length", b"0")]


def _with_security_headers(send: Send, path: str, origin: str | None) -> Send:
    """``send`` that adds nosniff, the CSP and (for a listed origin) the CORS headers."""
    extra = _DOCS_HEADERS if path in ("/docs", "/redoc") else _API_HEADERS
    if origin is not None:
        extra = [*extra, (b"access-control-allow-origin", origin.encode("latin-1")),
                 (b"vary", b"Origin"),
                 (b"access-control-expose-headers", b"x-request-id, retry-after, warning")]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped
