"""CloudSync against a fake runtime: targets in, re-applies, failure budget, the report."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from supervisor.cloud.sync import CloudSync
from supervisor.configjson import ConfigJson
from supervisor.errors import TargetInvalid
from supervisor.model.current import DeviceView, ServiceView, Snapshot
from supervisor.model.target import TargetState, parse_target
from supervisor.reconciler import LoopState
from supervisor.store import AsyncStore

UUID = "dev1"
APP = "a" * 32
COMMIT = "c" * 32


def _body(config: dict[str, str] | None = None, image: str = "reg/app:1") -> dict[str, Any]:
    return {UUID: {"name": "n", "config": config or {}, "apps": {APP: {
        "id": 7, "name": "app", "releases": {COMMIT: {"id": 1, "services": {"main": {
            "id": 1, "image_id": 1, "image": image, "environment": {}, "labels": {}}}}}}}}}


@dataclass
class FakeSettings:
    config_json: ConfigJson
    data_dir: Path
    poll_interval_ms: int = 900_000
    device_type: str | None = "generic"


@dataclass
class FakeReconciler:
    state: LoopState = field(default_factory=LoopState)
    calls: list[tuple[str, bool]] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def mark_dirty(self, *, force: bool = False) -> None:
        self.calls.append(("dirty", force))

    def target_changed(self, *, force: bool = False) -> None:
        self.calls.append(("changed", force))

    def hold(self, reason: str) -> None:
        self.held.append(reason)


class FakeRuntime:
    def __init__(self, settings: FakeSettings, store: AsyncStore) -> None:
        self.settings = settings
        self.store = store
        self.reconciler = FakeReconciler()
        self.target: TargetState | None = None
        self.local_mode = False
        self.logs: list[str] = []
        self.set_targets: list[tuple[TargetState, str, bool]] = []
        self.snapshot = Snapshot(seq=1, device=DeviceView(
            uuid=UUID, name="n", api_port=48484, os_version="os", supervisor_version="19.0.5",
            device_type="generic", arch="amd64"))

    def log(self, message: str) -> None:
        self.logs.append(message)

    async def set_target(self, target: TargetState, *, source: str, force: bool = False) -> None:
        self.set_targets.append((target, source, force))
        self.target = target
        await self.store.save_target("cloud", {"parsed": True})  # as Runtime does: no ETag


def _sync(tmp_path: Path, store: AsyncStore) -> tuple[CloudSync, FakeRuntime]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"uuid": UUID, "apiEndpoint": "http://127.0.0.1:9"}))
    runtime = FakeRuntime(FakeSettings(ConfigJson(path), tmp_path), store)
    return CloudSync(cast(Any, runtime)), runtime


def test_a_new_target_is_applied_then_cached_with_its_etag(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            sync, runtime = _sync(tmp_path, store)
            await sync.new_target(_body(), '"e1"', force=True)
            target, source, force = runtime.set_targets[0]
            assert (target.apps[APP].release.commit, source, force) == (  # type: ignore[union-attr]
                COMMIT, "cloud", True)
            assert await store.load_target("cloud") == _body()
            assert await store.target_etag("cloud") == '"e1"'

            with pytest.raises(TargetInvalid):
                await sync.new_target({"someone-else": {}}, '"e2"', force=False)
            assert runtime.logs[-1].startswith("Could not move to new release: ")
            assert len(runtime.set_targets) == 1
            assert await store.target_etag("cloud") == '"e1"'

    asyncio.run(scenario())


def test_reapply_and_the_poll_interval(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            sync, runtime = _sync(tmp_path, store)
            await sync.reapply(force=True, cancel=True)
            await sync.reapply(force=False, cancel=False)
            assert runtime.reconciler.calls == [("changed", True), ("dirty", False)]
            assert sync.poll_interval_ms() == 900_000
            assert sync.instant_updates()
            runtime.target = parse_target(_body({
                "RESIN_SUPERVISOR_POLL_INTERVAL": "120000",
                "BALENA_SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false"}), device_uuid=UUID)
            assert sync.poll_interval_ms() == 120_000
            assert not sync.instant_updates()

    asyncio.run(scenario())


def test_repeated_apply_failures_exhaust_the_budget_and_show_in_the_report(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            key = await store.global_api_key()
            sync, runtime = _sync(tmp_path, store)
            runtime.target = parse_target(_body({"SUPERVISOR_UPDATE_FAILURE_LIMIT": "3"}),
                                          device_uuid=UUID)
            runtime.snapshot = Snapshot(
                seq=2, device=runtime.snapshot.device, target=runtime.target,
                services=(ServiceView(app_id=7, app_uuid=APP, app_name="app",
                                      service_name="main", service_id=1, image_id=1,
                                      release_id=1, commit=COMMIT, image="reg/app:1",
                                      status="Downloaded"),))
            state = runtime.reconciler.state

            ticks = [0]
            ticked = asyncio.Event()

            async def tick() -> None:
                ticks[0] += 1
                ticked.set()
                await asyncio.sleep(0.001)

            async def a_whole_round() -> None:
                # two of the watcher's sleeps: it has looked once at everything set before
                until = ticks[0] + 2
                while ticks[0] < until:
                    ticked.clear()
                    await ticked.wait()

            sync._sleep = lambda seconds: tick()
            watcher = asyncio.create_task(sync._watch())
            for n in range(1, 4):
                state.failures, state.last_error = n, f"pull failed {n}"
                await asyncio.wait_for(a_whole_round(), 30)
            assert sync.budget.exhausted
            assert runtime.reconciler.held == ["pull failed 3"]
            report = await sync.collect()
            assert report["status"] == "Update failed: pull failed 3"
            assert report["api_secret"] == key
            assert report["apps"][APP]["releases"][COMMIT]["update_status"] == "aborted"

            sync.poll_now(force=True)  # a forced update gives the target another chance

            async def reset() -> None:
                # the reset runs in a task of its own: poll for it
                while sync.budget.exhausted:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)

            await asyncio.wait_for(reset(), 30)
            report = await sync.collect()
            assert report["status"] == "Idle"
            assert report["apps"][APP]["releases"][COMMIT]["update_status"] == "downloaded"
            watcher.cancel()

    asyncio.run(scenario())


def test_the_report_names_only_cloud_releases_and_no_apps_in_local_mode(
        tmp_path: Path) -> None:
    local_commit = "10ca1" * 6

    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            sync, runtime = _sync(tmp_path, store)
            runtime.target = parse_target(_body(), device_uuid=UUID)

            def running(*commits: str) -> tuple[ServiceView, ...]:
                return tuple(ServiceView(app_id=7, app_uuid=APP, app_name="app",
                                         service_name=f"s{n}", service_id=1, image_id=1,
                                         release_id=1, commit=c, image="reg/app:1",
                                         status="Running") for n, c in enumerate(commits))

            # left over from local mode, same app id: not a release the cloud knows
            runtime.snapshot = Snapshot(seq=2, device=runtime.snapshot.device,
                                        target=runtime.target,
                                        services=running(local_commit, COMMIT),
                                        commits={7: local_commit})
            report = await sync.collect()
            assert list(report["apps"][APP]["releases"]) == [COMMIT]
            assert "release_uuid" not in report["apps"][APP]
            # a release the cloud took in an earlier report stays reportable
            old = "0d" * 16
            sync.reporter.last = {"apps": {APP: {"release_uuid": old}}}
            runtime.snapshot = Snapshot(seq=3, device=runtime.snapshot.device,
                                        target=runtime.target, services=running(old, COMMIT),
                                        commits={7: old})
            report = await sync.collect()
            assert sorted(report["apps"][APP]["releases"]) == sorted([old, COMMIT])
            assert report["apps"][APP]["release_uuid"] == old

            runtime.local_mode = True
            report = await sync.collect()
            assert "apps" not in report and "logs_channel" not in report
            assert report["status"] == "Idle" and "ip_address" in report

    asyncio.run(scenario())
