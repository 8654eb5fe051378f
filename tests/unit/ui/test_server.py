"""The UI process's server: the Host and Origin guard, ``/livez``, and the real process.

The guard is checked on a tiny Starlette app (Starlette's TestClient), then the whole UI is
started as the front starts it (``python -m watchkeeper.ui``) against an API that is not there:
it must still serve its page and ``/livez``, and refuse foreign hosts (but not to ``/livez``:
a liveness probe may name any address of the machine) and origins.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from watchkeeper.ui.server import HostOriginGuard, allowed_hosts, host_name, same_origin


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.method)


def guarded(hosts: frozenset[str]) -> TestClient:
    app = Starlette(routes=[Route("/", echo, methods=["GET", "POST", "DELETE"])])
    return TestClient(HostOriginGuard(app, hosts), base_url="http://127.0.0.1:7860")


def test_host_names() -> None:
    assert host_name("127.0.0.1:7860") == "127.0.0.1"
    assert host_name("[::1]:7860") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert allowed_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}
    assert "box.lan" in allowed_hosts("box.lan")
    assert "ui.example" in allowed_hosts("127.0.0.1", ["ui.example:443"])
    assert same_origin("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert not same_origin("null", "127.0.0.1:7860")
    assert not same_origin("http://evil.example", "127.0.0.1:7860")


def test_a_foreign_host_gets_400() -> None:
    client = guarded(allowed_hosts("127.0.0.1"))
    assert client.get("/").text == "GET"
    assert client.get("/", headers={"Host": "localhost:7860"}).status_code == 200
    refused = client.get("/", headers={"Host": "attacker.example"})
    assert refused.status_code == 400 and "not allowed" in refused.text
    assert guarded(frozenset({"*"})).get("/", headers={"Host": "attacker.example"}).status_code == 200


def test_a_cross_origin_state_change_gets_403() -> None:
    client = guarded(allowed_hosts("127.0.0.1"))
    assert client.post("/", headers={"Origin": "http://127.0.0.1:7860"}).status_code == 200
    assert client.post("/").status_code == 200  # no Origin: not a browser page's request
    assert client.post("/", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.delete("/", headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.get("/", headers={"Origin": "http://evil.example"}).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper.ui", "--api", f"http://127.0.0.1:{free_port()}",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.2)
        else:
            pytest.fail("the UI did not answer /livez within 60 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_ui_process_serves_livez_and_its_page_without_an_api(ui: str) -> None:
    live = httpx.get(ui + "/livez")
    assert (live.status_code, live.text) == (200, "ok")
    page = httpx.get(ui + "/")
    assert page.status_code == 200 and "wk-disabled-data" in page.text  # the page script is there


def test_the_ui_process_refuses_foreign_hosts_and_origins(ui: str) -> None:
    assert httpx.get(ui + "/", headers={"Host": "rebound.example"}).status_code == 400
    assert httpx.get(ui + "/livez", headers={"Host": "10.1.2.3:7860"}).status_code == 200  # a probe
    join = httpx.post(ui + "/gradio_api/queue/join", json={}, headers={"Origin": "http://evil.example"})
    assert join.status_code == 403
