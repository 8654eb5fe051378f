"""Fuzz every operation of ``/openapi.json`` with schemathesis against a real server.

One server (the chaos model, an API key file with one key of every scope) for the module;
the schema is loaded from the server itself. Every operation gets up to ``MAX_EXAMPLES``
examples of valid and of invalid data (Hypothesis, derandomized so a run is repeatable, no
deadline; an operation with no parameters, such as ``/livez``, has one), sent with the key,
and each answer must: not be a 5xx at all (``not_a_server_error``: 500 is a bug, and a
502/503/504 would mean the fuzz broke the model), have a documented status
(``status_code_conformance``) and media type (``content_type_conformance``), and a body that
matches the documented schema (``response_schema_conformance``; errors have the one error
shape). ``ignored_auth`` also sends each keyed operation without the key, or with a wrong
one, and wants 401.

The operations run one after another in one test, each its own Hypothesis run, and every
failure is reported (with schemathesis' ``curl`` line) at the end: schemathesis'
``pytest.from_fixture`` cannot be used, it reads ``request.node._nodeid``, which pytest 9 no
longer has. A second test checks the schema itself: the key schemes, the statuses every route
documents, and the one error shape on every error status.

Nothing is left out. How the operations that need care are handled:

- Path parameters: random strings almost never name the model or a job, so half of the
  strategies fix them to the model ``chaos`` and the id of a job that has finished (submitted
  before the fuzz). So predict, submit, restart, results and events also run on the real
  model and a real job, not only their 404s.
- ``POST /admin/models/{name}/restart`` with ``chaos`` restarts the model for real on each
  such example (202; the workers are replaced behind it): it must still not
  5xx. The operations run in the schema's order, so predict is fuzzed before the restarts; the
  job routes after them only read the store or queue jobs, which a restarting model takes.
- ``GET /v1/jobs/{job_id}/events`` streams until the job's final event: the job the hook uses
  is final before the fuzz starts, so its stream ends by itself; a random id is a 404. Every
  call also has ``REQUEST_TIMEOUT_S``, so a stream that did not end fails the test instead of
  hanging it.
- ``DELETE /v1/jobs/{job_id}`` on the finished job returns it unchanged (a final job is not
  cancelled twice), so the job stays usable for the other operations.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.integration.conftest import CHAOS, FAST, Server, Servers
from watchkeeper.front.api_keys import KeyFile, Scope

MAX_EXAMPLES = 20
REQUEST_TIMEOUT_S = 15
MODEL = "chaos"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.ignored_auth]


class Fuzzed:
    """The server under fuzz, its key and a finished job."""

    def __init__(self, srv: Server, key: str, job_id: str) -> None:
        self.srv, self.key, self.job_id = srv, key, job_id


@pytest.fixture(scope="module")
def fuzzed(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    key = KeyFile(keys).add("fuzz", frozenset(Scope))
    srv = module_servers.start({MODEL: {"app": CHAOS, **FAST}}, server={"api_keys_file": str(keys)},
                               headers={"Authorization": f"Bearer {key}"})
    job = srv.submit_job(MODEL, {"action": "ok"})
    srv.wait_job(job["id"])
    return Fuzzed(srv, key, job["id"])


def real_parameters(operation: Any, fuzzed: Fuzzed) -> dict[str, str]:
    """The operation's path parameters that name the model or the finished job."""
    real = {"name": MODEL, "job_id": fuzzed.job_id}
    return {p.name: real[p.name] for p in operation.path_parameters if p.name in real}


def fuzz(operation: Any, fuzzed: Fuzzed) -> None:
    """``MAX_EXAMPLES`` cases of valid and invalid data, half of them on the real model/job."""
    real = real_parameters(operation, fuzzed)
    strategies = [operation.as_strategy(mode, path_parameters=params)
                  for mode in GenerationMode for params in ([None, real] if real else [None])]

    @given(case=st.one_of(strategies))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=fuzzed.srv.url, headers={"Authorization": f"Bearer {fuzzed.key}"},
                               timeout=REQUEST_TIMEOUT_S, checks=CHECKS)

    run()


def test_every_operation_answers_as_documented(fuzzed: Fuzzed) -> None:
    spec = schemathesis.openapi.from_url(f"{fuzzed.srv.url}/openapi.json",
                                         headers={"X-API-Key": fuzzed.key})
    operations = [result.ok() for result in spec.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for operation in operations:
        try:
            fuzz(operation, fuzzed)
        except (Exception, BaseExceptionGroup) as exc:  # all failures are reported together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


#: Error statuses with a shape of their own: the probes' verdicts, ``/health``'s report (or the
#: error shape), and Starlette's plain-text answers to a bad ``Range`` on a result file.
OWN_SHAPES = {("/readyz", "503"), ("/health", "503"), ("/health/simple", "503"),
              ("/v1/jobs/{job_id}/result", "400"), ("/v1/jobs/{job_id}/result", "416")}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def test_the_schema_declares_the_key_and_the_error_shape(fuzzed: Fuzzed) -> None:
    spec = httpx.get(f"{fuzzed.srv.url}/openapi.json",
                     headers={"X-API-Key": fuzzed.key}).raise_for_status().json()
    schemes = spec["components"]["securitySchemes"]
    assert sorted((s["type"], s.get("scheme", s.get("name"))) for s in schemes.values()) == [
        ("apiKey", "X-API-Key"), ("http", "bearer")]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            keyed = path not in ("/livez", "/readyz", "/health/simple", "/ui")
            assert len(op.get("security", [])) == (2 if keyed else 0), (method, path)
            statuses = {int(s) for s in op["responses"]}
            assert {400, 408, 431, 500} <= statuses, (method, path)
            if keyed:
                assert {401, 403, 429, 503} <= statuses, (method, path)
            for status, response in op["responses"].items():
                if status[0] in "45" and (path, status) not in OWN_SHAPES:
                    assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (
                        method, path, status)
