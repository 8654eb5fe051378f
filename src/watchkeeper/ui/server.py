"""The UI process's web server: FastAPI with the Gradio page mounted, ``/livez``, and the guards.

Runs in the UI process. :func:`create_app` builds a FastAPI app that answers ``GET /livez``
(``ok``, for the front's liveness check) and mounts the Gradio page (``watchkeeper.ui.app``) at
``/``, behind :class:`HostOriginGuard`: a request whose ``Host`` is not an allowed host name gets
400 (DNS rebinding; ``/livez`` excepted, as probes may name any address of the machine), and
a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin``
is present and is not the page's own origin gets 403 (another web page driving the UI).
:func:`main` parses the command line and runs it with uvicorn.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from watchkeeper.hosts import LOOPBACK_HOSTS, host_name

__all__ = [
    "DEFAULT_PORT", "HostOriginGuard", "LOOPBACK_HOSTS", "UNSAFE_METHODS", "allowed_hosts",
    "create_app", "host_name", "main", "parse_args", "same_origin"
]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORT = 7860
log = logging.getLogger("watchkeeper.ui")


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The loopback names, the bind host (unless a wildcard address) and ``extra`` (``*``: any)."""
    names = {*LOOPBACK_HOSTS, *(host_name(h) if h != "*" else "*" for h in extra)}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(host_name(bind_host) if not bind_host.startswith("[") else bind_host[1:-1])
    return frozenset(names)


class HostOriginGuard:
    """ASGI middleware: 400 for a ``Host`` not allowed, 403 for a cross-origin state change."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        probe = scope.get("path") == "/livez"  # a liveness probe may name the machine's address
        if not probe and "*" not in self.hosts and host_name(host) not in self.hosts:
            await _refuse(send, scope, 400, f"host {host_name(host)!r} is not allowed")
            return
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") in UNSAFE_METHODS
        if unsafe and origin is not None and not same_origin(origin, host):
            await _refuse(send, scope, 403, "cross-origin request refused")
            return
        await self.app(scope, receive, send)


def same_origin(origin: str, host: str) -> bool:
    """Whether the ``Origin`` header names the server the ``Host`` header names."""
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


async def _refuse(send: Send, scope: Scope, status: int, text: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(api: str, host: str = "127.0.0.1", extra_hosts: Iterable[str] = ()) -> ASGIApp:
    """The UI's ASGI app: ``/livez``, the Gradio page at ``/``, behind the host and origin guard."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from watchkeeper.ui.app import build_demo, page_head

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/livez", response_class=PlainTextResponse)
    def livez() -> str:
        return "ok"

    demo = build_demo(api)
    app = gr.mount_gradio_app(app, demo, path="", ssr_mode=False, head=page_head(),
                              footer_links=[], show_error=False, mcp_server=False)
    return HostOriginGuard(app, allowed_hosts(host, extra_hosts))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m watchkeeper.ui",
                                     description="watchkeeper's web UI, a client of its HTTP API.")
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the HTTP API's base URL")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the port to listen on")
    parser.add_argument("--allowed-host", action="append", default=[], dest="allowed_hosts",
                        metavar="NAME", help="another Host name to answer (repeatable; * for any)")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the UI server until it is stopped (SIGTERM, Ctrl-C)."""
    import uvicorn

    args = parse_args(argv)
    app = create_app(args.api, args.host, args.allowed_hosts)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
