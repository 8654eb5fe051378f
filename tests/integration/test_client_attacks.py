"""Clients that try to stall the front: whatever one client does, the others are answered.

Each test attacks one promise from outside, with real sockets against a real server:

- a 16 MiB JSON body (one string, millions of numbers, arrays or objects) does not stall the
  event loop: ``/livez``, asked by a second client meanwhile, stays fast;
- slow clients are cut off: a partial request head after ``client_header_timeout_s``, a body
  trickled at 1 byte/s after ``client_body_timeout_s``, an oversized head at once (431);
  idle connections past ``server.max_connections`` are closed and a fresh client is still
  answered; past the cap with every connection busy, new requests get 503 + Retry-After
  while the health probes are still answered;
- a rejected 4 MB param is logged cut to a few hundred bytes, with a marker;
- event streams: many watchers of one job each get every event, the stream caps answer 503
  with Retry-After, and a job GET stays fast while 300 watchers follow a progressing job.

Hostile header values are fuzzed in ``test_fuzz.py``.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, wait_for

MiB = 1024 * 1024
#: Generous: /livez answers in a few ms on an idle loop; a stalled loop took 2.1 s.
LIVEZ_BOUND_S = 0.5


# --- raw HTTP/1.1 over a socket (also used by test_fuzz.py's header fuzz) -----------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def connect(url: str, timeout_s: float = 15) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout_s)


def read_response(sock: socket.socket, timeout_s: float, head_only: bool = False) -> RawResponse:
    """One response: status, headers (lower-case names), body (by length, chunks or close)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data[:300]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    response = RawResponse(int(lines[0].split(" ")[1]), headers)
    if head_only:
        return response
    if "content-length" in headers:
        while len(rest) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    elif headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    response.body = rest
    return response


def exchange(url: str, request: bytes, timeout_s: float = 15) -> RawResponse:
    """Send ``request`` (raw bytes) on a new connection; its response."""
    with connect(url, timeout_s) as sock:
        sock.sendall(request)
        return read_response(sock, timeout_s)


# --- helpers ---------------------------------------------------------------------------


class LivezPoller:
    """A second client asking /livez every ``interval_s`` (a new connection each time)."""

    def __init__(self, srv: Server, interval_s: float = 0.05) -> None:
        self.url = srv.url + "/livez"
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivezPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status = httpx.get(self.url, timeout=30).status_code
            except httpx.HTTPError:
                status = 0
            self.latencies.append(time.perf_counter() - started if status == 200 else float("inf"))
            self._stop.wait(self.interval_s)


def livez_baseline(srv: Server, n: int = 20) -> float:
    """The slowest of ``n`` /livez answers on an idle server (this machine is shared)."""
    worst = 0.0
    for _ in range(n):
        started = time.perf_counter()
        assert httpx.get(srv.url + "/livez", timeout=30).status_code == 200
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.02)
    return worst


def closed_within(sock: socket.socket, timeout_s: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, received
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False, received
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk


def status_of(raw: bytes) -> int | None:
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


# --- 1. big bodies do not stall the loop ---------------------------------------------------

BIG_BODIES = {
    "one string": lambda: {"inputs": {"action": "ok", "tag": "big", "bulk": "x" * (16 * MiB - 100)}},
    "numbers": lambda: {"inputs": {"action": "ok", "bulk": [1] * (8 * MiB)}},
    "arrays": lambda: {"inputs": {"action": "ok", "bulk": [[1]] * (4 * MiB)}},
    "objects": lambda: {"inputs": {"action": "ok", "bulk": [{"a": 1}] * (2 * MiB)}},
    "params": lambda: {"inputs": {"action": "ok"}, "params": {"bulk": [[0.5]] * (3 * MiB)}},
}


def own_data_dir(factory: pytest.TempPathFactory) -> dict[str, str]:
    """A data dir of its own: this module's servers run side by side (one dir, one server)."""
    return {"data_dir": str(factory.mktemp("data"))}


@pytest.fixture(scope="module")
def big_srv(module_servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv: Server = module_servers.start({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}},
                                       server={"max_body_mb": 40, **own_data_dir(tmp_path_factory)})
    return srv


@pytest.mark.parametrize("shape", sorted(BIG_BODIES))
def test_a_16_mib_body_does_not_stall_livez(big_srv: Server, shape: str) -> None:
    body = orjson.dumps(BIG_BODIES[shape]())
    assert len(body) > 15 * MiB
    baseline = livez_baseline(big_srv)
    with LivezPoller(big_srv) as poller:
        time.sleep(0.2)
        response = big_srv.client.post("/v1/models/chaos/predict", content=body,
                                       headers={"content-type": "application/json"}, timeout=60)
        time.sleep(0.2)
    assert response.status_code in (200, 413, 422), response.text[:500]
    assert response.status_code == 200 or response.json()["error"]["message"]
    worst = max(poller.latencies)
    assert len(poller.latencies) >= 3
    assert worst < LIVEZ_BOUND_S + baseline, (
        f"/livez took {worst:.3f} s while a 16 MiB body of {shape} was posted "
        f"(idle: {baseline:.3f} s; {len(poller.latencies)} polls)")


def test_a_body_of_too_many_json_values_is_refused_with_413_saying_the_limit(big_srv: Server) -> None:
    body = orjson.dumps({"inputs": {"action": "ok", "bulk": [[1]] * (4 * MiB)}})
    response = big_srv.client.post("/v1/models/chaos/predict", content=body,
                                   headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413, response.text[:500]
    assert "server.max_json_values" in response.json()["error"]["message"]


def test_big_string_inputs_reach_the_worker_intact(big_srv: Server) -> None:
    echo = {"text": "é" * 3 * MiB, "numbers": list(range(100_000)), "nested": [[1.5, None, True]] * 1000}
    response = big_srv.predict("chaos", {"action": "ok", "echo": echo}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["outputs"]["echo"] == echo


# --- 2. slow clients are cut off ----------------------------------------------------------

SLOW = {"client_header_timeout_s": 1.0, "client_body_timeout_s": 2.0,
        "client_body_min_kib_per_s": 64.0, "max_head_kib": 16}
#: Timeouts long enough that only the cap closes connections.
CAP = {"client_header_timeout_s": 60.0, "keep_alive_timeout_s": 60.0, "max_connections": 30}


@pytest.fixture(scope="module")
def slow_srv(module_servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv: Server = module_servers.start({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}},
                                       server={**SLOW, **own_data_dir(tmp_path_factory)})
    return srv


@pytest.fixture(scope="module")
def cap_srv(module_servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv: Server = module_servers.start({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}},
                                       server={**CAP, **own_data_dir(tmp_path_factory)})
    return srv


def test_a_partial_request_head_is_cut_off_after_the_header_timeout(slow_srv: Server) -> None:
    with connect(slow_srv.url) as sock:
        sock.sendall(b"POST /v1/models/chaos/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        started = time.monotonic()
        closed, received = closed_within(sock, 15)
    assert closed, "the connection with a partial head was still open after 15 s"
    took = time.monotonic() - started
    assert took >= 0.8, f"cut off after {took:.2f} s, before the header timeout"
    assert status_of(received) == 408, received[:300]
    assert b"server.client_header_timeout_s" in received and b"x-request-id: " in received


def test_a_silent_connection_is_closed_after_the_header_timeout(slow_srv: Server) -> None:
    with connect(slow_srv.url) as sock:
        closed, received = closed_within(sock, 15)
    assert closed, "a connection that sent nothing was still open after 15 s"
    assert received == b""


def test_a_body_trickled_at_one_byte_per_second_is_cut_off_after_the_body_timeout(
        slow_srv: Server) -> None:
    body = orjson.dumps({"inputs": {"action": "ok", "tag": "trickle"}})
    head = (b"POST /v1/models/chaos/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nX-Request-ID: trickle-1\r\n\r\n" % len(body))
    with connect(slow_srv.url) as sock:
        sock.sendall(head)
        started = time.monotonic()
        closed, sent, received = False, 0, b""
        while time.monotonic() - started < 15 and sent < len(body) - 1:
            try:
                sock.sendall(body[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            closed, more = closed_within(sock, 1.0)
            received += more
            if closed:
                break
        else:
            closed, more = closed_within(sock, 5)
            received += more
    took = time.monotonic() - started
    assert closed, f"a body trickled at 1 byte/s was still being read after {took:.0f} s"
    assert took >= 1.5, f"cut off after {took:.2f} s, before the body timeout"
    assert status_of(received) == 408, received[:300]
    assert b"x-request-id: trickle-1" in received and b"server.client_body_timeout_s" in received
    wait_for(lambda: "connection.body_timeout" in slow_srv.logs(), 10)
    # the route's own line comes a loop turn later, when its pending read wakes to the close
    wait_for(lambda: "the body did not arrive within server.client_body_timeout_s" in slow_srv.logs(), 10)


def test_a_huge_request_head_is_refused_with_431(slow_srv: Server) -> None:
    head = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * (200 * 1024) + b"\r\n\r\n"
    response = exchange(slow_srv.url, head, timeout_s=15)
    assert response.status == 431, response
    assert b"server.max_head_kib" in response.body
    assert slow_srv.get("/livez").status_code == 200


def test_idle_connections_past_the_cap_are_closed_and_a_fresh_client_is_answered(
        cap_srv: Server) -> None:
    cap = int(CAP["max_connections"])
    idle = [connect(cap_srv.url) for _ in range(cap + 20)]
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        response = httpx.get(cap_srv.url + "/livez", timeout=10)
        took = time.perf_counter() - started
        assert response.status_code == 200 and took < 5
        closed = sum(closed_within(sock, 0.05)[0] for sock in idle)
        assert closed >= 20, f"only {closed} of {len(idle)} idle connections were closed (cap {cap})"
    finally:
        for sock in idle:
            sock.close()


def test_past_the_cap_with_every_connection_busy_requests_get_503_and_probes_are_answered(
        cap_srv: Server) -> None:
    cap = int(CAP["max_connections"])
    body = orjson.dumps({"inputs": {"action": "sleep", "seconds": 4}})
    request = (b"POST /v1/models/chaos/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    busy = [connect(cap_srv.url) for _ in range(cap)]
    try:
        for sock in busy:
            sock.sendall(request)
        time.sleep(0.5)
        refused = exchange(cap_srv.url, request, timeout_s=15)
        assert refused.status == 503, refused
        assert int(refused.headers["retry-after"]) >= 1
        assert orjson.loads(refused.body)["error"]["type"] == "unavailable"
        assert b"server.max_connections" in refused.body
        probe = exchange(cap_srv.url, b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout_s=15)
        assert probe.status == 200, probe
    finally:
        for sock in busy:
            sock.close()


# --- 4. rejected params are logged cut ---------------------------------------------------------

def test_a_rejected_4_mb_param_is_logged_cut_with_a_marker(big_srv: Server) -> None:
    response = big_srv.predict("chaos", {"action": "ok"}, {"scale": "x" * (4 * MiB)},
                               headers={"X-Request-ID": "huge-param-1"}, timeout=60)
    assert response.status_code == 422, response.text[:300]
    lines = wait_for(lambda: [line for line in big_srv.logs().splitlines()
                              if "huge-param-1" in line and "request.error" in line], 10)
    assert len(lines[0]) < 4096, f"the log line is {len(lines[0]):,} bytes"
    line = orjson.loads(lines[0])
    assert "characters cut]" in line["params"]["scale"]


# --- 5. event streams --------------------------------------------------------------------------

def read_stream(url: str, job_id: str, out: list[dict[str, Any]]) -> None:
    """All events of the job's stream, appended to ``out`` as they arrive."""
    current: dict[str, Any] = {}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    out.append(current)
                    current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = int(value) if field == "id" else value


def test_many_watchers_of_one_job_each_get_every_event(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}}, jobs={"timeout_s": 60})
    job = srv.submit_job("chaos", {"action": "work", "seconds": 3, "steps": 30})
    streams: list[list[dict[str, Any]]] = [[] for _ in range(20)]
    threads = [threading.Thread(target=read_stream, args=(srv.url, job["id"], out), daemon=True)
               for out in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stored = [e["id"] for e in streams[0]]
    assert stored == list(range(1, len(stored) + 1)) and len(stored) >= 33
    for events in streams:
        assert [e["id"] for e in events] == stored
        assert events[-1]["event"] == "state" and '"succeeded"' in events[-1]["data"]


def open_stream(url: str, job_id: str) -> tuple[socket.socket, RawResponse]:
    sock = connect(url)
    sock.sendall(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock, read_response(sock, 15, head_only=True)


def test_streams_past_the_caps_get_503_with_retry_after(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}},
                jobs={"timeout_s": 60, "max_streams_per_job": 3, "max_streams": 5})
    first = srv.submit_job("chaos", {"action": "work", "seconds": 20, "steps": 20})
    second = srv.submit_job("chaos", {"action": "work", "seconds": 20, "steps": 20})
    opened = []
    try:
        for _ in range(3):
            sock, head = open_stream(srv.url, first["id"])
            opened.append(sock)
            assert head.status == 200, head
        over_job = srv.get(f"/v1/jobs/{first['id']}/events")
        assert over_job.status_code == 503, [line for line in srv.logs().splitlines()
                                             if '"level":"error"' in line or "stream" in line]
        assert int(over_job.headers["retry-after"]) >= 1
        assert "jobs.max_streams_per_job" in over_job.json()["error"]["message"]
        for _ in range(2):
            sock, head = open_stream(srv.url, second["id"])
            opened.append(sock)
            assert head.status == 200, head
        over_all = srv.get(f"/v1/jobs/{second['id']}/events")
        assert over_all.status_code == 503, over_all.status_code
        assert "jobs.max_streams" in over_all.text
        opened.pop().close()  # a stream that ends frees its place
        wait_for(lambda: open_stream_status(srv, second["id"]) == 200, 10)
    finally:
        for sock in opened:
            sock.close()


def open_stream_status(srv: Server, job_id: str) -> int:
    sock, head = open_stream(srv.url, job_id)
    sock.close()
    return head.status


class Drain:
    """Reads (and drops) whatever the server sends on ``socks``, so no buffer fills up."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        for sock in self.socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in selector.select(0.1):
                try:
                    if not key.fileobj.recv(65536):  # type: ignore[union-attr]
                        selector.unregister(key.fileobj)
                except OSError:
                    selector.unregister(key.fileobj)
        selector.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def job_get_times(srv: Server, job_id: str, n: int = 40) -> list[float]:
    times = []
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200
            times.append(time.perf_counter() - started)
            time.sleep(0.02)
    return times


@pytest.fixture
def watchers_srv(serve: ServerFactory) -> Iterator[Server]:
    yield serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}},
                server={"max_connections": 1000},
                jobs={"timeout_s": 120, "max_streams_per_job": 400, "max_streams": 1000})


def test_a_job_get_stays_fast_while_300_watchers_follow_a_progressing_job(watchers_srv: Server) -> None:
    srv = watchers_srv
    job = srv.submit_job("chaos", {"action": "work", "seconds": 40, "steps": 2000})
    srv.wait_job(job["id"], "running")
    alone = statistics.median(job_get_times(srv, job["id"]))
    socks = []
    try:
        for _ in range(300):
            sock = connect(srv.url)
            sock.sendall(f"GET /v1/jobs/{job['id']}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            socks.append(sock)
        drain = Drain(socks)
        time.sleep(2)
        watched = statistics.median(job_get_times(srv, job["id"]))
        drain.stop()
        assert srv.job(job["id"])["state"] == "running"
    finally:
        for sock in socks:
            sock.close()
    print(f"job GET median: {alone * 1000:.1f} ms alone, {watched * 1000:.1f} ms watched")
    assert watched < 3 * alone + 0.005, (
        f"a job GET took {watched * 1000:.1f} ms (median) with 300 watchers, "
        f"{alone * 1000:.1f} ms without")


