"""The executor (supervisor/executor.py) against a fake engine and store at its Protocol boundary.

Real lifecycles and real update locks (files in a temp dir); the engine and the store are
recorders. Checked: which engine calls each step makes and in what order, the dashboard log
lines of engine.md §17 (`'<service> <image>'`, ` due to '<message>'`), the journal outcome of
every step, lifecycle phases, and how a batch reports its failures (a locked app first).
The Docker side of the same calls is tested on the real engine in tests/integration.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from supervisor.engine.runner import AsyncEngine
from supervisor.errors import EngineConflict, EngineError, StepFailed, UpdatesLocked
from supervisor.executor import Executor, ExecutorHooks
from supervisor.lifecycle import Key, Lifecycles
from supervisor.locks import LOCK_NAMES, SUPERVISOR_UID, UpdateLocks
from supervisor.model.current import Phase
from supervisor.model.spec import ContainerSpec, VolumeSpec
from supervisor.model.steps import (
    CreateVolume,
    Fetch,
    Handover,
    Kill,
    Noop,
    ReleaseLock,
    RemoveImage,
    RemoveVolume,
    Start,
    Step,
    Stop,
    TakeLock,
    UpdateCommit,
)
from supervisor.store import ImageRecord

APP, SERVICE, COMMIT, IMAGE = 1, "main", "c0ffee", "registry.local/main:latest"
KEY: Key = (APP, SERVICE, COMMIT)
OBJECT = f"'{SERVICE} {IMAGE}'"  # engine.md §17: the object of a service log line


class FakeEngine:
    """Records every call; `fail` maps a method name to the error it raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, BaseException] = {}
        self.existing: dict[str, str] = {}  # container name -> id, for find_container
        self.on_start: Callable[[str], None] = lambda cid: None
        self.gate: asyncio.Event | None = None  # pull waits on it when set
        self.pulling = asyncio.Event()
        self.started = asyncio.Event()

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    async def pull(self, ref: str, on_progress: Callable[[int], None],
                   auth: dict[str, str] | None = None) -> str:
        self._call("pull", ref)
        self.pulling.set()
        if self.gate is not None:
            await self.gate.wait()
        on_progress(50)
        on_progress(100)
        return "sha256:img"

    async def remove_image(self, image: str) -> None:
        self._call("remove_image", image)

    async def create(self, spec: ContainerSpec) -> str:
        self._call("create", spec.name)
        return "new-id"

    async def find_container(self, name: str) -> str | None:
        self._call("find_container", name)
        return self.existing.get(name)

    async def start(self, cid: str) -> None:
        self._call("start", cid)
        self.on_start(cid)
        self.started.set()

    async def stop(self, cid: str) -> None:
        self._call("stop", cid)

    async def remove(self, cid: str, *, force: bool = False) -> None:
        self._call("remove", cid, force)

    async def rename(self, cid: str, name: str) -> None:
        self._call("rename", cid, name)

    async def clear_restart_policy(self, cid: str) -> None:
        self._call("clear_restart_policy", cid)

    async def create_volume(self, spec: VolumeSpec) -> None:
        self._call("create_volume", spec.name)

    async def remove_volume(self, name: str) -> None:
        self._call("remove_volume", name)


class FakeStore:
    def __init__(self) -> None:
        self.journal: dict[int, list[Any]] = {}
        self.images: dict[str, ImageRecord] = {}
        self.commits: dict[int, str] = {}

    async def journal_begin(self, kind: str, step: dict[str, Any], app_id: int | None,
                            service_name: str | None) -> int:
        self.journal[len(self.journal) + 1] = [kind, app_id, service_name, None]
        return len(self.journal)

    async def journal_end(self, journal_id: int, outcome: str) -> None:
        self.journal[journal_id][3] = outcome

    async def set_current_commit(self, app_id: int, commit: str) -> None:
        self.commits[app_id] = commit

    async def upsert_image(self, image: ImageRecord) -> None:
        self.images[image.name] = image

    async def delete_image(self, name: str) -> None:
        self.images.pop(name, None)

    def outcomes(self) -> list[tuple[Any, ...]]:
        return [tuple(entry) for entry in self.journal.values()]


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.engine = FakeEngine()
        self.store = FakeStore()
        self.phases: list[tuple[Key, Phase]] = []
        self.lifecycles = Lifecycles(lambda key, phase: self.phases.append((key, phase)))
        self.locks = UpdateLocks(tmp_path)
        self.log: list[str] = []
        self.progress: list[tuple[str, int | None]] = []
        self.executor = Executor(
            engine=cast(AsyncEngine, self.engine), store=self.store, lifecycles=self.lifecycles,
            locks=self.locks,
            hooks=ExecutorHooks(
                progress=lambda step, status, pct: self.progress.append((status, pct)),
                log=self.log.append, require_reboot=_never,
                image_name=lambda app_id, service, commit: IMAGE if service == SERVICE else ""),
        )

    def phase(self, key: Key = KEY) -> Phase | None:
        lc = self.lifecycles.get(key)
        return None if lc is None else lc.state


async def _never() -> None:
    raise AssertionError("no reboot expected")


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def spec(name: str = f"{SERVICE}_11_1_{COMMIT}") -> ContainerSpec:
    return ContainerSpec(name=name, body={"Image": "sha256:img"}, extra_networks=(),
                         config_hash="h", app_id=APP, app_uuid="uuid", service_name=SERVICE,
                         depends_on=())


def kill_step(cid: str = "old-id") -> Kill:
    return Kill(container_id=cid, name=f"{SERVICE}_11_1_{COMMIT}", app_id=APP,
                service_name=SERVICE, commit=COMMIT)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- containers ----------------------------------------------------------------------------------

def test_start_creates_then_starts_and_logs_upstreams_lines(rig: Rig) -> None:
    run(rig.executor.run(Start(spec=spec(), commit=COMMIT)))
    assert rig.engine.calls == [("create", spec().name), ("start", "new-id")]
    assert rig.log == [f"Installing service {OBJECT}", f"Installed service {OBJECT}",
                       f"Starting service {OBJECT}", f"Started service {OBJECT}"]
    assert [p for _, p in rig.phases][-1] == Phase.RUNNING
    assert rig.phase() == Phase.RUNNING
    assert rig.store.outcomes() == [("start", APP, SERVICE, "done")]


def test_start_without_running_only_installs(rig: Rig) -> None:
    run(rig.executor.run(Start(spec=spec(), commit=COMMIT, start=False)))
    assert rig.engine.calls == [("create", spec().name)]
    assert rig.phase() == Phase.INSTALLED


def test_start_of_an_existing_container_does_not_create(rig: Rig) -> None:
    rig.lifecycles.ensure(KEY, Phase.INSTALLED)
    run(rig.executor.run(Start(spec=spec(), commit=COMMIT, container_id="there")))
    assert rig.engine.calls == [("start", "there")]
    assert rig.log == [f"Starting service {OBJECT}", f"Started service {OBJECT}"]


def test_a_name_conflict_reuses_the_container_left_by_a_crash(rig: Rig) -> None:
    rig.engine.fail["create"] = EngineConflict("create: name in use")
    rig.engine.existing[spec().name] = "crash-left"
    run(rig.executor.run(Start(spec=spec(), commit=COMMIT)))
    assert rig.engine.calls[1:] == [("find_container", spec().name), ("start", "crash-left")]


def test_a_failed_install_is_logged_journalled_and_raised(rig: Rig) -> None:
    rig.engine.fail["create"] = EngineConflict("create: name in use")  # and nothing to reuse
    with pytest.raises(StepFailed) as failed:
        run(rig.executor.run(Start(spec=spec(), commit=COMMIT)))
    assert isinstance(failed.value.cause, EngineConflict)
    assert rig.log == [f"Installing service {OBJECT}",
                       f"Failed to install service {OBJECT} due to 'create: name in use'"]
    assert rig.store.outcomes() == [("start", APP, SERVICE, "failed: create: name in use")]
    assert ("start", "new-id") not in rig.engine.calls


def test_a_failed_start_is_logged(rig: Rig) -> None:
    rig.engine.fail["start"] = EngineError("start new-id: boom")
    with pytest.raises(StepFailed):
        run(rig.executor.run(Start(spec=spec(), commit=COMMIT)))
    assert rig.log[-1] == f"Failed to start service {OBJECT} due to 'start new-id: boom'"


def test_kill_stops_then_removes(rig: Rig) -> None:
    rig.lifecycles.ensure(KEY, Phase.RUNNING)
    run(rig.executor.run(kill_step()))
    assert rig.engine.calls == [("stop", "old-id"), ("remove", "old-id", True)]
    assert rig.log == [f"Killing service {OBJECT}", f"Killed service {OBJECT}"]
    assert rig.phase() == Phase.EXITED
    assert rig.store.outcomes() == [("kill", APP, SERVICE, "done")]


def test_stop_keeps_the_container(rig: Rig) -> None:
    run(rig.executor.run(Stop(container_id="old-id", name="x", app_id=APP, service_name=SERVICE,
                              commit=COMMIT)))
    assert rig.engine.calls == [("stop", "old-id")]
    assert rig.log == [f"Stopping service {OBJECT}", f"Stopped service {OBJECT}"]


def test_a_failed_kill_is_logged_with_the_reason(rig: Rig) -> None:
    rig.engine.fail["stop"] = EngineError("stop old-id: engine gone")
    with pytest.raises(StepFailed):
        run(rig.executor.run(kill_step()))
    assert rig.log == [f"Killing service {OBJECT}",
                       f"Failed to kill service {OBJECT} due to 'stop old-id: engine gone'"]
    assert ("remove", "old-id", True) not in rig.engine.calls


def test_a_service_without_an_image_name_is_named_alone(rig: Rig) -> None:
    step = Kill(container_id="c", name="n", app_id=APP, service_name="other", commit=COMMIT)
    run(rig.executor.run(step))
    assert rig.log == ["Killing service 'other'", "Killed service 'other'"]


# -- images --------------------------------------------------------------------------------------

def test_fetch_reports_progress_and_records_the_image(rig: Rig) -> None:
    step = Fetch(image=IMAGE, app_id=APP, service_name=SERVICE, commit=COMMIT)
    run(rig.executor.run(step))
    assert rig.log == [f"Downloading image '{IMAGE}'", f"Downloaded image '{IMAGE}'"]
    assert rig.progress == [("Downloading", 0), ("Downloading", 50), ("Downloading", 100),
                            ("Downloaded", None)]
    record = rig.store.images[IMAGE]
    assert (record.docker_image_id, record.app_id, record.service_name, record.commit,
            record.status) == ("sha256:img", APP, SERVICE, COMMIT, "Downloaded")
    assert rig.phase() == Phase.DOWNLOADED


def test_a_failed_fetch_forgets_the_download(rig: Rig) -> None:
    rig.engine.fail["pull"] = EngineError("pull x: manifest unknown")
    with pytest.raises(StepFailed):
        run(rig.executor.run(Fetch(image=IMAGE, app_id=APP, service_name=SERVICE,
                                   commit=COMMIT)))
    assert rig.log[-1] == f"Failed to download image '{IMAGE}' due to 'pull x: manifest unknown'"
    assert rig.progress[-1] == ("Failed", None)
    assert rig.phase() is None and IMAGE not in rig.store.images


def test_a_cancelled_fetch_is_journalled_as_cancelled(rig: Rig) -> None:
    async def scenario() -> None:
        rig.engine.gate = asyncio.Event()
        task = asyncio.create_task(rig.executor.run(
            Fetch(image=IMAGE, app_id=APP, service_name=SERVICE, commit=COMMIT)))
        await rig.engine.pulling.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert rig.store.outcomes() == [("fetch", APP, SERVICE, "cancelled")]
    assert rig.phase() is None


def test_remove_image(rig: Rig) -> None:
    rig.store.images[IMAGE] = cast(ImageRecord, object())
    run(rig.executor.run(RemoveImage(image_id="sha256:img", name=IMAGE)))
    assert rig.engine.calls == [("remove_image", "sha256:img")]
    assert rig.log == [f"Deleting image '{IMAGE}'", f"Deleted image '{IMAGE}'"]
    assert IMAGE not in rig.store.images


# -- volumes, commits, batches -------------------------------------------------------------------

def test_a_volume_that_cannot_go_is_logged_not_raised(rig: Rig) -> None:
    rig.engine.fail["remove_volume"] = EngineConflict("remove volume 1_data: in use")
    run(rig.executor.run(RemoveVolume(name="1_data", app_id=APP)))
    assert rig.log == ["Removing volume '1_data'",
                       "Error removing volume '1_data': remove volume 1_data: in use"]
    run(rig.executor.run(CreateVolume(spec=VolumeSpec("1_data", "local", {}, {}, "h"))))
    assert rig.log[-1] == "Creating volume '1_data'"


def test_update_commit_and_noop(rig: Rig) -> None:
    run(rig.executor.run(UpdateCommit(app_id=APP, commit=COMMIT)))
    run(rig.executor.run(Noop(reason="waiting")))
    assert rig.store.commits == {APP: COMMIT}
    assert rig.store.outcomes() == [("updateCommit", APP, None, "done")]  # noop: no journal


def test_a_crash_in_a_step_fails_the_step_not_the_loop(rig: Rig) -> None:
    rig.engine.fail["stop"] = RuntimeError("bug")
    with pytest.raises(StepFailed) as failed:
        run(rig.executor.run(kill_step()))
    assert isinstance(failed.value.cause, RuntimeError)
    assert rig.store.outcomes() == [("kill", APP, SERVICE, "crashed: RuntimeError('bug')")]


def test_a_batch_runs_every_step_and_a_locked_app_wins(rig: Rig, tmp_path: Path) -> None:
    user_lock = tmp_path / "services" / str(APP) / "two" / "updates.lock"
    user_lock.parent.mkdir(parents=True)
    user_lock.write_text("")
    rig.engine.fail["stop"] = EngineError("stop old-id: boom")
    steps: tuple[Step, ...] = (kill_step(), TakeLock(app_id=APP, services=("one", "two")),
                               UpdateCommit(app_id=2, commit="x"))
    with pytest.raises(UpdatesLocked) as locked:
        run(rig.executor.apply(steps))
    assert str(locked.value) == f"Lockfile exists for {{ appId: {APP}, service: two }}"
    assert rig.store.commits == {2: "x"}  # the others still ran
    assert sorted(o[3] for o in rig.store.outcomes()) == [
        "done", "failed: stop old-id: boom",
        f"locked: Lockfile exists for {{ appId: {APP}, service: two }}"]

    rig.engine.fail.clear()
    rig.engine.fail["remove"] = EngineError("remove: one")
    rig.engine.fail["start"] = EngineError("start: two")
    with pytest.raises(StepFailed):  # no lock in play: a failure is raised
        run(rig.executor.apply((kill_step(), Start(spec=spec(), commit=COMMIT))))


# -- locks ---------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="lock ownership needs root (chown)")
def test_take_and_release_lock(rig: Rig, tmp_path: Path) -> None:
    run(rig.executor.run(TakeLock(app_id=APP, services=("one", "two"))))
    held = sorted(p for p in tmp_path.rglob("*") if p.name in LOCK_NAMES)
    assert len(held) == 4 and all(p.lstat().st_uid == SUPERVISOR_UID for p in held)
    assert rig.locks.held_apps() == frozenset({APP})
    run(rig.executor.run(ReleaseLock(app_id=APP)))
    assert [p for p in tmp_path.rglob("*") if p.name in LOCK_NAMES] == []
    assert rig.log == ["Taking update locks", "Releasing update locks"]  # engine.md §17

    user_lock = tmp_path / "services" / str(APP) / "two" / "resin-updates.lock"
    user_lock.write_text("")
    run(rig.executor.run(TakeLock(app_id=APP, services=("one", "two"), force=True)))
    assert user_lock.lstat().st_uid == SUPERVISOR_UID


# -- hand-over -----------------------------------------------------------------------------------

def test_handover_kills_the_old_container_once_the_new_one_signals(
        rig: Rig, tmp_path: Path) -> None:
    svc_dir = tmp_path / "services" / str(APP) / SERVICE
    svc_dir.mkdir(parents=True)
    (svc_dir / "handover-complete").write_text("")  # stale: cleared before the new one starts
    stale_at_start: list[bool] = []
    rig.engine.on_start = lambda cid: stale_at_start.append(
        (svc_dir / "handover-complete").exists())
    old_name = f"{SERVICE}_11_1_oldcommit"
    rig.lifecycles.ensure((APP, SERVICE, "oldcommit"), Phase.RUNNING)
    step = Handover(container_id="old-id", name=old_name, spec=spec(), commit=COMMIT,
                    timeout_ms=600_000)  # far beyond any wait: only the signal ends it

    async def scenario() -> list[tuple[Any, ...]]:
        task = asyncio.create_task(rig.executor.run(step))
        await rig.engine.started.wait()
        seen = list(rig.engine.calls)  # the new one runs: the old one must still be there
        (svc_dir / "resin-kill-me").write_text("")  # the legacy name counts too
        await task
        return seen

    before_signal = run(scenario())
    assert stale_at_start == [False]
    assert ("stop", "old-id") not in before_signal
    assert rig.engine.calls == [
        ("clear_restart_policy", "old-id"), ("rename", "old-id", "old_" + old_name),
        ("create", spec().name), ("start", "new-id"), ("stop", "old-id"),
        ("remove", "old-id", True)]
    assert rig.log == [f"Killing service 'main {IMAGE}'"]
    assert sorted(p.name for p in svc_dir.iterdir()) == []  # signal files cleared
    assert rig.phase() == Phase.RUNNING
    assert rig.phase((APP, SERVICE, "oldcommit")) == Phase.EXITED
