"""The UI's client of watchkeeper's HTTP API: models, predict, jobs and their events.

Runs in the UI process. A thin wrapper of one ``httpx.Client`` per :class:`ApiClient`, shared
by the threads that serve the pages (its connections kept alive: a new client per call would
build a TLS context each time, the UI's largest CPU cost when it follows a job). Every call
sends the user's key as ``Authorization: Bearer KEY`` when one is set, and every error answer
becomes an :class:`ApiError` carrying what the API said (``type``, ``message``,
``suggestion``) and the ``Retry-After`` seconds of a 429 or 503; a server that cannot be reached becomes an
:class:`ApiError` of type ``unreachable`` (status 0) with a short message, never a traceback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError", "Event", "UNREACHABLE", "error_from", "parse_sse"]

#: Status 0: no answer (connection refused, timeout, broken stream).
UNREACHABLE = 0


@dataclass
class ApiError(Exception):
    """An error answer of the API, or no answer at all (``status`` 0)."""

    status: int
    type: str
    message: str
    suggestion: str = ""
    retry_after: float | None = None
    request_id: str = ""

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"


@dataclass
class Event:
    """One server-sent event of a job's stream."""

    id: str
    event: str
    data: dict[str, Any]


def error_from(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` of an answer whose status is 400 or more."""
    retry: float | None = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry = float(header)
        except ValueError:
            retry = None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(response.status_code, str(error.get("type") or "error"),
                        str(error.get("message") or ""), str(error.get("suggestion") or ""),
                        retry, str(error.get("request_id") or ""))
    text = response.text.strip()[:300] or response.reason_phrase
    return ApiError(response.status_code, "error", text, "", retry)


def _unreachable(base: str, e: Exception) -> ApiError:
    return ApiError(UNREACHABLE, "unreachable", f"the API at {base} did not answer ({type(e).__name__})",
                    "Check that watchkeeper is running, then try again.")


class ApiClient:
    """Calls the API at ``base`` (``http://127.0.0.1:8000``) with a user's key."""

    def __init__(self, base: str, timeout_s: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        """The shared ``httpx.Client`` (made on first use; no cap on connections, as the
        UI's own concurrency limit bounds them; 8 kept alive)."""
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=8)
                self._client = httpx.Client(timeout=self.timeout, limits=limits)
            return self._client

    def close(self) -> None:
        """Close the shared client's connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.strip()}"} if key and key.strip() else {}

    def _request(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, self.base + path, headers=self._headers(key), **kwargs)
        except httpx.HTTPError as e:
            raise _unreachable(self.base, e) from None
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def _json(self, method: str, path: str, key: str | None, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, key, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad_answer", "the API's answer is not JSON") from None
        return body if isinstance(body, dict) else {"value": body}

    def models(self, key: str | None) -> list[dict[str, Any]]:
        """``GET /v1/models``: every served model's description."""
        models = self._json("GET", "/v1/models", key).get("models")
        return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []

    def _body(self, inputs: dict[str, Any], params: dict[str, Any],
              files: dict[str, bytes]) -> dict[str, Any]:
        if not files:
            return {"json": {"inputs": inputs, "params": params}}
        parts = {name: (f"{name}.png", data, "image/png") for name, data in files.items()}
        return {"files": parts, "data": {"inputs": json.dumps(inputs), "params": json.dumps(params)}}

    def predict(self, key: str | None, model: str, inputs: dict[str, Any], params: dict[str, Any],
                files: dict[str, bytes] | None = None) -> dict[str, Any]:
        """``POST /v1/models/{model}/predict``: JSON, or multipart when there are files (PNG)."""
        return self._json("POST", f"/v1/models/{model}/predict", key,
                          **self._body(inputs, params, files or {}))

    def submit(self, key: str | None, model: str, inputs: dict[str, Any], params: dict[str, Any],
               files: dict[str, bytes] | None = None) -> dict[str, Any]:
        """``POST /v1/models/{model}/jobs``: the job as created."""
        return self._json("POST", f"/v1/models/{model}/jobs", key, **self._body(inputs, params, files or {}))

    def job(self, key: str | None, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``."""
        return self._json("GET", f"/v1/jobs/{job_id}", key)

    def cancel(self, key: str | None, job_id: str) -> dict[str, Any]:
        """``DELETE /v1/jobs/{id}``: the job after the request."""
        return self._json("DELETE", f"/v1/jobs/{job_id}", key)

    def download(self, key: str | None, path: str, dest: Path) -> Path:
        """Stream ``path`` (a job's result URL) into the file ``dest``."""
        try:
            with self.http.stream("GET", self.base + path, headers=self._headers(key)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as e:
            raise _unreachable(self.base, e) from None
        return dest

    def events(self, key: str | None, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """``GET /v1/jobs/{id}/events``: each event until the stream ends (after the final state)."""
        headers = self._headers(key)
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=5.0)  # keep-alive every 15 s
        try:
            with self.http.stream("GET", f"{self.base}/v1/jobs/{job_id}/events", headers=headers,
                                  timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                yield from parse_sse(response.iter_lines())
        except httpx.HTTPError as e:
            raise _unreachable(self.base, e) from None


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from text lines (comments skipped, ``data`` read as JSON)."""
    event_id, kind = "", "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"text": "\n".join(data)}
                yield Event(event_id, kind, payload if isinstance(payload, dict) else {"value": payload})
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    if data:
        try:
            yield Event(event_id, kind, json.loads("\n".join(data)))
        except ValueError:
            pass
