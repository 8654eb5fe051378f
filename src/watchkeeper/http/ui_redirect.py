"""``GET /ui``: a redirect (307) to the web UI, at the request's host name and the UI's port.

Runs in the front process, on uvicorn's event loop. The web UI is a process of its own on its
own port (``[ui] port``, kept by ``supervision.ui_keeper``), so a crash in it never touches the
API; the API only points at it. With the UI off (no ``[ui] enabled``, no ``serve --ui``) the
route is a 404 in the one error shape, saying how to turn it on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from watchkeeper.errors import NotFound
from watchkeeper.front.runtime import Runtime
from watchkeeper.http import openapi_docs as docs
from watchkeeper.http.guard import host_name

__all__ = ["REDIRECT", "UI_REDIRECT", "add_ui_route", "ui_location"]

#: The redirect's status: temporary (the UI's port is configuration), the method kept.
REDIRECT = 307

#: What ``/ui`` answers, for /openapi.json: an open route (no key: it only names a port), the
#: redirect, and 404 when the UI is off.
UI_REDIRECT: dict[str, Any] = {**docs.OPEN_PROBE, "responses": {
    **docs.OPEN_PROBE["responses"],
    REDIRECT: {"description": "The web UI's address (`Location`): this request's host name, "
                              "the UI's port",
               "headers": {"Location": {"schema": {"type": "string"}}}},
    404: {"model": docs.ErrorBody, "description": "The web UI is off on this server"}}}


def ui_location(host_header: str, port: int) -> str:
    """``http://NAME:PORT/``: the host name the client used (``[::1]`` for IPv6), the UI's port."""
    name = host_name(host_header) or "127.0.0.1"
    return f"http://{f'[{name}]' if ':' in name else name}:{port}/"


def add_ui_route(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/ui", tags=["ui"], summary="Redirect to the web UI", status_code=REDIRECT,
             response_class=Response, **UI_REDIRECT)
    async def ui(request: Request) -> Response:
        if runtime.ui is None:
            raise NotFound("the web UI is off on this server",
                           suggestion="Start the server with `watchkeeper serve --ui`, or set "
                                      "`enabled = true` in its [ui] table.")
        location = ui_location(request.headers.get("host", ""), runtime.ui.port)
        return RedirectResponse(location, status_code=REDIRECT)
