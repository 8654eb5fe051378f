"""Load one server with wrk and account for the machine's CPU while it runs.

Shared by bench/serving.py, bench/paired.py and bench/idle_gap.py: a wrk run and its parsed
report (:class:`Run`), the CPU that a server's process tree, we and everything else used
(:class:`CpuClock`), waiting for a quiet machine, and pausing a process tree (SIGSTOP) while
another server is measured.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF
from typing import Any, Generic, TypeVar

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

CORES = len(os.sched_getaffinity(0))
WRK_TIMEOUT_S = 30  # a request slower than this is a wrk timeout (an error)
#: A run during which other processes used more than this share of the CPU is done again...
NOISE = 0.10
RUN_ATTEMPTS = 3  # ...at most this many times in all (the quietest one is kept)
QUIET_WAIT_S = 15.0  # before a run, wait at most this long for the others to go under NOISE


@dataclass(frozen=True)
class Run:
    """One wrk run against one server at one concurrency."""

    concurrency: int
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float  # the server's processes, all of them
    main_cpu_s: float  # its first process (watchkeeper: the front)
    elsewhere: float  # share of the machine's CPU used by other processes (not wrk, not us)

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def wrk_script(body: dict[str, Any], directory: Path, headers: dict[str, str] | None = None,
               name: str = "post.lua") -> Path:
    """A wrk Lua script that POSTs ``body`` as JSON (with ``headers``, e.g. an API key)."""
    text = json.dumps(body)
    assert "]==]" not in text
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    path = directory / name
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"{extra}wrk.body = [==[{text}]==]\n")
    return path


def wrk_rate(url: str, script: Path, concurrency: int, seconds: int) -> float:
    """2xx answers per second of one wrk run; an error in it raises (a round must be clean)."""
    run = parse_wrk(wrk(url, script, concurrency, seconds), concurrency, (0.0, 0.0, 0.0))
    if run.errors:
        raise RuntimeError(f"{url}: {run.errors} errors at c={concurrency}")
    return run.ok_per_s


def wrk(url: str, script: Path, concurrency: int, seconds: int) -> str:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout",
           f"{WRK_TIMEOUT_S}s", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + WRK_TIMEOUT_S + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return done.stdout

_MS_PER_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(match[1]) * _MS_PER_UNIT[match[2]] if match else math.nan


def parse_wrk(out: str, concurrency: int, cpu: tuple[float, float, float]) -> Run:
    """A Run from wrk's report (with --latency)."""
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    if done is None:
        raise RuntimeError(f"cannot read wrk's report:\n{out}")
    p50, p99 = (re.search(rf"^\s+{q}%\s+(\S+)", out, re.M) for q in (50, 99))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(concurrency, int(done[1]), _ms(done[2]) / 1e3, int(non_2xx[1]) if non_2xx else 0,
               sum(map(int, sockets.groups())) if sockets else 0,
               _ms(p50[1]) if p50 else math.nan, _ms(p99[1]) if p99 else math.nan, *cpu)


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants alive now (the process first)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass(frozen=True)
class CpuClock:
    """CPU seconds used so far: the machine, the server's process tree, its first process, us + wrk."""

    wall: float
    machine: float
    server: float
    main: float
    ours: float

    @classmethod
    def now(cls, pid: int, *more: int) -> CpuClock:
        """``pid``'s tree is the server; the trees of ``more`` count with it (not as others)."""
        server = main = 0.0
        for index, proc in enumerate([*tree(pid), *(p for other in more for p in tree(other))]):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            server += times.user + times.system
            main += (times.user + times.system) if index == 0 else 0.0
        ours = sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (RUSAGE_SELF, RUSAGE_CHILDREN)))
        m = psutil.cpu_times()
        return cls(time.perf_counter(), m.user + m.nice + m.system + m.irq + m.softirq, server, main, ours)

    def since(self, start: CpuClock) -> tuple[float, float, float]:
        """(server CPU s, its first process's CPU s, share of the machine used by other processes)."""
        server, main = self.server - start.server, self.main - start.main
        others = self.machine - start.machine - server - (self.ours - start.ours)
        return server, main, max(0.0, others / ((self.wall - start.wall) * CORES))


def wait_quiet(*pids: int) -> None:
    """Wait (at most QUIET_WAIT_S) until other processes use less than NOISE of the CPU for 1 s."""
    deadline = time.perf_counter() + QUIET_WAIT_S
    while time.perf_counter() < deadline:
        start = CpuClock.now(*pids)
        time.sleep(1.0)
        if CpuClock.now(*pids).since(start)[2] < NOISE:
            return


def pause(pid: int) -> None:
    """SIGSTOP a process tree (an idle LitServe polls its queues and takes CPU)."""
    for proc in tree(pid):
        proc.send_signal(signal.SIGSTOP)


def resume(pid: int) -> None:
    for proc in tree(pid):
        proc.send_signal(signal.SIGCONT)


def resumed(pid: int, step: Callable[[], float]) -> float:
    """``step`` with the process tree running; paused again after."""
    resume(pid)
    try:
        return step()
    finally:
        pause(pid)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


T = TypeVar("T")

#: A round in which the hypervisor ran something else on our vCPUs for more than this share
#: of their time ("steal" in /proc/stat) is left out of the clean figures.
STEAL_CLEAN = 0.05


def steal_clock() -> tuple[float, float]:
    """(steal, all) CPU seconds of the machine so far (user to steal: guest time is in user)."""
    times = psutil.cpu_times()
    return times.steal, sum(times[:8])


@dataclass
class Rounds(Generic[T]):
    """What :func:`alternate` measured: each step's values and the steal share of each."""

    values: dict[str, list[T]]
    steal: dict[str, list[float]]

    def __getitem__(self, name: str) -> list[T]:
        return self.values[name]

    @property
    def count(self) -> int:
        return len(next(iter(self.steal.values()), []))

    def clean(self) -> list[int]:
        """The rounds in which no step lost more than STEAL_CLEAN of the CPU to steal."""
        return [r for r in range(self.count) if all(s[r] <= STEAL_CLEAN for s in self.steal.values())]

    def judged(self, min_share: float) -> list[int]:
        """The rounds a figure should use: the clean ones when there are some and they are at
        least ``min_share`` of all rounds, else all of them."""
        clean = self.clean()
        return clean if clean and len(clean) >= min_share * self.count else list(range(self.count))

    def worst_by_round(self) -> list[float]:
        """Each round's largest steal share, over its steps."""
        return [max(s[r] for s in self.steal.values()) for r in range(self.count)]


def alternate(steps: Mapping[str, Callable[[], T]], rounds: int) -> Rounds[T]:
    """Each step once per round, in an order that flips every round; the values by step.

    How the benchmarks compare things on a machine whose speed drifts: each round measures
    every contender within moments of the others. This machine is a VM whose host at times
    takes a large share of its CPUs for seconds at a time (steal), so the steal share during
    each step is kept with its value.
    """
    values: dict[str, list[T]] = {name: [] for name in steps}
    steal: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            stolen, total = steal_clock()
            values[name].append(steps[name]())
            stolen_after, total_after = steal_clock()
            steal[name].append((stolen_after - stolen) / max(0.01, total_after - total))
    return Rounds(values, steal)
