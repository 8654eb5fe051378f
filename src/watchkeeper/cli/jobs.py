"""The ``watchkeeper jobs`` commands: submit, status, wait, cancel, result and list.

Runs in the user's shell, in the CLI process: a client of the server's jobs API over HTTP
(httpx, and httpx-sse for the event stream); it never imports the server. ``NAME=VALUE``
arguments are read by ``watchkeeper.cli.assignments``; progress and tables are drawn by
``watchkeeper.cli.progress`` (rich on a terminal, plain lines otherwise). ``submit`` prints
only the job id on stdout, for scripts; ``wait`` follows the job's event stream (resuming with
``Last-Event-ID`` when the connection drops, polling when there is no stream) and draws its
progress on stderr. Every HTTP wait has a read timeout (``--timeout``, cut to what is left of
``--max-wait``); a silent server is given up after ``RECONNECT_FOR_S``.
Exit codes: 0 succeeded, 1 failed, cancelled or refused, 2 bad arguments, server unreachable
or ``--max-wait`` over, 3 no such job (or model).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import secrets
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, SSEError, connect_sse

from watchkeeper.cli.assignments import parse_assignment, parse_file_assignment
from watchkeeper.cli.progress import ProgressDisplay, print_jobs

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_UNREACHABLE", "add_job_commands", "wait_job"]

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
POLL_INTERVAL_S = 1.0
RECONNECT_FOR_S = 60.0  # how long `wait` keeps reconnecting to a server that stopped answering

# --- HTTP helpers -------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a command with an exit code (and a message for stderr, when not already shown)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _refused(response: httpx.Response) -> int:
    """Print an error answer (``{"error": {type, message, suggestion, request_id}}``)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": response.text[:300].strip() or response.reason_phrase}
    print(f"watchkeeper: {response.status_code} {error.get('type') or 'error'}: {error.get('message')}",
          file=sys.stderr)
    for label, key in (("suggestion", "suggestion"), ("request id", "request_id")):
        value = error.get(key) or (body.get(key) if isinstance(body, dict) else None)
        if value:
            print(f"  {label}: {value}", file=sys.stderr)
    return EXIT_NOT_FOUND if response.status_code == 404 else EXIT_FAILED


def _unreachable(base: str, exc: Exception) -> str:
    return f"watchkeeper: cannot reach {base}: {str(exc) or type(exc).__name__}"


def _job_url(base: str, job_id: str, tail: str = "") -> str:
    return f"{base}/v1/jobs/{quote(job_id, safe='')}{tail}"


# --- wait ---------------------------------------------------------------------------------


class _Watch:
    """One ``wait``: follows the event stream, else polls; keeps the job's latest state."""

    def __init__(self, client: httpx.Client, base: str, job_id: str, display: ProgressDisplay,
                 max_wait: float | None) -> None:
        self.client, self.base, self.job_id, self.display = client, base, job_id, display
        self.max_wait, self.started = max_wait, time.monotonic()
        self.contact = self.started  # the last answer from the server
        self.job: dict[str, Any] = {"id": job_id}
        self.last_event_id = ""  # of the last event shown: where a new connection resumes

    def follow(self) -> dict[str, Any]:
        """To the end; the stream replays the job's history from its first event, so the
        display shows it in order (never the state now, then older ones)."""
        if self.job.get("state") in TERMINAL:
            self.show(self.job)
            return self.job
        while self.job.get("state") not in TERMINAL:
            self.check_deadline()
            try:
                ended = self._stream()
            except httpx.TransportError as exc:
                self._lost(exc)
                continue
            if ended is None:
                return self._poll()
            if not ended:  # closed before the end (a restart?): resume after the last event seen
                self._pause()
        try:
            return self.get()  # the whole job: its error, its result
        except httpx.TransportError:
            return self.job

    def get(self, show: bool = True) -> dict[str, Any]:
        response = self.client.get(_job_url(self.base, self.job_id))
        self.contact = time.monotonic()
        if response.status_code == 404:
            raise _Stop(_refused(response))
        if response.status_code != 200:  # e.g. a 503 while the server restarts: retried
            raise httpx.TransportError(f"answered {response.status_code}")
        job: dict[str, Any] = response.json()
        if show:
            self.show(job)
        self.job = job
        return job

    def show(self, data: dict[str, Any]) -> None:
        self.job.update({k: v for k, v in data.items() if k in ("state", "progress", "message", "error")})
        self.display.update(str(self.job.get("state", "")), float(self.job.get("progress") or 0.0),
                            str(self.job.get("message") or ""))

    def check_deadline(self) -> None:
        if self.max_wait is not None and time.monotonic() - self.started >= self.max_wait:
            raise _Stop(EXIT_UNREACHABLE, f"watchkeeper: job {self.job_id} is still {self.job.get('state')} "
                        f"after {self.max_wait:g} s (--max-wait); it goes on without us")

    def _stream(self) -> bool | None:
        """One connection to the event stream, after ``last_event_id``: True at the terminal
        state, False when it closed before, None when the server has no event stream for the job."""
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        read = self.client.timeout.read or 30.0
        if self.max_wait is not None:
            read = max(0.1, min(read, self.started + self.max_wait - time.monotonic()))
        timeout = httpx.Timeout(self.client.timeout.connect, read=read)
        url = _job_url(self.base, self.job_id, "/events")
        with connect_sse(self.client, "GET", url, headers=headers, timeout=timeout) as source:
            self.contact = time.monotonic()
            if source.response.status_code != 200:
                return None
            try:
                for event in source.iter_sse():  # an event's id is the stream's last id so far
                    self.contact = time.monotonic()
                    self.last_event_id = event.id or self.last_event_id
                    if self._apply(event):
                        return True
                    self.check_deadline()
            except SSEError:  # not text/event-stream (a proxy's page?): poll instead
                return None
        return False

    def _apply(self, event: ServerSentEvent) -> bool:
        """Show one event; True when it is the terminal state."""
        try:
            data = json.loads(event.data)
        except ValueError:
            return False
        if event.event not in ("state", "progress") or not isinstance(data, dict):
            return False
        self.show(data)
        return event.event == "state" and data.get("state") in TERMINAL

    def _poll(self) -> dict[str, Any]:
        while True:
            try:
                if self.get().get("state") in TERMINAL:
                    return self.job
            except httpx.TransportError as exc:
                self._lost(exc)
                continue
            self._pause()

    def _lost(self, exc: Exception) -> None:
        """No answer: give up once the server has been silent too long, else pause."""
        if time.monotonic() - self.contact > RECONNECT_FOR_S:
            raise _Stop(EXIT_UNREACHABLE, _unreachable(self.base, exc))
        self._pause()

    def _pause(self) -> None:
        self.check_deadline()
        left = POLL_INTERVAL_S if self.max_wait is None else self.started + self.max_wait - time.monotonic()
        time.sleep(max(0.0, min(POLL_INTERVAL_S, left)))


def wait_job(client: httpx.Client, base: str, job_id: str, max_wait: float | None,
             display: ProgressDisplay) -> tuple[int, dict[str, Any] | None]:
    """Follow a job to its end: the exit code, and the final job JSON (None if not known)."""
    watch = _Watch(client, base, job_id, display, max_wait)
    try:
        try:
            watch.get(show=False)  # does it exist; has it ended
        except httpx.TransportError as exc:
            raise _Stop(EXIT_UNREACHABLE, _unreachable(base, exc)) from None
        job = watch.follow()
    except _Stop as stop:
        display.close()
        if stop.message:
            print(stop.message, file=sys.stderr)
        return stop.code, None
    finally:
        display.close()
    error = job.get("error") or {}
    if job.get("state") == "succeeded":
        print(f"job {job_id} succeeded", file=sys.stderr)
        return EXIT_OK, job
    print(f"job {job_id} {job.get('state')}: {error.get('message') or 'no reason given'}", file=sys.stderr)
    if error.get("suggestion"):
        print(f"  suggestion: {error['suggestion']}", file=sys.stderr)
    return EXIT_FAILED, job


# --- commands -----------------------------------------------------------------------------

_Run = Callable[[argparse.Namespace, httpx.Client, str], int]


def _command(run: _Run) -> Callable[[argparse.Namespace], int]:
    """Give ``run`` a client and the base URL; transport errors become exit code 2."""

    def command(args: argparse.Namespace) -> int:
        base = args.url.rstrip("/")
        try:
            with httpx.Client(timeout=args.timeout) as client:
                return run(args, client, base)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            print(_unreachable(base, exc), file=sys.stderr)
            return EXIT_UNREACHABLE
        except _Stop as stop:
            print(stop.message, file=sys.stderr)
            return stop.code
        except json.JSONDecodeError as exc:
            print(f"watchkeeper: {base} answered something that is not JSON: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            return 130

    return command


def _submit(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    files = ([("image", args.image)] if args.image else []) + (args.file or [])
    inputs, params = dict(args.input or []), dict(args.param or [])
    names = [name for name, _ in files + (args.input or [])]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise _Stop(EXIT_UNREACHABLE, f"watchkeeper: an input is given twice: {', '.join(twice)}")
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    url = f"{base}/v1/models/{quote(args.model, safe='')}/jobs"
    with ExitStack() as stack:
        try:
            parts = [(name, (Path(path).name, stack.enter_context(open(path, "rb")),
                             mimetypes.guess_type(path)[0] or "application/octet-stream"))
                     for name, path in files]
        except OSError as exc:
            raise _Stop(EXIT_UNREACHABLE, f"watchkeeper: cannot read {exc.filename}: {exc.strerror}") from exc
        if parts:  # multipart: files are inputs; `inputs` and `params` form fields carry JSON
            form = {k: json.dumps(v) for k, v in (("inputs", inputs), ("params", params)) if v}
            response = client.post(url, files=parts, data=form, headers=headers)
        else:
            response = client.post(url, json={"inputs": inputs, "params": params}, headers=headers)
    if not response.is_success:
        return _refused(response)
    job_id = str(response.json()["id"])
    if response.headers.get("idempotent-replayed") == "true":
        print(f"watchkeeper: Idempotency-Key {args.idempotency_key!r} was used before: the same job "
              f"{job_id}, not a new one", file=sys.stderr)
    if not args.wait:
        print(job_id)
        return EXIT_OK
    print(f"job {job_id}", file=sys.stderr)
    code, job = wait_job(client, base, job_id, args.max_wait, ProgressDisplay(sys.stderr))
    if code != EXIT_OK:
        return code
    if args.output:
        return _download(client, base, job_id, args.output, None)
    print(json.dumps((job or {}).get("result"), indent=2))
    return EXIT_OK


def _status(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    response = client.get(_job_url(base, args.id))
    if response.status_code != 200:
        return _refused(response)
    print(json.dumps(response.json(), indent=2))
    return EXIT_OK


def _wait(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    return wait_job(client, base, args.id, args.max_wait, ProgressDisplay(sys.stderr))[0]


def _cancel(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    response = client.delete(_job_url(base, args.id))
    if response.status_code != 200:
        return _refused(response)
    job = response.json()
    asked = job.get("cancel_requested") and job.get("state") not in TERMINAL
    print(f"{job.get('state')}{' (cancel requested)' if asked else ''}")
    return EXIT_OK


def _result(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    return _download(client, base, args.id, args.output, args.name)


def _download(client: httpx.Client, base: str, job_id: str, output: str, name: str | None) -> int:
    params = {"name": name} if name else None
    with client.stream("GET", _job_url(base, job_id, "/result"), params=params) as response:
        if response.status_code != 200:
            response.read()
            return _refused(response)
        if output == "-":
            print(f"-  {_copy(response, sys.stdout.buffer):,} bytes", file=sys.stderr)
            return EXIT_OK
        target = Path(output)
        temp = target.with_name(f".{target.name}.part-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(temp, "xb") as out:
                size = _copy(response, out)
            os.replace(temp, target)
        except OSError as exc:
            print(f"watchkeeper: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            temp.unlink(missing_ok=True)  # after a failure (or an interrupted download)
    print(f"{output}  {size:,} bytes")
    return EXIT_OK


def _copy(response: httpx.Response, out: BinaryIO) -> int:
    size = 0
    for chunk in response.iter_bytes():
        out.write(chunk)
        size += len(chunk)
    out.flush()
    return size


def _list(args: argparse.Namespace, client: httpx.Client, base: str) -> int:
    query = {k: v for k, v in (("state", args.state), ("model", args.model), ("limit", args.limit)) if v}
    response = client.get(f"{base}/v1/jobs", params=query)
    if response.status_code != 200:
        return _refused(response)
    print_jobs(response.json().get("jobs", []), sys.stdout)
    return EXIT_OK


# --- argument parsing ---------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jobs`` and its actions to the ``watchkeeper`` command."""
    jobs = commands.add_parser("jobs", help="submit and follow durable jobs (long model runs)",
                               description=__doc__.splitlines()[0])
    actions = jobs.add_subparsers(required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})")
    common.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for an HTTP answer")
    waits = argparse.ArgumentParser(add_help=False)
    waits.add_argument("--max-wait", type=_seconds, metavar="SECONDS", help="give up (exit 2) after this")

    submit = actions.add_parser("submit", parents=[common, waits], help="submit a job; print its id")
    submit.add_argument("model")
    submit.add_argument("--image", metavar="FILE", help="the same as --file image=FILE")
    submit.add_argument("--file", action="append", type=parse_file_assignment, metavar="NAME=FILE")
    for flag in ("--input", "--param"):
        submit.add_argument(flag, action="append", type=parse_assignment, metavar="NAME=VALUE",
                            help="VALUE as JSON when it parses, else as a string (e.g. 512p)")
    submit.add_argument("--idempotency-key", metavar="KEY", help="a retried submit with it is the same job")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end, like `jobs wait`")
    submit.add_argument("-o", "--output", metavar="FILE", help="with --wait: save the result ('-': stdout)")
    submit.set_defaults(run=_command(_submit))

    for name, run, text in (("status", _status, "print the job as JSON"),
                            ("wait", _wait, "show progress until the job ends (exit 0 if it succeeded)"),
                            ("cancel", _cancel, "cancel the job; print its state"),
                            ("result", _result, "save the job's result file")):
        action = actions.add_parser(name, parents=[common, waits] if name == "wait" else [common], help=text)
        action.add_argument("id")
        action.set_defaults(run=_command(run))
        if name == "result":
            action.add_argument("-o", "--output", required=True, metavar="FILE", help="'-': stdout")
            action.add_argument("--name", metavar="FIELD", help="which output file (default: the first)")

    listing = actions.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--state", choices=sorted(TERMINAL | {"queued", "running"}))
    listing.add_argument("--model")
    listing.add_argument("--limit", type=int)
    listing.set_defaults(run=_command(_list))
