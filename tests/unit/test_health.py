"""The health check of `GET /v1/healthy` (config.md §9, engine.md §15.4, README differences),
on the real `HealthCheck`, `FetchTimer`, `LoopState` and cloud `Poller`, with a controlled
clock: each rule is driven to just before and just at its limit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from supervisor import health
from supervisor import reconciler as rec
from supervisor.cloud.poller import Poller
from supervisor.errors import UpdatesLocked
from supervisor.health import ENGINE_GRACE_S, FetchTimer, HealthCheck
from supervisor.model.current import Current
from supervisor.model.spec import DeviceContext
from supervisor.model.steps import Step, TakeLock
from supervisor.planner import PlanContext

POLL_S = 100.0  # 2 x poll interval = 200 s
LIMIT = 2 * POLL_S


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, state: rec.LoopState | None = None, *, alive: bool = True,
         fetches: FetchTimer | None = None, cloud: Any = None) -> tuple[HealthCheck,
                                                                        rec.LoopState]:
    state = state or rec.LoopState()
    check = HealthCheck(loop_state=lambda: state, loop_alive=lambda: alive,
                        fetches=fetches or FetchTimer(clock), poll_interval_s=lambda: POLL_S,
                        cloud=cloud, clock=clock)
    return check, state


def applying_since(state: rec.LoopState, start: float) -> None:
    state.applying = True
    state.apply_started = start


# ---------------------------------------------------------------------------- device-state

def test_idle_is_healthy_whatever_the_time() -> None:
    clock = Clock()
    check, state = make(clock)
    state.apply_started = 0.0  # an old, finished run
    clock.now += 10 * LIMIT
    assert check.check() == (True, "")


def test_an_apply_run_is_unhealthy_at_twice_the_poll_interval() -> None:
    clock = Clock()
    check, state = make(clock)
    applying_since(state, clock.now)
    clock.now += LIMIT - 1
    assert check.check() == (True, "")
    clock.now += 1
    ok, reason = check.check()
    assert not ok and "has not settled for 200 s" in reason


def test_retrying_rounds_do_not_reset_the_run_clock() -> None:
    # a restart loop keeps starting rounds (heartbeat) but never settles: §15.4 fails it
    clock = Clock()
    check, state = make(clock)
    applying_since(state, clock.now)
    for _ in range(5):
        clock.now += LIMIT / 4
        state.heartbeat = clock.now
        state.failures += 1
    assert not check.check()[0]


def test_a_fetch_in_progress_is_healthy() -> None:
    clock = Clock()
    fetches = FetchTimer(clock)
    check, state = make(clock, fetches=fetches)
    applying_since(state, clock.now)
    fetches.set_active(True)
    clock.now += 10 * LIMIT
    assert check.check() == (True, "")


def test_time_spent_fetching_is_not_counted() -> None:
    clock = Clock()
    fetches = FetchTimer(clock)
    check, state = make(clock, fetches=fetches)
    applying_since(state, clock.now)
    clock.now += 50
    fetches.set_active(True)  # pulls for 120 s
    clock.now += 120
    fetches.set_active(False)
    clock.now += LIMIT - 50 - 1  # 199 s of apply time, 319 s of wall time
    assert check.check() == (True, "")
    clock.now += 1
    assert not check.check()[0]


def test_fetches_before_the_run_do_not_count() -> None:
    clock = Clock()
    fetches = FetchTimer(clock)
    fetches.set_active(True)
    clock.now += 500
    fetches.set_active(False)
    check, state = make(clock, fetches=fetches)
    applying_since(state, clock.now)
    clock.now += LIMIT
    assert not check.check()[0]


def test_fetch_timer_counts_overlaps_only() -> None:
    clock = Clock(0.0)
    timer = FetchTimer(clock)
    for start, end in ((10, 20), (30, 60)):
        clock.now = start
        timer.set_active(True)
        timer.set_active(True)  # a second pull starting changes nothing
        clock.now = end
        timer.set_active(False)
    clock.now = 100
    timer.set_active(True)
    assert timer.active
    assert timer.seconds_since(15, 110) == 5 + 30 + 10
    assert timer.seconds_since(70, 90) == 0


def test_a_held_user_lock_is_exempt() -> None:
    clock = Clock()
    check, state = make(clock)
    applying_since(state, clock.now)
    clock.now += LIMIT * 3
    state.last_error_locked = UpdatesLocked("Lockfile exists for { appId: 1, service: main }")
    state.locked_at = clock.now
    clock.now += LIMIT  # still held; the next retry is due (backoff up to 60 s > a short poll)
    assert check.check() == (True, "")


def test_after_a_lock_the_run_clock_starts_at_the_last_held_round() -> None:
    clock = Clock()
    check, state = make(clock)
    applying_since(state, clock.now)
    clock.now += LIMIT * 3
    state.locked_at = clock.now  # the last round the lock held back
    state.last_error_locked = None  # released: the apply goes on
    clock.now += LIMIT - 1
    assert check.check() == (True, "")
    clock.now += 1
    assert not check.check()[0]


# ---------------------------------------------------------------------------- ours

def test_an_engine_that_does_not_answer_fails_after_the_grace() -> None:
    clock = Clock()
    check, state = make(clock)
    state.observe_failing_since = clock.now
    clock.now += ENGINE_GRACE_S - 1
    assert check.check() == (True, "")
    clock.now += 1
    ok, reason = check.check()
    assert not ok and "container engine has not answered for 120 s" in reason


def test_a_stopped_loop_is_unhealthy() -> None:
    check, _ = make(Clock(), alive=False)
    assert check.check() == (False, "the reconciliation loop has stopped")


def test_before_the_loop_exists_only_the_other_checks_count() -> None:
    clock = Clock()
    check = HealthCheck(loop_state=lambda: None, loop_alive=lambda: True,
                        fetches=FetchTimer(clock), poll_interval_s=lambda: POLL_S, clock=clock)
    assert check.check() == (True, "")


# ---------------------------------------------------------------------------- api-binder

class NoCloud:
    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the health check never calls the cloud")


def managed(clock: Clock) -> Poller:
    return Poller(client=NoCloud(), uuid=lambda: "u" * 32, sink=None,  # type: ignore[arg-type]
                  interval_ms=lambda: int(POLL_S * 1000), clock=clock)


def test_managed_device_fails_when_no_poll_succeeded_for_twice_the_interval() -> None:
    clock = Clock()
    poller = managed(clock)
    check, _ = make(clock, cloud=poller.healthy)
    clock.now += LIMIT - 1
    assert check.check() == (True, "")
    clock.now += 1
    ok, reason = check.check()
    assert not ok and "no successful target state poll" in reason
    poller.last_success = clock.now  # a poll succeeded
    assert check.check() == (True, "")


def test_an_unmanaged_device_passes_the_cloud_check() -> None:
    clock = Clock()
    check, _ = make(clock, cloud=None)
    clock.now += 100 * LIMIT
    assert check.check() == (True, "")


def test_the_device_state_check_wins_over_a_healthy_cloud() -> None:
    clock = Clock()
    poller = managed(clock)
    check, state = make(clock, cloud=poller.healthy)
    applying_since(state, clock.now)
    clock.now += LIMIT
    poller.last_success = clock.now
    assert not check.check()[0]


# ---------------------------------------------------------------------------- the loop feeds it

def test_the_reconciler_records_the_last_round_a_lock_held_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lock = TakeLock(app_id=1, services=("main",))
    plans: list[tuple[Step, ...]] = [(lock,), (lock,), (lock,)]
    outcomes: list[Any] = [UpdatesLocked("held"), UpdatesLocked("held"), None]

    class Executor:
        async def apply(self, steps: tuple[Step, ...]) -> None:
            outcome = outcomes.pop(0)
            if outcome is not None:
                raise outcome

    async def observe() -> Current:
        return Current()

    async def context(current: Current) -> PlanContext:
        return PlanContext(device=DeviceContext(device_uuid="u"))

    monkeypatch.setattr(rec, "plan", lambda *a: plans.pop(0) if plans else ())
    monkeypatch.setattr(rec, "BACKOFF_BASE", 0.001)
    loop = rec.Reconciler(observe=observe, target=lambda: None, context=context,
                          executor=Executor(), publish=lambda: None)  # type: ignore[arg-type]
    assert loop.state.locked_at is None
    before = time.monotonic()
    asyncio.run(loop.apply_until_settled())
    assert loop.state.locked_at is not None and before <= loop.state.locked_at <= \
        time.monotonic()
    assert loop.state.last_error_locked is None  # released: the exemption is over


def test_runtime_health_reads_the_runtime_parts() -> None:
    clock = Clock()

    class Settings:
        poll_interval_ms = int(POLL_S * 1000)

    class Loop:
        state = rec.LoopState(applying=True, apply_started=time.monotonic() - LIMIT - 1)

    class Runtime:
        settings = Settings()
        reconciler = Loop()
        fetches = FetchTimer(clock)
        cloud = None

    ok, reason = health.runtime_health(Runtime()).check()  # type: ignore[arg-type]
    assert not ok and "has not settled" in reason
