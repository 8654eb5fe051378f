"""The guard (``watchkeeper.http.guard``): hosts, origins, keys and scopes, rates, headers.

Driven through ASGI with httpx against a tiny inner app that echoes who it was called by;
the key ring reads a real key file. The real server: ``tests/integration/test_security.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from watchkeeper.front.api_keys import KeyFile, KeyLimits, KeyRing
from watchkeeper.front.api_keys import Scope as KeyScope
from watchkeeper.http.guard import OPEN, Guard, GuardPolicy, RateLimiter, host_name, principal_of, route_scope


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = principal_of(scope).owner.encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def call(policy: GuardPolicy, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=Guard(echo, policy))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            return await client.request(method, path, **kw)
    return asyncio.run(go())


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[GuardPolicy, dict[str, str]]:
    keys = KeyFile(tmp_path / "keys.json")
    made = {
        "reader": keys.add("reader", frozenset({KeyScope.READ})),
        "client": keys.add("client", frozenset({KeyScope.PREDICT, KeyScope.JOBS})),
        "slow": keys.add("slow", frozenset({KeyScope.PREDICT}), KeyLimits(requests_per_s=1)),
    }
    return GuardPolicy.build("127.0.0.1", [], ["https://app.example"], KeyRing(tmp_path / "keys.json")), made


ANON = GuardPolicy.build("127.0.0.1", [], [], None)


@pytest.mark.parametrize("method, path, scope", [
    ("GET", "/livez", OPEN), ("GET", "/readyz", OPEN), ("GET", "/health/simple", OPEN),
    ("GET", "/health", "read"), ("GET", "/metrics", "read"), ("GET", "/docs", "read"),
    ("GET", "/v1/models/embed", "read"), ("POST", "/v1/models/embed/predict", "predict"),
    ("POST", "/v1/models/embed/jobs", "jobs"), ("GET", "/v1/jobs/abc/events", "jobs"),
    ("DELETE", "/v1/jobs/abc", "jobs"), ("POST", "/admin/models/embed/restart", "admin"),
    ("GET", "/livez/../admin", "read"), ("GET", "/something-new", "read"),
])
def test_route_scopes(method: str, path: str, scope: str) -> None:
    assert route_scope(method, path) == scope


@pytest.mark.parametrize("raw, name", [("Example.COM:8000", "example.com"), ("[::1]:8000", "::1"),
                                       ("::1", "::1"), ("localhost", "localhost")])
def test_host_names(raw: str, name: str) -> None:
    assert host_name(raw) == name


def test_anonymous_mode_lets_everyone_in_as_one_owner() -> None:
    response = call(ANON, "POST", "/admin/models/x/restart")
    assert (response.status_code, response.text) == (200, "anonymous")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_a_foreign_host_is_refused() -> None:
    response = call(ANON, "GET", "/v1/models", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "bad_input"
    assert call(ANON, "GET", "/livez", headers={"Host": "localhost:8000"}).status_code == 200


def test_a_page_on_another_origin_cannot_change_anything() -> None:
    response = call(ANON, "POST", "/admin/models/x/restart", headers={"Origin": "https://evil.example"},
                    content=b"{}")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "forbidden"
    assert "access-control-allow-origin" not in response.headers
    assert call(ANON, "GET", "/v1/models", headers={"Origin": "https://evil.example"}).status_code == 200


def test_a_listed_origin_gets_cors(keyed: tuple[GuardPolicy, dict[str, str]]) -> None:
    policy, made = keyed
    pre = call(policy, "OPTIONS", "/v1/models/embed/predict",
               headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in pre.headers["access-control-allow-headers"]
    refused = call(policy, "OPTIONS", "/v1/models/embed/predict",
                   headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403
    ok = call(policy, "POST", "/v1/models/embed/predict",
              headers={"Origin": "https://app.example", "Authorization": f"Bearer {made['client']}"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"


def test_keys_and_scopes(keyed: tuple[GuardPolicy, dict[str, str]]) -> None:
    policy, made = keyed
    assert call(policy, "GET", "/livez").status_code == 200  # probes need no key
    missing = call(policy, "GET", "/health")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "unauthenticated"
    wrong = call(policy, "GET", "/health", headers={"Authorization": "Bearer wk_0000_nope"})
    assert wrong.status_code == 401
    reader = {"Authorization": f"Bearer {made['reader']}"}
    assert call(policy, "GET", "/health", headers=reader).text == "reader"
    lacking = call(policy, "POST", "/v1/models/m/predict", headers=reader)
    assert lacking.status_code == 403 and "'predict' scope" in lacking.json()["error"]["message"]
    by_header = call(policy, "POST", "/v1/models/m/jobs", headers={"X-API-Key": made["client"]})
    assert by_header.text == "client"
    admin = call(policy, "POST", "/admin/models/m/restart", headers={"X-API-Key": made["client"]})
    assert admin.status_code == 403


def test_a_key_over_its_rate_gets_429_with_retry_after(keyed: tuple[GuardPolicy, dict[str, str]]) -> None:
    policy, made = keyed
    slow = {"X-API-Key": made["slow"]}

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=Guard(echo, policy))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            return [await client.post("/v1/models/m/predict", headers=slow) for _ in range(3)]

    statuses = [r.status_code for r in asyncio.run(go())]
    assert statuses[0] == 200 and 429 in statuses


def test_the_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("k", 2.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert limiter.take("k", 2.0) == 0.0
    assert limiter.take("other", 2.0) == 0.0
    assert limiter.take("k", None) == 0.0
