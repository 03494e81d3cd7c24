"""API actions without Docker: the pure helpers, and `RuntimeActions` on a runtime whose
store, locks, host backend and files are real (a temp dir) but whose loop is a recorder.

Container work (restart, purge, service actions) against the engine is in
tests/integration/test_actions.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from supervisor.actions.apps import pick_container, target_service
from supervisor.actions.gate import ActionGate, lock_dirs
from supervisor.actions.volumes import orphan_volumes
from supervisor.api.actions import RuntimeActions
from supervisor.api.local_target import camel_case, local_target_state
from supervisor.device_flags import instant_updates, lock_override
from supervisor.errors import BadRequest, NotFound, SupervisorError, UpdatesLocked
from supervisor.host.actions import DryRunHostActions
from supervisor.host.firmware import extra_firmware_volume
from supervisor.journal import JournalParams, open_journal
from supervisor.model.current import ContainerInfo, Current, VolumeInfo
from supervisor.model.intents import IntentView, Pending, RestartApp, Stage, not_recreated
from supervisor.model.spec import DeviceContext, container_spec
from supervisor.model.steps import Kill, Start, TakeLock
from supervisor.model.target import TargetState, parse_local_target
from supervisor.planner import PlanContext, plan
from supervisor.reconciler import LoopState
from supervisor.runtime import Runtime
from supervisor.settings import load_settings
from supervisor.store import AsyncStore
from tests.spec_texts import APP_NOT_FOUND, SERVICE_NOT_FOUND, TARGET_SERVICE_NOT_FOUND

UUID = "d9f3c0a1b2c3d4e5f60718293a4b5c6d"
IMAGE = "registry.local/app/main:latest"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def target(services: dict[str, dict[str, Any]], *, app_id: int = 1, config: dict[str, str]
           | None = None, volumes: dict[str, Any] | None = None) -> TargetState:
    svcs = {str(i): {"serviceName": name, "imageId": 10 + i, "image": IMAGE,
                     "environment": {}, "labels": {}, **extra}
            for i, (name, extra) in enumerate(services.items(), start=1)}
    return parse_local_target({"local": {"name": "dev", "config": config or {}, "apps": {
        str(app_id): {"name": "app", "commit": "c0ffee", "releaseId": 7, "services": svcs,
                      "volumes": volumes or {}, "networks": {}}}}}, device_uuid=UUID)


def container(name: str, *, cid: str, app_id: int = 1, image_id: int = 11, running: bool = True,
              created: str = "2024-01-01T00:00:00Z", volumes: tuple[str, ...] = ()
              ) -> ContainerInfo:
    return ContainerInfo(
        id=cid, name=f"{name}_{image_id}_7_c0ffee", app_id=app_id, app_uuid=str(app_id),
        service_name=name, service_id=1, image_id=image_id, release_id=7, commit="c0ffee",
        state="running" if running else "exited", running=running, image="sha256:img",
        image_name=IMAGE, created=created, volumes=volumes,
    )


# -- pure helpers ---------------------------------------------------------------------------------


def test_config_flag_spellings_and_defaults() -> None:
    # the parsing itself is tested in test_config_vars.py
    assert lock_override(target({"main": {}}, config={"RESIN_SUPERVISOR_OVERRIDE_LOCK": "1"}))
    # "yes" is not one of upstream's booleans: the default (no override), as the loop has it
    assert not lock_override(target({"main": {}}, config={"SUPERVISOR_OVERRIDE_LOCK": "yes"}))
    assert lock_override(target({"main": {}}, config={"RESIN_OVERRIDE_LOCK": "true"}))
    assert not lock_override(target({"main": {}}))
    assert not lock_override(None)
    assert instant_updates(None) and instant_updates(target({"main": {}}))
    assert not instant_updates(target({"main": {}}, config={
        "BALENA_SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false"}))


def test_pick_container_follows_upstream() -> None:
    one = container("one", cid="a", image_id=11)
    two = container("two", cid="b", image_id=12)
    with pytest.raises(NotFound) as none:
        pick_container([], "one", None)
    assert str(none.value) == APP_NOT_FOUND
    # a single container is the target whatever the name says (upstream quirk)
    assert pick_container([one], "other", 99) is one
    assert pick_container([one, two], "two", None) is two
    assert pick_container([one, two], None, 11) is one
    assert pick_container([one, two], "nope", 11) is one  # imageId OR serviceName
    with pytest.raises(NotFound) as missing:
        pick_container([one, two], "nope", 99)
    assert str(missing.value) == SERVICE_NOT_FOUND
    newer = container("two", cid="c", image_id=12, created="2024-02-01T00:00:00Z")
    assert pick_container([one, two, newer], "two", None) is newer


def test_target_service_lookup() -> None:
    tgt = target({"one": {}, "two": {}})
    app, svc = target_service(tgt, 1, container("two", cid="b", image_id=12))
    assert (app.app_id, svc.name) == (1, "two")
    # found by imageId when the name changed
    assert target_service(tgt, 1, container("renamed", cid="x", image_id=11))[1].name == "one"
    with pytest.raises(NotFound) as gone:
        target_service(tgt, 1, container("gone", cid="x", image_id=99))
    assert str(gone.value) == TARGET_SERVICE_NOT_FOUND
    with pytest.raises(SupervisorError, match="not in the target state"):
        target_service(tgt, 2, container("one", cid="x", app_id=2))


def test_extra_firmware_volume_from_config_json_os() -> None:
    assert extra_firmware_volume({"kernel": {"extraFirmwareVol": "extra-firmware"}}) == \
        "extra-firmware"
    assert extra_firmware_volume({}) is None
    assert extra_firmware_volume({"kernel": "x"}) is None


def _ctx(**kw: Any) -> PlanContext:
    return PlanContext(device=DeviceContext(device_uuid=UUID), image_ids={IMAGE: "sha256:img"},
                       **kw)


def test_a_held_app_gets_its_kills_and_nothing_created() -> None:
    # host networking: no bridge to create first, so the real target plans starts at once
    tgt = target({"one": {"network_mode": "host"}, "two": {"network_mode": "host"}})
    real = plan(Current(), tgt, _ctx(locked_apps=frozenset({1})))
    assert {type(s) for s in real} == {Start}
    restart = RestartApp(1, frozenset({"a"}))
    held = IntentView((Pending(7, restart),))
    # one container left to kill: the kill, and none of the app's creates
    current = Current(containers=(container("one", cid="a"),))
    steps = plan(current, tgt, _ctx(locked_apps=frozenset({1}), intents=held))
    assert [type(s) for s in steps] == [Kill] and steps[0].intent == 7  # type: ignore[union-attr]
    # the lock first, taken for the intent with its force; under another operation's lock
    # (a reboot) the kill goes ahead without one
    forced = IntentView((Pending(7, RestartApp(1, frozenset({"a"}), force=True)),))
    (take,) = plan(current, tgt, _ctx(intents=forced))
    assert take == TakeLock(app_id=1, services=("one", "two"), force=True, intent=7)
    under_action = plan(current, tgt, _ctx(foreign_locked=frozenset({1}), intents=held))
    assert [type(s) for s in under_action] == [Kill]
    # the kills done, nothing is created while the hold lasts (a purge's volumes go first)
    assert plan(Current(), tgt, _ctx(locked_apps=frozenset({1}), intents=held)) == ()
    waiting = IntentView((Pending(7, restart, Stage.WAIT),))
    assert {type(s) for s in plan(Current(), tgt, _ctx(locked_apps=frozenset({1}),
                                                       intents=waiting))} == {Start}


def test_not_recreated_waits_for_new_running_containers() -> None:
    tgt = target({"one": {}, "two": {"running": False}})

    def snap(*containers: ContainerInfo) -> Current:
        return Current(containers=containers)

    old = {"a", "b"}
    assert not_recreated(snap(container("one", cid="a"), container("two", cid="b")), tgt, 1,
                         old) == ["one", "two"]
    stopped_new = container("one", cid="c", running=False)
    created_two = container("two", cid="d", image_id=12, running=False)
    # "two" does not want to run: a new created container is enough
    assert not_recreated(snap(stopped_new, created_two), tgt, 1, old) == ["one"]
    assert not_recreated(snap(container("one", cid="c"), created_two), tgt, 1, old) == []
    assert not_recreated(snap(), tgt, 1, old, only={"two"}) == ["two"]
    assert not_recreated(snap(), tgt, 5, old) == []  # not in the target: nothing to wait for


def test_orphan_volumes_scoped_to_the_callers_apps() -> None:
    tgt = target({"one": {"volumes": ["data:/data"]}}, volumes={"data": {}})
    current = Current(
        containers=(container("one", cid="a", volumes=("1_used",)),),
        volumes=tuple(VolumeInfo(name=n, app_id=int(n.split("_")[0]) if n[0].isdigit() else 0,
                                 app_uuid=None)
                      for n in ("1_data", "1_used", "1_old", "2_old", "extra2_x")),
    )
    assert orphan_volumes(current, tgt, None) == ["1_old", "2_old"]
    assert orphan_volumes(current, tgt, frozenset({2})) == ["2_old"]
    assert orphan_volumes(current, None, frozenset({1})) == ["1_data", "1_old"]


def test_local_target_state_is_upstreams_internal_shape() -> None:
    tgt = target({"main": {"command": ["sleep", "1"], "network_mode": "host",
                           "depends_on": ["db"]}, "db": {}},
                 config={"RESIN_HOST_CONFIG_gpu_mem": "16", "SUPERVISOR_POLL_INTERVAL": "1"},
                 volumes={"data": {}})
    state = local_target_state(tgt, device_name="x", source="local",
                               image_ids={IMAGE: "sha256:abc"})
    local = state["local"]
    assert local["name"] == "dev"
    # prefixes stripped, every default filled (api.md §4.6)
    assert local["config"]["HOST_CONFIG_gpu_mem"] == "16"
    assert local["config"]["SUPERVISOR_POLL_INTERVAL"] == "1"
    assert local["config"]["SUPERVISOR_VPN_CONTROL"] == "true"
    assert local["config"]["SUPERVISOR_DELTA_VERSION"] == "2"
    assert local["config"]["HOST_FIREWALL_MODE"] == "off"
    assert "RESIN_HOST_CONFIG_gpu_mem" not in local["config"]
    app = local["apps"]["1"]
    assert (app["appId"], app["appUuid"], app["appName"], app["commit"], app["source"]) == \
        (1, "1", "app", "c0ffee", "local")
    assert app["isHost"] is False and app["isTargetState"] is True
    assert [s["serviceName"] for s in app["services"]] == ["main", "db"]
    main = app["services"][0]
    assert main["imageId"] == 11 and main["releaseId"] == 7 and main["dockerImageId"] == \
        "sha256:abc"
    assert main["dependsOn"] == ["db"]
    assert main["config"]["networkMode"] == "host" and main["config"]["command"] == ["sleep", "1"]
    assert [n["name"] for n in app["networks"]] == ["default"]
    assert [v["name"] for v in app["volumes"]] == ["data"]
    json.dumps(state)  # serialisable as is
    assert local_target_state(None, device_name="x", source="local", image_ids={}) == \
        {"local": {"name": "x", "config": {}, "apps": {}}}
    assert camel_case("stop_grace_period") == "stopGracePeriod"


def test_lock_dirs_lists_real_service_dirs(tmp_path: Path) -> None:
    root = tmp_path / "services"
    (root / "1" / "main").mkdir(parents=True)
    (root / "1" / "db").mkdir()
    (root / "2").mkdir()
    (root / "junk" / "x").mkdir(parents=True)
    (root / "3").mkdir()
    (root / "3" / "link").symlink_to(root / "1" / "main")
    assert lock_dirs(root) == {1: {"main", "db"}}
    assert lock_dirs(tmp_path / "missing") == {}


# -- journal -------------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "journalctl"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_journal_streams_stdout_with_one_argv_entry_per_option(tmp_path: Path) -> None:
    exe = _script(tmp_path, 'for a in "$@"; do echo "[$a]"; done\n')
    params = JournalParams(all=True, count=5, unit="a b.service", since="1 hour ago")

    async def read() -> bytes:
        stream = await open_journal(params, executable=exe)
        return b"".join([chunk async for chunk in stream])

    assert run(read()).decode().splitlines() == [
        "[-a]", "[-n]", "[5]", "[-u]", "[a b.service]", "[-o]", "[short]", "[-S]",
        "[1 hour ago]"]


def test_journal_is_killed_when_the_client_goes(tmp_path: Path) -> None:
    exe = _script(tmp_path, "echo started\nexec sleep 600\n")

    async def scenario() -> int | None:
        stream = await open_journal(JournalParams(follow=True), executable=exe)
        assert await stream.__anext__() == b"started\n"
        reader = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # one step: the reader runs up to its wait for the next line
        reader.cancel()  # what Starlette does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await reader
        return stream.returncode

    assert run(scenario()) == -9


def test_journal_missing_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="journalctl"):
        run(open_journal(JournalParams(), executable=str(tmp_path / "nope")))


# -- RuntimeActions on a runtime without Docker ----------------------------------------------------


class FakeLoop:
    """The reconciler as the actions see it: state, and the triggers they pull."""

    def __init__(self) -> None:
        self.state = LoopState()
        self.current: Current | None = Current()
        self.calls: list[tuple[str, bool]] = []

    def mark_dirty(self, *, force: bool = False) -> None:
        self.calls.append(("mark_dirty", force))

    def target_changed(self, *, force: bool = False) -> None:
        self.calls.append(("target_changed", force))

    def hold(self, reason: str) -> None:
        self.state.held = reason


class Device:
    def __init__(self, rt: Runtime, loop: FakeLoop, host_calls: list[tuple[str, Any]]) -> None:
        self.rt = rt
        self.loop = loop
        self.host_calls = host_calls
        self.actions = RuntimeActions(rt)
        self.actions.device.power_delay = 0.01
        self.actions.device.host_root = rt.settings.data_dir / "no-host-root"


async def make_device(tmp_path: Path, tgt: TargetState | None = None) -> Device:
    settings = load_settings({
        "data_dir": str(tmp_path / "data"), "boot_dir": str(tmp_path / "boot"),
        "state_dir": str(tmp_path / "state"), "locks_dir": str(tmp_path / "locks"),
        "listen": "127.0.0.1:48484", "host_actions": "dry-run"}, {})
    for path in (settings.data_dir, settings.state_dir, settings.boot_dir):
        path.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings)
    rt.store = await AsyncStore.open(settings.db_path)
    host_calls: list[tuple[str, Any]] = []

    async def record(action: str, details: dict[str, Any]) -> None:
        host_calls.append((action, details))

    rt.host = DryRunHostActions(record)
    loop = FakeLoop()
    rt.reconciler = loop  # type: ignore[assignment]
    rt._device = rt.device_view()
    rt.publish()
    if tgt is not None:
        await rt.set_target(tgt, source="local")
    loop.calls.clear()
    return Device(rt, loop, host_calls)


def user_lock(dev: Device, app_id: int, service: str) -> Path:
    path = dev.rt.settings.locks_dir / "services" / str(app_id) / service / "updates.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    assert os.stat(path).st_uid != 65534
    return path


def test_reboot_refused_during_host_os_update_unless_forced(tmp_path: Path) -> None:
    async def scenario() -> None:
        dev = await make_device(tmp_path)
        (dev.rt.settings.state_dir / "rollback-altboot-breadcrumb").write_text("")
        with pytest.raises(UpdatesLocked) as refused:
            await dev.actions.reboot(False)
        assert str(refused.value) == "Waiting for Host OS update to finish"
        await dev.actions.shutdown(True)
        await dev.actions.device.close()
        assert [a for a, _ in dev.host_calls] == ["shutdown"]
        assert ("Shutting down" in [m for _, m in dev.rt.system_log])
        await dev.rt.store.close()

    run(scenario())


def test_reboot_takes_every_apps_locks_and_releases_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        dev = await make_device(tmp_path)
        lock = user_lock(dev, 5, "db")
        (lock.parent.parent / "web").mkdir()
        with pytest.raises(UpdatesLocked) as refused:
            await dev.actions.reboot(False)
        assert str(refused.value) == "Lockfile exists for { appId: 5, service: db }"
        assert dev.host_calls == []
        # all or nothing: no supervisor lock was left in the other service's dir
        assert sorted(p.name for p in lock.parent.parent.rglob("*.lock")) == ["updates.lock"]

        await dev.actions.reboot(True)
        assert not lock.exists()  # force took the user's lock over
        await dev.actions.device.close()
        assert [a for a, _ in dev.host_calls] == ["reboot"]
        assert list(dev.rt.settings.locks_dir.rglob("*.lock")) == []  # released
        assert dev.rt.locks.held_apps() == frozenset()
        await dev.rt.store.close()

    run(scenario())


def test_lock_override_config_forces_reboot(tmp_path: Path) -> None:
    async def scenario() -> None:
        tgt = target({"main": {}}, config={"BALENA_SUPERVISOR_OVERRIDE_LOCK": "1"})
        dev = await make_device(tmp_path, tgt)
        lock = user_lock(dev, 1, "main")
        await dev.actions.reboot(False)
        await dev.actions.device.close()
        assert not lock.exists() and [a for a, _ in dev.host_calls] == ["reboot"]
        await dev.rt.store.close()

    run(scenario())


def test_host_config_patch_and_get(tmp_path: Path) -> None:
    async def scenario() -> None:
        dev = await make_device(tmp_path)
        settings = dev.rt.settings
        got = await dev.actions.get_host_config()
        assert got == {"network": {"hostname": settings.uuid[:7]}}

        await dev.actions.patch_host_config({"network": {"hostname": "newname", "proxy": {
            "type": "socks5", "ip": "proxy.local", "port": 1080,
            "noProxy": ["10.0.0.0/8"]}}}, False)
        assert json.loads(settings.config_path.read_text())["hostname"] == "newname"
        conf = settings.boot_dir / "system-proxy" / "redsocks.conf"
        assert "ip = proxy.local;" in conf.read_text()
        assert sorted(d["unit"] for a, d in dev.host_calls if a == "restart-service") == \
            ["balena-proxy-config.service", "redsocks.service"]
        got = await dev.actions.get_host_config()
        assert got["network"]["hostname"] == "newname"
        assert got["network"]["proxy"] == {"type": "socks5", "ip": "proxy.local", "port": 1080,
                                           "noProxy": ["10.0.0.0/8"]}
        host_root = tmp_path / "root"
        (host_root / "etc").mkdir(parents=True)
        (host_root / "etc" / "hostname").write_text("from-host\n")
        dev.actions.device.host_root = host_root
        assert (await dev.actions.get_host_config())["network"]["hostname"] == "from-host"

        with pytest.raises(BadRequest) as bad:
            await dev.actions.patch_host_config({"network": {"hostname": 5}}, False)
        assert str(bad.value).startswith("Could not parse host config input to a valid format:")

        lock = user_lock(dev, 1, "main")
        with pytest.raises(UpdatesLocked) as refused:
            await dev.actions.patch_host_config({"network": {"hostname": "locked"}}, False)
        assert str(refused.value) == "Lockfile exists for { appId: 1, service: main }"
        assert json.loads(settings.config_path.read_text())["hostname"] == "newname"
        # `force` at the top level of the body counts too
        await dev.actions.patch_host_config({"network": {"hostname": "forced"}, "force": True},
                                            False)
        assert json.loads(settings.config_path.read_text())["hostname"] == "forced"
        assert not lock.exists()
        await dev.rt.store.close()

    run(scenario())


def test_regenerated_scoped_key_changes_the_containers_config(tmp_path: Path) -> None:
    async def scenario() -> None:
        tgt = target({"main": {"labels": {"io.balena.features.supervisor-api": "1"}}})
        dev = await make_device(tmp_path, tgt)
        app = tgt.apps["1"]
        svc = app.release.services["main"]  # type: ignore[union-attr]

        def spec_env() -> tuple[str, list[str]]:
            spec = container_spec(app, svc, dev.rt.device_context(), image_ref=IMAGE)
            return spec.config_hash, spec.body["Env"]

        old_key = dev.rt.device_context().supervisor_api_keys[(1, "main")]
        old_hash, old_env = spec_env()
        assert f"BALENA_SUPERVISOR_API_KEY={old_key}" in old_env

        new_key = await dev.actions.regenerate_api_key(old_key)
        assert new_key != old_key and len(new_key) == 32
        assert dev.rt.store.lookup_api_key_cached(old_key) is None
        assert dev.rt.store.lookup_api_key_cached(new_key) is not None
        new_hash, new_env = spec_env()
        assert f"BALENA_SUPERVISOR_API_KEY={new_key}" in new_env
        assert new_hash != old_hash  # so the next apply recreates the container

        glob = await dev.rt.store.global_api_key()
        assert await dev.actions.regenerate_api_key(glob) != glob
        with pytest.raises(NotFound):
            await dev.actions.regenerate_api_key("not-a-key")
        await dev.rt.store.close()

    run(scenario())


def test_update_triggers_follow_force_cancel_and_instant_updates(tmp_path: Path) -> None:
    async def scenario() -> None:
        dev = await make_device(tmp_path, target({"main": {}}))
        assert await dev.actions.update(False, False) is True
        assert await dev.actions.update(True, True) is True
        assert dev.loop.calls == [("mark_dirty", False), ("target_changed", True)]
        await dev.rt.set_target(target({"main": {}}, config={
            "SUPERVISOR_INSTANT_UPDATE_TRIGGER": "0"}), source="local")
        dev.loop.calls.clear()
        assert await dev.actions.update(False, True) is False
        assert dev.loop.calls == []
        assert await dev.actions.update(True, False) is True
        assert dev.loop.calls == [("mark_dirty", True)]
        state = await dev.actions.get_local_target()
        assert [s["serviceName"] for s in state["local"]["apps"]["1"]["services"]] == ["main"]
        await dev.rt.store.close()

    run(scenario())


def test_gate_serialises_actions_per_app() -> None:
    async def scenario() -> None:
        gate = ActionGate(wait=0.1)
        async with gate.hold([1]):
            assert gate.busy(1)
            with pytest.raises(UpdatesLocked) as held:
                async with gate.hold([2, 1]):
                    pass
            assert str(held.value) == \
                "Locks for app 1 are being held by another supervisor operation"
            assert not gate.busy(2)  # what the failed hold took was given back
        async with gate.hold([1]):  # free again
            assert gate.busy(1)

    run(scenario())


def test_journal_logs_route_streams_the_real_process(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from supervisor.api.actions import RuntimeApi
    from supervisor.api.app import build_app

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir, 'echo "journal $*"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    async def scenario() -> None:
        dev = await make_device(tmp_path)
        transport = httpx.ASGITransport(app=build_app(RuntimeApi(dev.rt)))
        async with httpx.AsyncClient(transport=transport, base_url="http://device") as http:
            res = await http.post("/v2/journal-logs", json={"count": 3, "unit": "x"})
        assert res.status_code == 200
        assert res.text == "journal -n 3 -u x -o short\n"
        await dev.rt.store.close()

    run(scenario())
