"""Security from outside, against a real server: keys and scopes on every route, Host and
Origin checks, request rates, revocation, and the refusal to serve a network anonymously.

The keys are made with ``watchkeeper keys add`` (the CLI, in a subprocess) into the file the
server reads; requests are plain HTTP, as a client or a web page would send them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import CHAOS, FAST, Server, ServerFactory, free_port, wait_for, write_config

MODELS = {"chaos": {"app": CHAOS, **FAST}}
SCOPES = {"reader": "read", "client": "predict,jobs", "ops": "admin,read,jobs,predict",
          "other": "jobs", "slow": "predict"}


def add_key(path: Path, name: str, scopes: str, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "watchkeeper.cli", "keys", "--file", str(path), "add", name,
         "--scopes", scopes, *extra], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    keys = {name: add_key(path, name, scopes) for name, scopes in SCOPES.items() if name != "slow"}
    keys["slow"] = add_key(path, "slow", "predict", "--requests-per-s", "1")
    return path, keys


@pytest.fixture
def srv(serve: ServerFactory, keyed: tuple[Path, dict[str, str]]) -> Server:
    path, keys = keyed
    return serve(MODELS, server={"api_keys_file": str(path), "cors_origins": ["https://app.example"]},
                 headers={"Authorization": f"Bearer {keys['ops']}"})


def as_key(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


#: Every route, the scope it needs, and a request to send (method, path, JSON body).
ROUTES: list[tuple[str, str, str, Any]] = [
    ("read", "GET", "/health", None),
    ("read", "GET", "/metrics", None),
    ("read", "GET", "/v1/models", None),
    ("read", "GET", "/v1/models/chaos", None),
    ("read", "GET", "/openapi.json", None),
    ("read", "GET", "/docs", None),
    ("predict", "POST", "/v1/models/chaos/predict", {"inputs": {}}),
    ("jobs", "POST", "/v1/models/chaos/jobs", {"inputs": {}}),
    ("jobs", "GET", "/v1/jobs", None),
    ("jobs", "GET", "/v1/jobs/nope", None),
    ("jobs", "GET", "/v1/jobs/nope/events", None),
    ("jobs", "GET", "/v1/jobs/nope/result", None),
    ("jobs", "DELETE", "/v1/jobs/nope", None),
    ("admin", "POST", "/admin/models/chaos/restart", None),
]


def test_probes_need_no_key(srv: Server) -> None:
    for path in ("/livez", "/readyz", "/health/simple"):
        response = httpx.get(srv.url + path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["x-content-type-options"] == "nosniff"
    # /ui only redirects to the web UI's port (404 here: this server runs no UI)
    assert httpx.get(srv.url + "/ui").status_code == 404


@pytest.mark.parametrize("scope, method, path, body", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES])
def test_every_route_needs_its_scope(srv: Server, keyed: tuple[Path, dict[str, str]], scope: str,
                                     method: str, path: str, body: Any) -> None:
    _, keys = keyed
    without = httpx.request(method, srv.url + path, json=body)
    assert without.status_code == 401, without.text
    assert without.json()["error"]["type"] == "unauthenticated"
    assert without.headers.get("www-authenticate", "").lower().startswith("bearer")
    bad = httpx.request(method, srv.url + path, json=body, headers=as_key(keys["reader"] + "x"))
    assert bad.status_code == 401
    lacking = next(name for name, scopes in SCOPES.items() if scope not in scopes.split(","))
    refused = httpx.request(method, srv.url + path, json=body, headers=as_key(keys[lacking]))
    assert refused.status_code == 403, (lacking, refused.text)
    assert f"'{scope}'" in refused.json()["error"]["message"]
    holder = next(name for name, scopes in SCOPES.items() if scope in scopes.split(","))
    allowed = httpx.request(method, srv.url + path, json=body, headers=as_key(keys[holder]))
    assert allowed.status_code not in (401, 403), (holder, allowed.text)


def test_a_foreign_host_and_a_foreign_origin_are_refused(srv: Server,
                                                         keyed: tuple[Path, dict[str, str]]) -> None:
    _, keys = keyed
    rebound = httpx.get(srv.url + "/v1/jobs", headers={"Host": "attacker.example", **as_key(keys["ops"])})
    assert rebound.status_code == 400
    # A page's "simple" cross-origin POST: text/plain, no preflight.
    page = httpx.post(srv.url + "/admin/models/chaos/restart", content=b"x",
                      headers={"Origin": "https://evil.example", "Content-Type": "text/plain",
                               **as_key(keys["ops"])})
    assert page.status_code == 403
    assert "access-control-allow-origin" not in page.headers
    assert srv.model_health("chaos")["replicas"][0]["restarts"] == 0
    listed = httpx.options(srv.url + "/v1/models/chaos/predict",
                           headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert listed.status_code == 204
    assert listed.headers["access-control-allow-origin"] == "https://app.example"


def test_a_key_over_its_rate_gets_429_with_retry_after(srv: Server,
                                                       keyed: tuple[Path, dict[str, str]]) -> None:
    _, keys = keyed
    statuses = []
    for _ in range(4):
        response = httpx.post(srv.url + "/v1/models/chaos/predict", json={"inputs": {}},
                              headers=as_key(keys["slow"]))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    assert statuses[0] == 200 and 429 in statuses


def test_a_revoked_key_stops_working_without_a_restart(serve: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "temp", "read")
    keeper = add_key(path, "keeper", "read")  # the harness's own, to watch and stop the server
    srv = serve(MODELS, server={"api_keys_file": str(path)}, headers=as_key(keeper))
    assert httpx.get(srv.url + "/health", headers=as_key(key)).status_code == 200
    subprocess.run([sys.executable, "-m", "watchkeeper.cli", "keys", "--file", str(path), "revoke", "temp"],
                   check=True, capture_output=True, timeout=60)
    wait_for(lambda: httpx.get(srv.url + "/health", headers=as_key(key)).status_code == 401, 10)
    assert httpx.get(srv.url + "/health", headers=as_key(keeper)).status_code == 200


def test_a_network_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "watchkeeper.toml"
    port = free_port()
    write_config(config, MODELS, {"host": "0.0.0.0", "port": port, "data_dir": str(tmp_path / "data"),
                                  "cache_dir": str(tmp_path / "cache")})
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "0.0.0.0" in result.stderr and "watchkeeper keys add" in result.stderr
    assert "allow_anonymous" in result.stderr
    with socket.socket() as sock:  # it never listened
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert time.monotonic() - started < 60
