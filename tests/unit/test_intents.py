"""API intents through the real loop and planner, on a scripted engine: an intent's steps are
planned, run by the (fake) executor, routed back to the intent, and settled from what the
next observation shows. The real engine runs the same in tests/integration/test_actions.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from supervisor.errors import EngineConflict, StepFailed, UpdatesLocked
from supervisor.intent_book import IntentBook
from supervisor.model.current import ContainerInfo, Current, VolumeInfo
from supervisor.model.intents import RemoveVolumes, RestartApp, Stage, StopAll, StopService
from supervisor.model.spec import DeviceContext
from supervisor.model.steps import Kill, RemoveVolume, Step, Stop, TakeLock
from supervisor.model.target import TargetState, parse_local_target
from supervisor.planner import PlanContext
from supervisor.reconciler import Reconciler

UUID = "d9f3c0a1b2c3d4e5f60718293a4b5c6d"
IMAGE = "registry.local/app/main:latest"
LOCKED = "Lockfile exists for { appId: 1, service: main }"


def target() -> TargetState:
    return parse_local_target({"local": {"name": "dev", "config": {}, "apps": {"1": {
        "name": "app", "commit": "c0ffee", "releaseId": 7, "volumes": {}, "networks": {},
        "services": {"1": {"serviceName": "main", "imageId": 11, "image": IMAGE,
                           "environment": {}, "labels": {}, "network_mode": "host"}}}}}},
        device_uuid=UUID)


def container(cid: str, *, running: bool = True) -> ContainerInfo:
    return ContainerInfo(
        id=cid, name="main_11_7_c0ffee", app_id=1, app_uuid="1", service_name="main",
        service_id=1, image_id=11, release_id=7, commit="c0ffee",
        state="running" if running else "exited", running=running, image="sha256:img",
        image_name=IMAGE, created="2024-01-01T00:00:00Z")


class Engine:
    """Docker as the loop sees it, changed by the steps the fake executor runs."""

    def __init__(self, *containers: ContainerInfo, volumes: tuple[str, ...] = ()) -> None:
        self.containers = {c.id: c for c in containers}
        self.volumes = set(volumes)
        self.locked: set[int] = set()
        self.refuse: BaseException | None = None  # what the next takeLock raises
        self.in_use: set[str] = set()
        self.applied: list[Step] = []

    async def observe(self) -> Current:
        return Current(containers=tuple(self.containers.values()),
                       volumes=tuple(VolumeInfo(name=n, app_id=1, app_uuid=None)
                                     for n in sorted(self.volumes)))

    async def context(self, current: Current) -> PlanContext:
        return PlanContext(device=DeviceContext(device_uuid=UUID),
                           image_ids={IMAGE: "sha256:img"}, locked_apps=frozenset(self.locked))

    async def apply(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            self.applied.append(step)
            if isinstance(step, TakeLock):
                if self.refuse is not None:
                    raise self.refuse
                self.locked.add(step.app_id)
            elif isinstance(step, Kill):
                self.containers.pop(step.container_id, None)
            elif isinstance(step, Stop):
                from dataclasses import replace
                c = self.containers[step.container_id]
                self.containers[c.id] = replace(c, running=False, state="exited")
            elif isinstance(step, RemoveVolume):
                if step.name in self.in_use:
                    raise StepFailed(step, EngineConflict("volume is in use"))
                self.volumes.discard(step.name)
            elif step.kind == "releaseLock":
                self.locked.clear()
            elif step.kind == "start":
                self.containers["new"] = container("new")


def loop_on(engine: Engine) -> Reconciler:
    tgt = target()
    return Reconciler(observe=engine.observe, target=lambda: tgt, context=engine.context,
                      executor=engine, publish=lambda: None)  # type: ignore[arg-type]


async def carried_out(loop: Reconciler, intent: Any) -> Any:
    task = asyncio.create_task(loop.run())
    try:
        return await asyncio.wait_for(loop.submit(intent), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_restart_takes_the_lock_kills_and_returns_once_recreated() -> None:
    engine = Engine(container("old"))
    loop = loop_on(engine)
    asyncio.run(carried_out(loop, RestartApp(1, frozenset({"old"}))))
    # (this fake engine's new container is not the spec's, so the loop goes on after)
    assert [s.kind for s in engine.applied][:3] == ["takeLock", "kill", "start"]
    assert [getattr(s, "intent", None) for s in engine.applied][:3] == [1, 1, None]
    assert "old" not in engine.containers
    assert not loop.intents.pending


def test_a_user_lock_fails_the_intent_at_once_and_not_the_loop() -> None:
    engine = Engine(container("old"))
    engine.refuse = UpdatesLocked(LOCKED, app_id=1, service="main")
    loop = loop_on(engine)
    with pytest.raises(UpdatesLocked) as refused:
        asyncio.run(carried_out(loop, RestartApp(1, frozenset({"old"}))))
    assert str(refused.value) == LOCKED
    assert [s.kind for s in engine.applied] == ["takeLock"]
    assert list(engine.containers) == ["old"]  # nothing touched
    # the action's failure, not the loop's: no backoff, no lock block in the status
    assert loop.state.failures == 0 and loop.state.last_error_locked is None
    assert not loop.intents.pending


def test_stop_all_stops_everything_then_holds_the_loop() -> None:
    engine = Engine(container("a"))
    engine.locked.add(1)  # the device action holds every app's lock
    loop = loop_on(engine)
    asyncio.run(carried_out(loop, StopAll("Rebooting")))
    assert [s.kind for s in engine.applied] == ["stop"]
    assert not engine.containers["a"].running
    assert loop.state.held == "Rebooting"


def test_an_intent_is_carried_out_while_the_loop_is_held() -> None:
    engine = Engine(container("a"))
    loop = loop_on(engine)
    loop.hold("failed 5 times")
    asyncio.run(carried_out(loop, StopService(1, "a")))
    # only the intent's steps: the lock and the stop, not the loop's release of it
    assert [s.kind for s in engine.applied] == ["takeLock", "stop"]
    assert loop.state.held == "failed 5 times"


def test_cleanup_keeps_a_volume_in_use_and_returns_what_went() -> None:
    engine = Engine(volumes=("1_gone", "1_busy"))
    engine.in_use.add("1_busy")
    loop = Reconciler(observe=engine.observe, target=lambda: None, context=engine.context,
                      executor=engine, publish=lambda: None)  # type: ignore[arg-type]
    removed = asyncio.run(carried_out(loop, RemoveVolumes(("1_gone", "1_busy"))))
    assert removed == ["1_gone"]
    assert engine.volumes == {"1_busy"}


def test_book_stages_of_a_purge() -> None:
    async def scenario() -> None:
        book = IntentBook()
        future = book.submit(RestartApp(1, frozenset({"old"}), purge=True,
                                        purge_volumes=frozenset({"1_data"})))
        (pending,) = book.view().pending
        assert pending.stage == Stage.ACT and book.view().held_apps == {1}
        vol = VolumeInfo(name="1_data", app_id=1, app_uuid=None)
        book.settle(Current(containers=(container("old"),), volumes=(vol,)), target(),
                    frozenset())
        assert book.view().pending[0].stage == Stage.ACT
        book.settle(Current(volumes=(vol,)), target(), frozenset())
        assert book.view().pending[0].stage == Stage.PURGE and book.view().held_apps == {1}
        book.settle(Current(), target(), frozenset())
        assert book.view().pending[0].stage == Stage.WAIT and book.view().held_apps == set()
        assert not future.done()  # nothing runs again yet
        book.settle(Current(containers=(container("new"),)), target(), frozenset())
        assert future.done() and not book.pending
        # a withdrawn intent (the action gave up) leaves the book
        other = book.submit(StopService(1, "x"))
        other.cancel()
        await asyncio.sleep(0)
        assert not book.pending

    asyncio.run(scenario())
