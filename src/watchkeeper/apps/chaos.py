"""Chaos models: test doubles for the test suite and for operators' drills.

Not served unless configured (they are not in ``BUILTIN_APPS``); point a model at
``watchkeeper.apps.chaos:Chaos`` in a configuration file to drill an instance. Runs in worker
processes, and the faults are real: ``hang`` and ``spin`` never return, ``crash`` ends the
process with exit code 13, ``segfault`` dies of SIGSEGV, ``alloc`` leaks resident memory (and
raises a real MemoryError under a memory limit), and so does ``leak``: each request keeps its
``mb`` MiB for the worker's lifetime and answers normally (with the worker's pid), the slow
leak that recycling (``supervision.recycling``) must catch with no failed request. Never
call those actions in the test process.

- :class:`Chaos` does what its ``action`` input says; ``WK_CHAOS_SETUP_DELAY_S`` (seconds)
  makes its ``setup`` slow, for tests of start-up states. For jobs: ``work`` sleeps
  ``seconds`` in ``steps`` steps, reporting progress after each (so it can be cancelled
  between steps); ``stall`` reports progress once and then hangs (a frozen long job); any
  action returns a ``blob_kb`` KiB file output ``data`` when asked.
- Faults of a model's own making: ``child`` starts a child process (``sleep 1000``, its pid in
  ``child_pid``) and then sleeps ``seconds``, so a test can see that a worker's children
  die with it; ``object`` returns an instance of a class defined here (the front must not
  import model code to read it); ``undecodable`` returns an object that pickles in the worker
  but cannot be rebuilt (a ``Blob`` without its media type). ``WK_CHAOS_SETUP_FAIL_FILE``
  makes ``setup`` fail while the file it names exists, so a test can break and heal loading.
- :class:`FailingSetup` raises in ``setup``: the worker never becomes ready.
- :class:`FailingProbe` is Chaos whose deep-health check fails while the file named by
  ``WK_CHAOS_PROBE_FAIL_FILE`` exists (warm-up still passes), so a test can break and heal it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from typing import Any, Literal, NoReturn

import numpy as np
from pydantic import Field

from watchkeeper import contract
from watchkeeper.contract import Example

__all__ = [
    "CHILD_COMMAND", "CRASH_EXIT_CODE", "Chaos", "FailingProbe", "FailingSetup", "Hungry", "Opaque",
    "Undecodable"]

#: Exit code of the worker process after the ``crash`` action.
CRASH_EXIT_CODE = 13
SETUP_DELAY_ENV = "WK_CHAOS_SETUP_DELAY_S"
PROBE_FAIL_FILE_ENV = "WK_CHAOS_PROBE_FAIL_FILE"
#: Not WK_*: those are configuration keys unless config_loading exempts them.
SETUP_FAIL_FILE_ENV = "WK_CHAOS_SETUP_FAIL_FILE"
#: What the ``child`` action runs: a process that outlives its worker unless it is killed.
CHILD_COMMAND = ("sleep", "1000")

Action = Literal["ok", "sleep", "work", "stall", "hang", "spin", "crash", "segfault", "raise", "alloc",
                 "leak", "child", "object", "undecodable"]


class Chaos(contract.Model):
    """A model that answers, sleeps, hangs, spins, crashes, segfaults, raises or leaks on request."""

    class Inputs(contract.Inputs):
        action: Action = Field("ok", description="What to do; see the module docstring.")
        seconds: float = Field(1.0, ge=0, le=3600, description="How long `sleep` sleeps.")
        mb: int = Field(100, ge=0, le=65536,
                        description="MiB that `alloc` (or `leak`) allocates and keeps.")
        tag: contract.CleanTextOrEmpty = Field(
            "", max_length=200,
            description="Free text, to make inputs distinct (invisible characters removed).",
        )
        echo: Any = Field(None, description="Returned as is in the outputs.")
        steps: int = Field(10, ge=1, le=10000, description="Progress reports of `work`.")
        blob_kb: int = Field(0, ge=0, le=1048576, description="KiB of a file output `data`.")

    class Params(contract.Params):
        scale: int = Field(1, ge=1, le=10, description="Unused; a bounded parameter for tests.")

    max_batch_size = 8

    def __init__(self) -> None:
        self._leaked: list[np.ndarray] = []  # what `alloc` keeps, on purpose
        self._children: list[subprocess.Popen[bytes]] = []  # what `child` started

    def setup(self, device: str) -> None:
        delay = _env_seconds(SETUP_DELAY_ENV)
        if delay:
            time.sleep(delay)
        fail_file = os.environ.get(SETUP_FAIL_FILE_ENV, "")
        if fail_file and os.path.exists(fail_file):
            raise RuntimeError(f"chaos: setup fails while {fail_file} exists")

    def predict(self, inputs: Any, params: Any,
                progress: contract.ProgressFn = contract.no_progress) -> dict[str, Any]:
        outputs = self._act(inputs, progress)
        if inputs.blob_kb:
            outputs["data"] = contract.Blob(_pattern(inputs.blob_kb * 1024), "application/octet-stream")
        return outputs

    def _act(self, inputs: Any, progress: contract.ProgressFn) -> dict[str, Any]:
        action = inputs.action
        if action == "sleep":
            time.sleep(inputs.seconds)
        elif action == "work":
            for step in range(1, inputs.steps + 1):
                time.sleep(inputs.seconds / inputs.steps)
                progress(step / inputs.steps, f"step {step}/{inputs.steps}")
        elif action == "stall":
            progress(0.1, "stalling")
            _hang()
        elif action == "hang":
            _hang()
        elif action == "spin":
            _spin()
        elif action == "crash":
            os._exit(CRASH_EXIT_CODE)
        elif action == "segfault":
            _segfault()
        elif action == "raise":
            raise RuntimeError("chaos: raised on request")
        elif action == "alloc":
            return {"ok": True, "allocated_mb": self._leak(inputs.mb)}
        elif action == "leak":
            return {"ok": True, "leaked_mb": self._leak(inputs.mb), "pid": os.getpid()}
        elif action == "child":
            return {"ok": True, "child_pid": self._start_child(inputs.seconds)}
        elif action == "object":
            return {"ok": True, "thing": Opaque(inputs.tag)}
        elif action == "undecodable":
            return {"ok": True, "thing": Undecodable()}
        return {"ok": True, "echo": inputs.echo, "pid": os.getpid()}

    def probe(self) -> Example:
        return Example({"action": "ok"}, check=lambda out: out["ok"] is True)

    def _start_child(self, seconds: float) -> int:
        """Start CHILD_COMMAND (never waited for: it outlives the request), then sleep."""
        child = subprocess.Popen(CHILD_COMMAND, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._children.append(child)
        time.sleep(seconds)
        return child.pid

    def _leak(self, mb: int) -> int:
        """Allocate ``mb`` MiB, write every page (so it is resident) and keep it; total MiB."""
        if mb:
            self._leaked.append(np.ones(mb * 2**20, dtype=np.uint8))
        return sum(block.nbytes for block in self._leaked) // 2**20


class Opaque:
    """A class of the model's own: what the ``object`` action returns in its outputs."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


class Undecodable:
    """Pickles in the worker, but cannot be rebuilt: it unpickles as ``Blob(data)``, which
    lacks the required ``media_type`` (what the ``undecodable`` action returns)."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return contract.Blob, (b"no media type",)


class FailingSetup(contract.Model):
    """A model whose ``setup`` always raises; ``predict`` is never reached."""

    Inputs = Chaos.Inputs

    def setup(self, device: str) -> None:
        raise RuntimeError("chaos: setup fails on purpose")

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        raise RuntimeError("chaos: FailingSetup.predict called although setup failed")


class FailingProbe(Chaos):
    """Chaos whose probe check fails while the file named by WK_CHAOS_PROBE_FAIL_FILE exists."""

    def warmup(self) -> Example:
        return Example({"action": "ok"}, check=lambda out: out["ok"] is True)

    def probe(self) -> Example:
        return Example({"action": "ok"}, check=lambda out: out["ok"] is True and _probe_healthy())


def _probe_healthy() -> bool:
    """False while the file named by WK_CHAOS_PROBE_FAIL_FILE exists (read at each check)."""
    path = os.environ.get(PROBE_FAIL_FILE_ENV, "")
    return not (path and os.path.exists(path))


def _pattern(size: int) -> bytes:
    """``size`` bytes of a repeating 0..255 pattern (a test can check every byte)."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _env_seconds(name: str) -> float:
    """A non-negative number of seconds from the environment; 0 when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"{name}={raw!r} must be >= 0")
    return seconds


def _hang() -> NoReturn:
    """Sleep forever (the GIL is released: other threads run, the request never ends)."""
    while True:
        time.sleep(3600)


def _spin() -> NoReturn:
    """Busy-loop in pure Python forever, holding the GIL between switch intervals."""
    n = 0
    while True:
        n += 1


def _segfault() -> None:
    """Die of a real SIGSEGV: read address 0; fall back to sending the signal to ourselves."""
    ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGSEGV)


class Hungry(contract.Model):
    """Allocates ``mb`` MiB for ``hold_s`` seconds, then frees it; degrades by halving ``mb``.

    For admission tests and drills: under ``memory_limit_mb`` a large ``mb`` fails with a
    real MemoryError. ``estimate`` says whether it declares its need (``estimate_memory``)
    or lets the server learn it from measured peaks. Answers when it started and ended,
    so a test can check how many ran at once.
    """

    class Inputs(contract.Inputs):
        tag: str = Field("", max_length=200, description="Free text, to make inputs distinct.")

    class Params(contract.Params):
        mb: int = Field(64, ge=1, le=65536, description="MiB to allocate and touch.")
        hold_s: float = Field(0.0, ge=0, le=60, description="Seconds to hold the memory.")
        estimate: bool = Field(True, description="Declare the need (else it is learned).")

    max_batch_size = 4
    #: Parameter limits by device memory (for tests of profiles: set device_memory_gb).
    profiles = {1: {"mb": 64}, 4: {"mb": 512}, 64: {"mb": 65536}}

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        started = time.time()
        block = np.ones(params.mb * 2**20, dtype=np.uint8)  # every page written
        time.sleep(params.hold_s)
        total = int(block.sum())
        del block
        return {"mb": params.mb, "touched": total, "started": started, "ended": time.time(),
                "pid": os.getpid()}

    def estimate_memory(self, params: Any) -> int | None:
        return params.mb * 2**20 + 2**20 if params.estimate else None

    def degrade(self, params: Any) -> Any | None:
        return params.model_copy(update={"mb": params.mb // 2}) if params.mb >= 16 else None

    def probe(self) -> Example:
        return Example({"tag": "probe"}, {"mb": 1}, check=lambda out: out["touched"] == 2**20)

