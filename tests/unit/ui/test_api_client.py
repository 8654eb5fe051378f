"""The UI's API client against a real tiny HTTP server: errors as the API gives them (and the
Retry-After of a 429), no answer at all, the bodies it sends, and a job's event stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from watchkeeper.ui.api_client import UNREACHABLE, ApiClient, ApiError, parse_sse
from watchkeeper.ui.outputs import error_html

SEEN: list[dict[str, Any]] = []
EVENTS = (": keep-alive\n\n"
          'id: 1\nevent: state\ndata: {"job_id": "j", "state": "running", "attempts": 1}\n\n'
          'id: 2\nevent: progress\ndata: {"job_id": "j", "progress": 0.5, "message": "frame 8/16"}\n\n'
          'id: 3\nevent: state\ndata: {"job_id": "j", "state": "succeeded", "attempts": 1}\n\n')


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        SEEN.append({"path": self.path, "auth": self.headers.get("Authorization"),
                     "last": self.headers.get("Last-Event-ID")})
        if self.path == "/v1/models":
            self._send(200, b'{"models": [{"name": "m"}]}', {"Content-Type": "application/json"})
        elif self.path.endswith("/events"):
            self._send(200, EVENTS.encode(), {"Content-Type": "text/event-stream"})
        elif self.path == "/plain":
            self._send(502, b"bad gateway from a proxy", {"Content-Type": "text/plain"})
        else:
            error = {"error": {"type": "overloaded", "message": "the queue of 'm' is full (2 requests)",
                               "suggestion": "Retry after the time in Retry-After.", "request_id": "r1"}}
            self._send(429, json.dumps(error).encode(), {"Content-Type": "application/json",
                                                         "Retry-After": "3"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        SEEN.append({"path": self.path, "type": self.headers.get("Content-Type"), "body": body})
        self._send(200, b'{"outputs": {"ok": true}}', {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_models_sends_the_key(base: str) -> None:
    SEEN.clear()
    assert ApiClient(base).models("  k3y ") == [{"name": "m"}]
    assert SEEN[-1]["auth"] == "Bearer k3y"
    ApiClient(base).models("")
    assert SEEN[-1]["auth"] is None


def test_an_error_is_what_the_api_said_with_its_retry_time(base: str) -> None:
    with pytest.raises(ApiError) as caught:
        ApiClient(base).job(None, "nope")
    e = caught.value
    assert (e.status, e.type, e.retry_after, e.request_id) == (429, "overloaded", 3.0, "r1")
    assert e.message == "the queue of 'm' is full (2 requests)"
    shown = error_html(e)
    assert 'class="wk-error"' in shown and "retry in 3 s" in shown
    assert "Retry after the time in Retry-After." in shown and "Traceback" not in shown


def test_an_error_that_is_not_the_apis_shape(base: str) -> None:
    with pytest.raises(ApiError) as caught:
        ApiClient(base)._json("GET", "/plain", None)
    assert (caught.value.status, caught.value.message) == (502, "bad gateway from a proxy")


def test_no_server_is_a_short_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiError) as caught:
        ApiClient(f"http://127.0.0.1:{port}").models(None)
    assert caught.value.status == UNREACHABLE
    assert caught.value.message.startswith(f"the API at http://127.0.0.1:{port} did not answer")


def test_predict_sends_json_or_multipart_with_png_files(base: str) -> None:
    SEEN.clear()
    client = ApiClient(base)
    assert client.predict(None, "m", {"tag": "x"}, {"scale": 2}) == {"outputs": {"ok": True}}
    assert json.loads(SEEN[-1]["body"]) == {"inputs": {"tag": "x"}, "params": {"scale": 2}}
    client.submit(None, "m", {}, {"frames": 16}, {"image": b"\x89PNG\r\n\x1a\nfake"})
    sent = SEEN[-1]
    assert sent["path"] == "/v1/models/m/jobs" and sent["type"].startswith("multipart/form-data")
    assert b'name="image"; filename="image.png"' in sent["body"] and b"\x89PNG" in sent["body"]
    assert b'{"frames": 16}' in sent["body"]


def test_a_jobs_events_are_read_to_the_end(base: str) -> None:
    SEEN.clear()
    events = list(ApiClient(base).events("k", "j", last_event_id="0"))
    assert [(e.id, e.event) for e in events] == [("1", "state"), ("2", "progress"), ("3", "state")]
    assert events[1].data["message"] == "frame 8/16"
    assert SEEN[-1]["last"] == "0"


def test_sse_parsing_of_odd_lines() -> None:
    lines = iter(["retry: 10", "data: not json", "", "id: 7", "data: {\"a\":", "data: 1}"])
    events = list(parse_sse(lines))
    assert events[0].data == {"text": "not json"}
    assert (events[1].id, events[1].data) == ("7", {"a": 1})


class KeepAliveHandler(Handler):
    """The same answers over HTTP/1.1: a connection serves one request after another."""

    protocol_version = "HTTP/1.1"
    peers: set[int] = set()

    def do_GET(self) -> None:
        KeepAliveHandler.peers.add(self.client_address[1])
        super().do_GET()


def test_calls_from_many_threads_share_kept_alive_connections() -> None:
    """One client per UI process: a new one per call cost a TLS context build each time."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ApiClient(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        for _ in range(10):
            assert client.models(None) == [{"name": "m"}]
        assert len(KeepAliveHandler.peers) == 1  # one after the other: one connection
        answers: list[Any] = []
        workers = [threading.Thread(target=lambda: answers.extend(client.models(None) for _ in range(5)))
                   for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert answers == [[{"name": "m"}]] * 40
        assert len(KeepAliveHandler.peers) <= 9
        events = list(client.events(None, "j"))  # a stream on the same client, read to its end
        assert [e.id for e in events] == ["1", "2", "3"]
        client.close()
        assert client.models(None) == [{"name": "m"}]  # closed: the next call opens anew
    finally:
        client.close()
        server.shutdown()
        server.server_close()


class ShortKeepAliveHandler(KeepAliveHandler):
    """Closes a connection idle for 0.2 s, as the front does after its keep-alive timeout."""

    timeout = 0.2


def test_a_kept_alive_connection_the_server_closed_is_not_an_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ShortKeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ApiClient(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        for _ in range(3):
            assert client.models(None) == [{"name": "m"}]
            time.sleep(0.5)  # the server has closed the connection by now
    finally:
        client.close()
        server.shutdown()
        server.server_close()
