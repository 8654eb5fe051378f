"""The Service tab against a real ``watchkeeper serve`` with API keys: the refusals it shows
(401 without a key, 403 without the ``read`` scope, in the API's words) and a killed worker
seen as an exit and a restart, through the same ``refresh`` the page's timer calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from watchkeeper.ui.service_feed import ServiceFeed, read_service

pytest.importorskip("gradio", reason="the web UI's extra (`ui`) is not installed")
from watchkeeper.ui.service_tab import Pages, refresh


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout_s} s")


class Api:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url, self.keys = url, keys
        self.client = httpx.Client(timeout=5)

    def worker_pid(self) -> int:
        key = {"Authorization": f"Bearer {self.keys['read']}"}
        answer = self.client.get(self.url + "/health", headers=key)
        return int(answer.json()["models"]["chaos"]["replicas"][0]["pid"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("service")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
    env["WK_API_KEYS_FILE"] = str(root / "keys.json")
    keys = {}
    for name, scopes in (("read", "read"), ("predict", "predict")):
        command = [sys.executable, "-m", "watchkeeper.cli", "keys", "add", name, "--scopes", scopes]
        made = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        keys[name] = made.stdout.strip().splitlines()[-1]
    port = free_port()
    config = root / "wk.toml"
    config.write_text(f'[server]\nport = {port}\ndata_dir = "{root / "data"}"\n'
                      f'cache_dir = "{root / "cache"}"\ngrace_period_s = 2\n'
                      f'api_keys_file = "{root / "keys.json"}"\n\n'
                      '[models.chaos]\napp = "watchkeeper.apps.chaos:Chaos"\ndevice = "cpu"\n'
                      "timeout_s = 2\nprobe_interval_s = 0\n")
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    found = Api(f"http://127.0.0.1:{port}", keys)

    def ready() -> bool:
        assert proc.poll() is None, (root / "server.log").read_text()
        try:
            return found.client.get(found.url + "/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 60, "the server ready")
        yield found
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        found.client.close()
        log.close()


def test_no_key_and_a_key_without_read_are_shown_in_the_apis_words(api: Api) -> None:
    with httpx.Client() as client:
        none = read_service(client, api.url, "").problem
        weak = read_service(client, api.url, api.keys["predict"]).problem
        good = read_service(client, api.url, api.keys["read"])
    assert none is not None and (none.kind, none.status, none.word) == ("auth", 401, "unauthorized")
    assert none.message == "this request needs an API key" and "Authorization: Bearer" in none.suggestion
    assert weak is not None and (weak.status, weak.word) == (403, "forbidden")
    assert weak.message == "this key (predict) lacks the 'read' scope" and "--scopes" in weak.suggestion
    assert good.problem is None and good.health is not None and good.metrics is not None
    assert good.health["models"]["chaos"]["replicas"][0]["pid"] is not None
    assert ("chaos", "0") in good.metrics.worker_rss and "chaos" in good.metrics.latency_buckets


def test_the_timers_refresh_shows_the_refusal_then_a_killed_worker(api: Api) -> None:
    with httpx.Client() as client:
        feed = ServiceFeed()
        status, error, models, events, *_plots = refresh(client, api.url, api.keys["predict"], feed)
        assert ">forbidden</span>" in status and "lacks the &#x27;read&#x27; scope" in error["value"]
        pid = api.worker_pid()
        status, error, models, events, *_plots = refresh(client, api.url, api.keys["read"], feed)
        assert ">ok</span>" in status and not error["visible"] and f'<td class="pid">{pid}</td>' in models
        os.kill(pid, signal.SIGKILL)

        def restarted() -> tuple[Any, ...] | None:
            shown = refresh(client, api.url, api.keys["read"], feed)
            return shown if "exited: signal SIGKILL" in shown[3] and f">{pid}<" not in shown[2] else None

        status, error, models, events, *_plots = wait_for(restarted, 20, "the kill in the events")
    new_pid = api.worker_pid()
    assert f'<td class="pid">{new_pid}</td>' in models and '<td class="restarts">1</td>' in models
    assert f"(pid {pid} → {new_pid})" in events or "counted as crash" in events
    assert "the API answers again" in events  # after the 403


def test_pages_are_kept_by_session_and_forgotten_when_idle() -> None:
    pages = Pages()
    first = pages.get("a", now=100.0)
    assert pages.get("a", now=101.0) is first and pages.get("b", now=101.0) is not first
    assert pages.get(None, now=101.0) is not pages.get(None, now=101.0)  # no session: no history
    assert len(pages) == 2
    pages.get("b", now=101.0 + Pages.IDLE_S)
    assert len(pages) == 2  # "a" was used 1 s earlier than "b": not idle yet
    pages.get("b", now=102.0 + Pages.IDLE_S)
    assert len(pages) == 1 and pages.get("a", now=103.0 + Pages.IDLE_S) is not first


def test_an_answer_the_page_cannot_show_is_said_in_words(api: Api) -> None:
    """A report of an unexpected shape (here: a restart count that is not a number) breaks no page."""
    feed = ServiceFeed()
    with httpx.Client() as client:
        refresh(client, api.url, api.keys["read"], feed)
        assert feed.changes.health is not None
        feed.changes.health["models"]["chaos"]["replicas"][0]["restarts"] = "many"
        shown = refresh(client, api.url, api.keys["read"], feed)
    assert shown[1]["visible"] and "could not be shown (ValueError)" in shown[1]["value"]
    assert "Traceback" not in shown[1]["value"]
