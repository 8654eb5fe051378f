"""systemd's notify protocol (front.systemd_notify): the address and watchdog rules as
``sd_notify`` and ``sd_watchdog_enabled`` read them, the STATUS line, and the link's
READY / STATUS / WATCHDOG / STOPPING messages on a real datagram socket, with a fake clock."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.front.systemd_notify import (
    Notifier,
    SystemdLink,
    notify_address,
    status_line,
    watchdog_interval_s,
)


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the link's task needs a running loop)."""
    @functools.wraps(test)
    def run(*args: Any, **kw: Any) -> None:
        asyncio.run(test(*args, **kw))
    return run


class Listener:
    """systemd's side: a bound AF_UNIX datagram socket, read without blocking."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    heard = Listener(str(tmp_path / "notify"))
    yield heard
    heard.sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_link(address: str | bytes, clock: Clock, *, watchdog_s: float | None = 2.0,
              status: list[str] | None = None, problem: list[str | None] | None = None,
              ) -> SystemdLink:
    lines = status if status is not None else ["0/1 models ready: embed starting"]
    problems = problem if problem is not None else [None]
    return SystemdLink(Notifier(address), watchdog_s=watchdog_s,
                       status=lambda stopping: lines[-1], watch_problem=lambda: problems[-1], clock=clock)


# --- reading the environment ----------------------------------------------------------------


def test_notify_address_paths_and_abstract_names() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/123") == (
        b"\0/org/freedesktop/systemd1/notify/123")
    for unusable in ("", "@", "relative/path", "vsock:2:1234"):
        assert notify_address(unusable) is None


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OWN"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_as_sd_watchdog_enabled_reads_it(env: dict[str, str],
                                                          expected: float | None) -> None:
    env = {k: str(os.getpid()) if v == "OWN" else v for k, v in env.items()}
    assert watchdog_interval_s(env, os.getpid()) == expected


def test_the_link_needs_notify_socket_and_takes_the_variables_out_of_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@wk-test", "WATCHDOG_USEC": "4000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    link = SystemdLink.from_environ(status=lambda stopping: "", watch_problem=lambda: None,
                                    environ=env)
    assert link is not None and link.watchdog_s == 2.0
    assert env == {"PATH": "/bin"}  # workers, which inherit the environment, never see them
    link.notifier.close()
    assert SystemdLink.from_environ(status=lambda stopping: "", watch_problem=lambda: None,
                                    environ={}) is None


# --- the STATUS line --------------------------------------------------------------------------


def test_status_line_counts_serving_models() -> None:
    states = {"embed": "ready", "cartoon": "starting", "chaos": "degraded"}
    assert status_line(states, [], False) == (
        "2/3 models ready: cartoon starting, chaos degraded, embed ready")
    assert status_line(states, ["chaos"], True) == (
        "draining: 2/3 models ready: cartoon starting, chaos degraded, embed ready; "
        "queue full: chaos")
    assert status_line({}, [], False) == "0/0 models ready: none configured"


# --- the link on a real socket ---------------------------------------------------------------


@in_loop
async def test_ready_then_pings_every_half_timeout(listener: Listener) -> None:
    clock = Clock()
    link = make_link(listener.sock.getsockname(), clock, watchdog_s=2.0)
    link.serving()
    assert listener.messages() == ["READY=1\nSTATUS=0/1 models ready: embed starting"]
    assert link.tick_s == 1.0  # the STATUS line is checked every second
    clock.now += 1.0
    link.tick()
    assert listener.messages() == []  # half the timeout has not passed
    clock.now += 1.0
    link.tick()
    assert listener.messages() == ["WATCHDOG=1"]
    clock.now += 0.9  # a tick that wakes a little early still pings on time
    link.tick()
    clock.now += 0.9
    link.tick()
    assert listener.messages() == ["WATCHDOG=1"]
    await link.close()


@in_loop
async def test_status_sent_when_it_changes(listener: Listener) -> None:
    clock, lines = Clock(), ["0/1 models ready: embed starting"]
    link = make_link(listener.sock.getsockname(), clock, watchdog_s=None, status=lines)
    link.serving()
    listener.messages()
    link.tick()
    assert listener.messages() == []
    lines.append("1/1 models ready: embed ready")
    link.tick()
    assert listener.messages() == ["STATUS=1/1 models ready: embed ready"]
    await link.close()


@in_loop
async def test_no_ping_while_a_watch_is_dead_then_pings_again(
        listener: Listener, caplog: pytest.LogCaptureFixture) -> None:
    clock, problems = Clock(), [None]
    link = make_link(listener.sock.getsockname(), clock, watchdog_s=1.0, problem=problems)
    link.serving()
    listener.messages()
    problems.append("the supervisor watch of model 'embed' is not running")
    for _ in range(5):
        clock.now += 1.0
        link.tick()
    assert listener.messages() == []
    withheld = [r for r in caplog.records if r.getMessage() == "systemd.watchdog_withheld"]
    assert len(withheld) == 1  # logged once, not every tick
    problems.append(None)
    clock.now += 1.0
    link.tick()
    assert listener.messages() == ["WATCHDOG=1"]
    await link.close()


@in_loop
async def test_stopping_once_and_pings_go_on_while_the_watches_end(listener: Listener) -> None:
    clock, lines = Clock(), ["1/1 models ready: embed ready"]
    problems: list[str | None] = [None]
    link = make_link(listener.sock.getsockname(), clock, watchdog_s=1.0, status=lines,
                     problem=problems)
    link.serving()
    listener.messages()
    lines.append("draining: 1/1 models ready: embed ready")
    link.stopping()
    link.stopping()
    assert listener.messages() == ["STOPPING=1\nSTATUS=draining: 1/1 models ready: embed ready"]
    problems.append("the supervisor watch of model 'embed' is not running")  # stopped on purpose
    clock.now += 1.0
    link.tick()
    assert listener.messages() == ["WATCHDOG=1"]
    await link.close()


@in_loop
async def test_abstract_socket_and_the_loop_task(tmp_path: Path) -> None:
    """An ``@`` name from the environment reaches an abstract socket; the periodic task
    pings from the running loop by itself."""
    name = f"@wk-test-{os.getpid()}-{tmp_path.name}"
    heard = Listener(b"\0" + name[1:].encode())
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"}  # pings every 50 ms
    link = SystemdLink.from_environ(status=lambda stopping: "1/1 models ready: embed ready",
                                    watch_problem=lambda: None, environ=env)
    assert link is not None
    link.serving()
    await asyncio.sleep(0.3)
    await link.close()
    heard_now = heard.messages()
    heard.sock.close()
    assert heard_now[0] == "READY=1\nSTATUS=1/1 models ready: embed ready"
    assert heard_now.count("WATCHDOG=1") >= 3


def test_a_send_to_nobody_is_dropped_and_logged_once(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "nobody"))
    assert notifier.send("WATCHDOG=1") is False
    assert notifier.send("WATCHDOG=1") is False
    notifier.close()
    assert [r.getMessage() for r in caplog.records].count("systemd.notify_failed") == 1


# --- the runtime's side: which watch is dead -------------------------------------------------


@in_loop
async def test_runtime_names_a_model_whose_supervisor_watch_is_not_running(tmp_path: Path) -> None:
    """``Runtime.watch_problem`` reads each supervisor's real watch task (not started here:
    a stand-in task plays it), so a rename in the supervisor fails this test."""
    from watchkeeper.config_loading import load_config
    from watchkeeper.front.runtime import Runtime

    config = load_config(None, env={"WK_DATA_DIR": str(tmp_path / "data"),
                                    "WK_CACHE_DIR": str(tmp_path / "cache")})
    runtime = Runtime(config)
    first, *others = runtime.services.values()
    assert runtime.watch_problem() == (
        f"the supervisor watch of model '{first.name}' is not running")  # none started yet
    tasks = []
    for service in (first, *others):
        tasks.append(asyncio.get_running_loop().create_task(asyncio.sleep(60)))
        service.supervisor._watch_task = tasks[-1]
    assert runtime.watch_problem() is None
    tasks[-1].cancel()
    await asyncio.sleep(0)
    assert runtime.watch_problem() == (
        f"the supervisor watch of model '{(first, *others)[-1].name}' is not running")
    for task in tasks:
        task.cancel()
