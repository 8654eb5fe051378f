"""The job routes: submit, look, follow (server-sent events), fetch the result, cancel, list.

Front process only. Handlers are thin: they read the request, call the ``JobRunner`` and
write JSON (or a file, or an event stream). A job's JSON (:func:`job_view`) is the same in
every answer. Result files are served with ``FileResponse``: the right content type, and
``Range`` requests (a browser's video player seeks with them).

Events: ``GET /v1/jobs/{id}/events`` sends the job's stored events after ``Last-Event-ID``
(all of them without it), then each new one as it is stored, and ends after the final state
or when the server starts shutting down; a comment line every ``KEEPALIVE_S`` keeps proxies
from closing an idle stream. The events come from the job's one feed (``jobs.changes``: one
store read per change for all its streams); past ``jobs.max_streams_per_job`` streams on the
job or ``jobs.max_streams`` in all, a new stream gets 503 + Retry-After. ``Last-Event-ID``
must be the decimal ASCII number of an event (else 400).

Owners: a job belongs to the caller that submitted it (``http.guard``'s principal; without
keys, the one anonymous owner). Another caller gets 404 for it on every route (it must not
learn the job exists) and does not see it in the list; a caller with ``admin`` sees and may
cancel every job. Idempotency-Keys are per owner, and each owner's quotas (jobs queued or
running, MiB of stored results: the key's limits, else the ``[server]`` defaults) are
checked by the store when it creates the job. A job's error, in its JSON and in its events,
is shown as the caller may see it (``http.errors.public_error``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from watchkeeper.config import ServerConfig
from watchkeeper.errors import BadInput, Conflict, InvalidInput, NotFound
from watchkeeper.front.runtime import Runtime
from watchkeeper.http import openapi_docs as docs
from watchkeeper.http.bodies import body_limit, parse_predict, read_body
from watchkeeper.http.errors import public_error
from watchkeeper.http.guard import Principal, principal_of
from watchkeeper.http.request_id import request_id_of
from watchkeeper.http.responses import json_response
from watchkeeper.jobs.changes import JobReader, StreamCaps, Watcher, is_final
from watchkeeper.jobs.job import Job, JobEvent, JobState, OwnerLimits
from watchkeeper.jobs.quotas import MIB
from watchkeeper.jobs.results import ResultMeta

__all__ = ["KEEPALIVE_S", "MAX_LIST", "add_job_routes", "job_view", "owner_limits", "sse_frame"]

#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE_S = 15.0
#: Most jobs one ``GET /v1/jobs`` returns.
MAX_LIST = 1000
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def job_view(job: Job, principal: Principal | None = None) -> dict[str, Any]:
    """A job as every job route shows it to ``principal`` (its error as they may see it)."""
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id,
        "model": job.model,
        "owner": job.owner,
        "state": job.state.value,
        "progress": round(job.progress, 4),
        "message": job.message,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "error": None if job.error is None else public_error(job.error, principal, job.request_id),
        "degraded": job.degraded,
        "result": _result_view(job, base),
        "params": job.params,
        "request_id": job.request_id,
        "urls": {"self": base, "events": f"{base}/events", "result": f"{base}/result"},
    }


def _result_view(job: Job, base: str) -> dict[str, Any] | None:
    if job.result is None:
        return None
    meta = ResultMeta.from_dict(job.result)
    files = [{"name": f.name, "media_type": f.media_type, "size": f.size,
              "url": f"{base}/result?name={f.name}"} for f in meta.files]
    return {"files": files, "outputs": meta.outputs}


def sse_frame(event: JobEvent, principal: Principal | None = None,
              request_id: str = "") -> bytes:
    """One server-sent event: ``id`` (for Last-Event-ID), ``event`` (its type), JSON ``data``
    (an error in it as ``principal`` may see it; ``request_id``: the job's)."""
    fields = dict(event.data)
    if isinstance(fields.get("error"), dict):
        fields["error"] = public_error(fields["error"], principal, request_id)
    data = orjson.dumps({"job_id": event.job_id, "at": event.at, **fields})
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), data)


def owner_limits(principal: Principal, server: ServerConfig) -> OwnerLimits:
    """The caller's quotas: its key's limits, else the server's defaults (``[server]``
    ``default_max_queued_jobs`` and ``default_max_result_mb``)."""
    max_queued_jobs = server.default_max_queued_jobs
    max_result_mb = server.default_max_result_mb
    limits = principal.limits
    jobs = limits.max_queued_jobs if limits.max_queued_jobs is not None else max_queued_jobs
    mb = limits.max_result_mb if limits.max_result_mb is not None else max_result_mb
    return OwnerLimits(max_active_jobs=int(jobs), max_result_bytes=int(mb * MIB))


def _visible(principal: Principal) -> str | None:
    """Whose jobs the caller may see: its own, or everyone's (None) with ``admin``."""
    return None if principal.admin else principal.owner


def add_job_routes(app: FastAPI, runtime: Runtime) -> None:
    """Declare the job routes on ``app``."""
    jobs = runtime.jobs

    @app.post("/v1/models/{name}/jobs", tags=["jobs"], status_code=202, response_model=None,
              summary="Submit a job: the predict body, run durably; 202 with its URLs", **docs.JOB_SUBMIT)
    async def submit_job(name: str, request: Request) -> Response:
        runtime.service(name)  # 404 before reading the body
        key = _idempotency_key(request.headers.get("idempotency-key"))
        limit = body_limit(runtime.config.server.max_body_mb)
        body = await parse_predict(request, await read_body(request, limit),
                                   runtime.config.server.max_json_values)
        caller = principal_of(request.scope)
        quota = owner_limits(caller, runtime.config.server)
        job, created = await jobs.submit(name, body.inputs, body.params, body.allow_degrade,
                                         request_id_of(request), key, owner=caller.owner, limits=quota)
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return json_response(job_view(job, caller), 202, headers=headers)

    @app.get("/v1/jobs", tags=["jobs"], summary="List jobs, newest first", **docs.JOB_LIST)
    async def list_jobs(request: Request, state: str | None = None, model: str | None = None,
                        limit: int = 100) -> Response:
        caller = principal_of(request.scope)
        found = await jobs.list_jobs(_state(state), model, _limit(limit), _visible(caller))
        return json_response({"jobs": [job_view(job, caller) for job in found]})

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="One job: state, progress, result",
             **docs.JOB)
    async def get_job(job_id: str, request: Request) -> Response:
        caller = principal_of(request.scope)
        return json_response(job_view(await jobs.get(job_id, _visible(caller)), caller))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], summary="Cancel a job", **docs.JOB)
    async def cancel_job(job_id: str, request: Request) -> Response:
        caller = principal_of(request.scope)
        return json_response(job_view(await jobs.cancel(job_id, _visible(caller)), caller))

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_model=None,
             summary="The job's output file (Range requests work), or its JSON outputs",
             **docs.JOB_RESULT)
    async def job_result(job_id: str, request: Request, name: str | None = None) -> Response:
        job = await jobs.get(job_id, _visible(principal_of(request.scope)))
        return _result_response(runtime, job, name)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_model=None,
             summary="Server-sent events of every change; resumable with Last-Event-ID",
             **docs.JOB_EVENTS)
    async def job_events(job_id: str, request: Request) -> Response:
        after = _last_event_id(request.headers.get("last-event-id"))
        caller = principal_of(request.scope)
        job = await jobs.get(job_id, _visible(caller))  # 404 before the stream starts
        cfg = runtime.config.jobs
        watcher = jobs.changes.watch(job_id, after, JobReader(jobs.events, jobs.find),
                                     StreamCaps(cfg.max_streams_per_job, cfg.max_streams))
        return _EventStream(watcher, lambda event: sse_frame(event, caller, job.request_id))


class _EventStream(StreamingResponse):
    """A job's event stream; its watcher leaves the feed however the response ends (even
    when the client is gone before the first event)."""

    def __init__(self, watcher: Watcher, frame: Callable[[JobEvent], bytes]) -> None:
        super().__init__(_stream(watcher, frame), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.watcher = watcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.watcher.close()


async def _stream(watcher: Watcher, frame: Callable[[JobEvent], bytes]) -> AsyncIterator[bytes]:
    """The job's events after the watcher's resume point, then live ones, until its final
    state (or until the server shuts down: the client resumes with Last-Event-ID, perhaps
    at another instance)."""
    while (events := await watcher.next(KEEPALIVE_S)) is not None:
        if not events:
            yield b": keep-alive\n\n"
        for event in events:
            yield frame(event)
            if is_final(event):
                return


def _result_response(runtime: Runtime, job: Job, name: str | None) -> Response:
    if job.state is not JobState.SUCCEEDED or job.result is None:
        if job.terminal:
            suggestion = f"It will never have one: GET /v1/jobs/{job.id} has its error; submit it again."
        else:
            suggestion = f"Wait for it (GET /v1/jobs/{job.id}/events), then ask again."
        raise Conflict(
            f"job '{job.id}' has no result: it is {job.state.value}"
            + (f" ({job.progress:.0%}: {job.message})" if job.state is JobState.RUNNING else ""),
            suggestion=suggestion, details={"state": job.state.value},
        )
    meta = ResultMeta.from_dict(job.result)
    if not meta.files:
        return json_response({"job_id": job.id, "outputs": meta.outputs})
    chosen = meta.files[0] if name is None else next((f for f in meta.files if f.name == name), None)
    if chosen is None:
        names = ", ".join(f.name for f in meta.files)
        raise NotFound(f"job '{job.id}' has no result file '{name}' (it has: {names})")
    path = runtime.jobs.results.path(job.id, chosen.file)
    if not path.is_file():
        raise NotFound(f"the result file of job '{job.id}' is gone from the data dir",
                       suggestion="Submit the job again.")
    return FileResponse(path, media_type=chosen.media_type, filename=chosen.file,
                        content_disposition_type="inline")


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise BadInput("Idempotency-Key must be 1 to 255 visible ASCII characters",
                       suggestion="Send e.g. a UUID: 'Idempotency-Key: 3f2b...'.")
    return value


def _state(value: str | None) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise InvalidInput(f"state '{value[:50]}' is not a job state (allowed: {allowed})",
                           details={"errors": [{"field": "state", "message": "unknown state"}]},
                           ) from None


def _limit(value: int) -> int:
    if not 1 <= value <= MAX_LIST:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIST} (got {value})",
                           details={"errors": [{"field": "limit", "message": "out of bounds"}]})
    return value


def _last_event_id(value: str | None) -> int:
    """The resume point: the header's decimal ASCII number (``str.isdigit`` alone would take
    superscripts such as ``²``, which ``int`` refuses)."""
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadInput(f"Last-Event-ID must be an event id from this stream (a decimal number "
                       f"of at most 18 digits), not {value[:50]!r}")
    return int(value)
