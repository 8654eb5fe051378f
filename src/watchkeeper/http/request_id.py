"""X-Request-ID on every response, and the last line of defence against bugs.

Front process only. A pure ASGI middleware (no per-request task or thread): it takes the
client's ``X-Request-ID`` when it is a sane token or makes one, stores it in the request
scope, adds it to the response headers, and turns an unhandled exception into a 500 in the
one error shape (with the traceback in the log), so even a bug answers with a request id.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watchkeeper.errors import WatchkeeperError
from watchkeeper.http.errors import error_response

__all__ = ["RequestIdMiddleware", "request_id_of", "new_request_id"]

log = logging.getLogger("watchkeeper.http")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_HEADER = b"x-request-id"


def new_request_id() -> str:
    return os.urandom(8).hex()


def request_id_of(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id") or new_request_id()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._take_id(scope)
        header = (_HEADER, request_id.encode("ascii"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if started:
                raise
            error = WatchkeeperError(
                "an unexpected error happened in the server",
                suggestion="Retry; if it repeats, report the request id to the operators.",
            )
            await error_response(error, request_id)(scope, receive, send_with_id)

    @staticmethod
    def _take_id(scope: Scope) -> str:
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = given.decode("ascii") if given and _SANE_ID.match(given) else new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        return request_id
