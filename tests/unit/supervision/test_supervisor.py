"""The supervisor's restart policy over stand-in worker handles: no processes.

The supervisor makes each worker's handle through its injected ``worker_factory``, and
its template keeper each template's through ``template_factory``; here they make
:class:`StandIn` and :class:`StandInTemplate` handles whose readiness and exits the test
drives, so the policy above them (restart at once, back off, count load failures, give up,
one start per slot, a fresh template after a restart) runs as plain logic on an event
loop. Real processes, real kills: ``tests/integration``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from watchkeeper.config import ModelConfig
from watchkeeper.protocol.messages import ExitCode, ModelSchema, Ready, WorkerSpec
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.supervisor import ModelState, Supervisor
from watchkeeper.supervision.template_handle import TemplateState
from watchkeeper.supervision.template_keeper import TemplateKeeper
from watchkeeper.supervision.worker_handle import ReplicaState

SCHEMA = ModelSchema(inputs={}, params={}, max_batch_size=1, has_probe=False)


class StandIn:
    """What the supervisor reads and calls on a worker handle, with no process behind it."""

    def __init__(self, spec: WorkerSpec, on_message: Callable[[Any, Any], None],
                 on_exit: Callable[[Any, int], None]) -> None:
        self.spec, self.index = spec, spec.replica
        self.state = ReplicaState.STARTING
        self.pid: int | None = None
        self.started_at = self.last_seen = asyncio.get_running_loop().time()
        self.ready_at: float | None = None
        self.kill_reason: KillReason | None = None
        self.kill_detail: str | None = None
        self.forked_from = None
        self.timings_ms: dict[str, float] = {}
        self.schema = self.device = None
        self.reporting = False
        self._on_message, self._on_exit = on_message, on_exit

    async def start(self, template: object = None) -> None:
        self.pid = 10_000 + id(self) % 1000

    def become_ready(self) -> None:
        self._on_message(self, Ready(self.pid or 0, "cpu", SCHEMA, {"import": 1.0}))

    def exit(self, returncode: int) -> None:
        self.state = ReplicaState.DEAD
        self._on_exit(self, returncode)

    def kill(self, reason: KillReason) -> None:
        self.kill_reason = self.kill_reason or reason
        self.state = ReplicaState.STOPPING
        asyncio.get_running_loop().call_soon(self.exit, -9)

    def send(self, message: object) -> None:
        pass

    async def wait_dead(self, timeout_s: float) -> bool:
        return self.state is ReplicaState.DEAD

    @property
    def alive(self) -> bool:
        return self.state is not ReplicaState.DEAD

    @property
    def idle(self) -> bool:
        return self.state is ReplicaState.READY


class StandInTemplate:
    """What the keeper and the supervisor read and call on a template handle: it settles
    in the state the test chose, and dies when killed (``wait_dead`` then returns without
    yielding, as the real one does)."""

    def __init__(self, spec: WorkerSpec, settles_as: TemplateState) -> None:
        self.spec = spec
        self.state = TemplateState.STARTING
        self.settles_as = settles_as
        self.pid: int | None = None
        self.fork_hazard: str | None = None
        self.plans = False
        self.timings_ms: dict[str, float] = {}
        self.error: str | None = None
        self.failed_stage: str | None = None
        self.returncode: int | None = None
        self.dead = False
        self.kill_reason: str | None = None
        self.kill_detail: str | None = None

    async def start(self) -> None:
        self.pid = 20_000 + id(self) % 1000

    async def wait_settled(self, timeout_s: float) -> TemplateState:
        self.state = self.settles_as
        self.error = "setup: failed on purpose" if self.state is TemplateState.FAILED else None
        return self.state

    @property
    def can_fork(self) -> bool:
        return self.state is TemplateState.READY and self.fork_hazard is None

    def kill(self, reason: str | None = None, detail: str | None = None) -> None:
        self.kill_reason = self.kill_reason or reason
        self.dead, self.returncode = True, -9
        if self.state is not TemplateState.FAILED:
            self.state = TemplateState.DEAD

    async def wait_dead(self) -> None:
        while not self.dead:
            await asyncio.sleep(0.005)

    def poll(self) -> int | None:
        return self.returncode

    def silent_for(self, now: float) -> float:
        return 0.0


class Templates:
    """A template factory: each new template settles as the next of ``outcomes`` (the last
    one repeats)."""

    def __init__(self, *outcomes: TemplateState) -> None:
        self.outcomes = outcomes
        self.made: list[StandInTemplate] = []

    def make(self, spec: WorkerSpec, plan_only: bool) -> Any:
        outcome = self.outcomes[min(len(self.made), len(self.outcomes) - 1)]
        self.made.append(StandInTemplate(spec, outcome))
        return self.made[-1]


class Harness:
    def __init__(self, templates: Templates | None = None, **config: Any) -> None:
        self.handles: list[StandIn] = []
        self.lost: list[str] = []
        keys = {"fork_from_template": False, "restart_backoff_max_s": 0.05, **config}
        cfg = ModelConfig(app="tests.nowhere:Model", **keys)
        factory = templates.make if templates is not None else Templates(TemplateState.READY).make
        self.supervisor = Supervisor(
            "m", cfg, log_level="warning", on_ready=lambda r: None, on_done=lambda r, m: None,
            on_lost=lambda r, desc: self.lost.append(desc), worker_factory=self.make,
            template_factory=factory)

    def make(self, spec: WorkerSpec, on_message: Any, on_exit: Any) -> Any:
        handle = StandIn(spec, on_message, on_exit)
        self.handles.append(handle)
        return handle

    async def start(self) -> None:
        for slot in self.supervisor.slots:
            await self.supervisor._spawn(slot)

    async def settle(self, seconds: float = 0.1) -> None:
        await asyncio.sleep(seconds)

    @property
    def latest(self) -> StandIn:
        return self.handles[-1]


def run(test: Callable[[], Any]) -> None:
    asyncio.run(test())


def test_a_crash_after_ready_is_replaced_at_once() -> None:
    async def test() -> None:
        h = Harness()
        await h.start()
        h.latest.become_ready()
        assert h.supervisor.state is ModelState.READY
        h.latest.exit(-11)
        assert h.supervisor.state is ModelState.RECOVERING
        await h.settle()
        assert len(h.handles) == 2
        assert h.supervisor.slots[0].crash_streak == 1
        assert h.lost == ["signal SIGSEGV"]
    run(test)


def test_crashes_in_a_row_are_counted_per_slot() -> None:
    async def test() -> None:
        h = Harness()
        await h.start()
        for _ in range(3):
            h.latest.become_ready()
            h.latest.exit(-11)
            await h.settle()
        assert h.supervisor.slots[0].crash_streak == 3
        assert len(h.handles) == 4
    run(test)


def test_a_kill_restarts_without_counting_a_crash() -> None:
    async def test() -> None:
        h = Harness()
        await h.start()
        h.latest.become_ready()
        h.supervisor.recycle(h.latest, KillReason.PROBE)  # type: ignore[arg-type]
        await h.settle()
        assert len(h.handles) == 2
        assert h.supervisor.slots[0].crash_streak == 0
        assert h.lost == ["signal SIGKILL, killed: probe"]
    run(test)


def test_load_failures_in_a_row_mark_the_model_failed() -> None:
    async def test() -> None:
        h = Harness(load_retries=2)
        await h.start()
        h.latest.exit(ExitCode.LOAD_FAILED)
        await h.settle()
        assert len(h.handles) == 2 and h.supervisor.state is ModelState.STARTING
        h.latest.exit(ExitCode.LOAD_FAILED)
        await h.settle()
        assert h.supervisor.state is ModelState.FAILED
        assert "loading failed 2 times in a row" in (h.supervisor.failed_reason or "")
        assert len(h.handles) == 2  # no third start until an operator restarts it
    run(test)


def test_an_app_that_cannot_be_imported_fails_at_once() -> None:
    async def test() -> None:
        h = Harness(load_retries=5)
        await h.start()
        h.latest.exit(ExitCode.APP_NOT_FOUND)
        await h.settle()
        assert h.supervisor.state is ModelState.FAILED
        assert "cannot be loaded" in (h.supervisor.failed_reason or "")
        assert len(h.handles) == 1
    run(test)


def test_a_ready_worker_resets_the_load_failures() -> None:
    async def test() -> None:
        h = Harness(load_retries=2)
        await h.start()
        h.latest.exit(ExitCode.LOAD_FAILED)
        await h.settle()
        h.latest.become_ready()
        assert h.supervisor.load_failures == 0
        h.latest.exit(-9)
        await h.settle()
        h.latest.exit(ExitCode.LOAD_FAILED)  # one failure after a success: not FAILED
        await h.settle()
        assert h.supervisor.state is not ModelState.FAILED
    run(test)


# --- the template, and starts under way (the Python 3.12 faults) -----------------------------

SPEC = WorkerSpec("m", "tests.nowhere:Model", "cpu", -1, 1.0)


def test_a_restart_during_the_template_back_off_starts_a_new_template() -> None:
    """Python 3.12's wait_for does not yield for a template that is dead already: the old
    keeping task must still be over before the restart starts the new one."""
    async def test() -> None:
        templates = Templates(TemplateState.FAILED, TemplateState.READY)
        keeper = TemplateKeeper(SPEC, load_timeout_s=1, template_factory=templates.make,
                                on_load_failed=lambda reason, fatal: 30.0)  # a long back-off
        keeper.start()
        await asyncio.sleep(0.05)
        assert len(templates.made) == 1 and templates.made[0].state is TemplateState.FAILED
        await keeper.restart()
        ready = await asyncio.wait_for(keeper.planner(), 1)
        assert ready is templates.made[1] and ready.state is TemplateState.READY
        await keeper.stop()
        assert await keeper.planner() is None  # stopped: nobody waits for a template
    run(test)


def test_a_restart_while_a_start_waits_for_the_template_starts_no_second_worker() -> None:
    async def test() -> None:
        h = Harness(Templates(TemplateState.FAILED, TemplateState.READY),
                    fork_from_template=True, restart_backoff_max_s=30)
        await h.supervisor.start()
        await h.settle(0.05)  # the template failed: it backs off, the start waits for it
        assert h.handles == [] and h.supervisor.slots[0].spawning
        await h.supervisor.restart()
        await h.settle()
        assert len(h.handles) == 1  # the waiting start forked from the new template
        assert h.supervisor.slots[0].replica is h.handles[0]
        await h.supervisor.stop()
    run(test)


def test_each_slot_has_at_most_one_start_under_way() -> None:
    async def test() -> None:
        h = Harness(replicas=2)
        slot = h.supervisor.slots[1]
        for _ in range(3):
            h.supervisor._start_spawn(slot)  # a timer, an exit and a restart, at once
        await h.settle()
        assert [handle.index for handle in h.handles] == [1]
        assert not slot.spawning
    run(test)
