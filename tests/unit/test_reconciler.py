"""The loop with a scripted planner and a fake executor: backoff, hold, cancel, settle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from supervisor import reconciler as rec
from supervisor.errors import EngineError, UpdatesLocked
from supervisor.locks import LockDir
from supervisor.model.current import Current
from supervisor.model.spec import DeviceContext
from supervisor.model.steps import Fetch, Noop, Step, TakeLock
from supervisor.planner import PlanContext

FETCH = Fetch(image="img", app_id=1, service_name="main", commit="c")
LOCK = TakeLock(app_id=1, services=("main",))


class FakeExecutor:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.applied: list[tuple[Step, ...]] = []
        self.started = asyncio.Event()

    async def apply(self, steps: tuple[Step, ...]) -> None:
        self.applied.append(steps)
        self.started.set()
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(3600)


def make_loop(plans: list[tuple[Step, ...]], executor: FakeExecutor,
              monkeypatch: pytest.MonkeyPatch) -> rec.Reconciler:
    """A reconciler whose planner returns `plans` in turn (then nothing)."""

    def fake_plan(current: Current, target: Any, ctx: PlanContext) -> tuple[Step, ...]:
        return plans.pop(0) if plans else ()

    monkeypatch.setattr(rec, "plan", fake_plan)
    monkeypatch.setattr(rec, "BACKOFF_BASE", 0.01)

    async def observe() -> Current:
        return Current()

    async def context(current: Current) -> PlanContext:
        return PlanContext(device=DeviceContext(device_uuid="u"))

    return rec.Reconciler(observe=observe, target=lambda: None, context=context,
                          executor=executor, publish=lambda: None)  # type: ignore[arg-type]


def test_applies_until_the_plan_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = FakeExecutor([])
    loop = make_loop([(FETCH,), (LOCK,)], executor, monkeypatch)
    asyncio.run(loop.apply_until_settled())
    assert executor.applied == [(FETCH,), (LOCK,)]
    assert loop.state.failures == 0 and not loop.state.applying
    assert loop.state.plan == ()


def test_failures_back_off_and_success_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = FakeExecutor([EngineError("boom"), EngineError("boom"), None])
    loop = make_loop([(FETCH,), (FETCH,), (FETCH,)], executor, monkeypatch)
    seen: list[int] = []
    original = loop._failed

    async def spy(err: Any) -> None:
        await original(err)
        seen.append(loop.state.failures)

    monkeypatch.setattr(loop, "_failed", spy)
    asyncio.run(loop.apply_until_settled())
    assert seen == [1, 2]
    assert loop.state.failures == 0 and loop.state.last_error is None


def test_a_lock_wait_is_remembered_with_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    locked = UpdatesLocked("held", app_id=1, service="main", path="/nonexistent/updates.lock")
    executor = FakeExecutor([locked, None])
    loop = make_loop([(LOCK,), (LOCK,)], executor, monkeypatch)
    states: list[Any] = []
    original = loop._failed

    async def spy(err: Any) -> None:
        await original(err)
        states.append((loop.state.last_error_locked, loop.state.locked_since))

    monkeypatch.setattr(loop, "_failed", spy)
    asyncio.run(loop.apply_until_settled())
    assert states[0][0] is locked and states[0][1] is not None
    assert loop.state.last_error_locked is None and loop.state.locked_since is None


def test_hold_stops_applying_until_the_target_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = FakeExecutor([])
    loop = make_loop([(FETCH,)], executor, monkeypatch)
    loop.hold("failed 5 times")
    asyncio.run(loop.apply_until_settled())
    assert executor.applied == []  # held: nothing applied
    loop.target_changed()
    assert loop.state.held is None
    asyncio.run(loop.apply_until_settled())
    assert executor.applied == [(FETCH,)]


def test_a_forced_update_clears_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = make_loop([], FakeExecutor([]), monkeypatch)
    loop.hold("x")
    loop.mark_dirty()
    assert loop.state.held == "x"
    loop.mark_dirty(force=True)
    assert loop.state.held is None


def test_a_new_target_abandons_a_download_only_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = FakeExecutor(["hang", None])
    loop = make_loop([(FETCH,), (LOCK,)], executor, monkeypatch)

    async def scenario() -> None:
        executor.started = asyncio.Event()  # bound to this event loop
        task = asyncio.create_task(loop.apply_until_settled())
        await asyncio.wait_for(executor.started.wait(), 5)
        assert not loop.batch_in_flight  # a download-only batch does not count
        loop.target_changed()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert executor.applied == [(FETCH,), (LOCK,)]


def test_a_planner_crash_backs_off_instead_of_killing_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor = FakeExecutor([])
    loop = make_loop([], executor, monkeypatch)
    calls = {"n": 0}

    def flaky(current: Current, target: Any, ctx: PlanContext) -> tuple[Step, ...]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("planner bug")
        return ()

    monkeypatch.setattr(rec, "plan", flaky)
    asyncio.run(loop.apply_until_settled())
    assert calls["n"] == 2 and loop.state.failures == 0


def test_noop_only_plans_wait_and_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = FakeExecutor([])
    loop = make_loop([(Noop("waiting"),), ()], executor, monkeypatch)
    monkeypatch.setattr(loop, "_sleep", _instant)
    asyncio.run(loop.apply_until_settled())
    assert executor.applied == []  # noops are never sent to the executor


async def _instant(seconds: float, **kw: Any) -> None:
    return None


def test_a_held_lock_backs_off_2n_x_500ms_capped_at_the_poll_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # engine.md §15.2 / locks.md §6: wait min(2^failures x 500 ms, poll interval), and the
    # dashboard says so; the refusal comes from the real lock dir holding a user lock
    locks = LockDir(tmp_path)
    locks.service_dir(1, "main").mkdir(parents=True)
    (locks.service_dir(1, "main") / "updates.lock").touch()
    tries = {"n": 0}

    class Locked(FakeExecutor):
        async def apply(self, steps: tuple[Step, ...]) -> None:
            tries["n"] += 1
            if tries["n"] <= 5:
                locks.take(1, ["main"], force=False)

    plans = [(LOCK,)] * 6
    monkeypatch.setattr(rec, "plan", lambda current, target, ctx: plans.pop(0) if plans else ())

    async def observe() -> Current:
        return Current()

    async def context(current: Current) -> PlanContext:
        return PlanContext(device=DeviceContext(device_uuid="u"))

    logged: list[str] = []
    loop = rec.Reconciler(observe=observe, target=lambda: None, context=context,
                          executor=Locked([]), publish=lambda: None,  # type: ignore[arg-type]
                          log=logged.append, poll_interval_s=lambda: 3.0)
    waited: list[float] = []

    async def record(seconds: float, **kw: Any) -> None:
        waited.append(seconds)

    monkeypatch.setattr(loop, "_sleep", record)
    asyncio.run(loop.apply_until_settled())
    assert waited == [1.0, 2.0, 3.0, 3.0, 3.0]
    reason = "Reason: Lockfile exists for { appId: 1, service: main }"
    assert logged == [f"Updates are locked, retrying in {d}s. {reason}" for d in (1, 2, 3, 3, 3)]

