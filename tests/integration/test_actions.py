"""API actions (restart, purge, service stop/start/restart, locks) on the real engine.

Each test starts a real `Runtime` in-process (local mode, dry-run host actions, its own data,
state and lock dirs), follows Docker events like `Runtime.run()` does, runs the reconciler
loop as a task, applies a two-service target from the local registry's busybox and calls the
actions. What they did is checked in Docker itself, not in the supervisor's snapshot.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import httpx
import pytest

from supervisor.api.actions import RuntimeActions, RuntimeApi
from supervisor.api.app import build_app
from supervisor.errors import BadRequest, NotFound, SupervisorError, UpdatesLocked
from supervisor.runtime import Runtime
from supervisor.settings import load_settings
from tests.spec_texts import SERVICE_NOT_FOUND, V2_SERVICE_ENDPOINT_ERROR

APP = 7301
# A TERM trap so that a stop takes about a second, not Docker's 10 s kill timeout.
CMD = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_target(image: str, commit: str, services: dict[str, dict[str, Any]],
                 volumes: dict[str, Any] | None = None) -> dict[str, Any]:
    svcs = {
        str(index): {"serviceName": name, "imageId": 100 + index, "image": image,
                     "environment": {}, "labels": {}, "command": CMD, **extra}
        for index, (name, extra) in enumerate(services.items(), start=1)
    }
    return {"local": {"name": "actions-test", "config": {}, "apps": {str(APP): {
        "name": "actions", "commit": commit, "releaseId": 1, "services": svcs,
        "volumes": volumes or {}, "networks": {}}}}}


def containers(client: docker.DockerClient) -> dict[str, list[dict[str, Any]]]:
    """This test app's containers by service name, as one Docker listing shows them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in client.api.containers(all=True, filters={"label": f"io.balena.app-id={APP}"}):
        out.setdefault(c["Labels"]["io.balena.service-name"], []).append(c)
    return out


def running_ids(client: docker.DockerClient, *names: str) -> dict[str, str] | None:
    """{service: container id} when each named service has exactly one running container."""
    found = containers(client)
    if all(len(found.get(n, [])) == 1 and found[n][0]["State"] == "running" for n in names):
        return {n: found[n][0]["Id"] for n in names}
    return None


async def until(check: Callable[[], T | None], what: str, limit: float = 60.0) -> T:
    deadline = time.monotonic() + limit
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class Device:
    def __init__(self, runtime: Runtime, actions: RuntimeActions) -> None:
        self.rt = runtime
        self.actions = actions


@asynccontextmanager
async def device(tmp_path: Path, docker_host: str) -> AsyncIterator[Device]:
    settings = load_settings({
        "data_dir": str(tmp_path / "data"), "boot_dir": str(tmp_path / "boot"),
        "state_dir": str(tmp_path / "state"), "locks_dir": str(tmp_path / "locks"),
        "listen": f"127.0.0.1:{_free_port()}", "host_actions": "dry-run",
        "docker_host": docker_host,
    }, {})
    (tmp_path / "boot").mkdir(exist_ok=True)
    runtime = Runtime(settings)
    await runtime.start()
    runtime.engine.start_events(runtime._on_docker_event)  # as Runtime.run() does
    loop_task = asyncio.create_task(runtime.reconciler.run())
    api = RuntimeApi(runtime)
    try:
        yield Device(runtime, api.actions)
    finally:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        await api.actions.device.close()
        runtime.engine.close()
        await runtime.store.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.fixture
def image(base_image: str) -> str:
    return base_image


@pytest.fixture
def commit() -> str:
    return uuid.uuid4().hex[:12]


def test_restart_recreates_every_container_and_errors_are_upstreams(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            await dev.actions.set_local_target(
                local_target(image, commit, {"one": {}, "two": {}}), False)
            before = await until(lambda: running_ids(docker_client, "one", "two"), "app up")

            await dev.actions.restart_app(APP, False)
            # returns only once the app runs again, with new containers for every service
            after = running_ids(docker_client, "one", "two")
            assert after is not None, containers(docker_client)
            assert set(after.values()).isdisjoint(before.values())
            with pytest.raises(docker.errors.NotFound):
                docker_client.containers.get(before["one"])
            # no supervisor lock is left behind
            assert list((tmp_path / "locks").rglob("*updates.lock")) == []

            with pytest.raises(SupervisorError, match="not in the current state"):
                await dev.actions.restart_app(APP + 1, False)
            with pytest.raises(BadRequest) as multi:
                await dev.actions.v1_stop(APP, False)
            assert str(multi.value) == V2_SERVICE_ENDPOINT_ERROR
            with pytest.raises(NotFound) as unknown:
                await dev.actions.service_action("stop", APP, "nope", None, False)
            assert str(unknown.value) == SERVICE_NOT_FOUND
            assert running_ids(docker_client, "one", "two") == after

    run(scenario)


def test_purge_recreates_the_app_with_empty_volumes(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            target = local_target(image, commit, {"one": {"volumes": ["data:/data"]},
                                                  "two": {}}, volumes={"data": {}})
            await dev.actions.set_local_target(target, False)
            before = await until(lambda: running_ids(docker_client, "one", "two"), "app up")
            one = docker_client.containers.get(before["one"])
            assert one.exec_run(["sh", "-c", "echo kept > /data/file"]).exit_code == 0
            assert one.exec_run(["cat", "/data/file"]).output == b"kept\n"

            await dev.actions.purge_app(APP, False)
            after = running_ids(docker_client, "one", "two")
            assert after is not None
            assert set(after.values()).isdisjoint(before.values())
            new_one = docker_client.containers.get(after["one"])
            assert new_one.exec_run(["ls", "-A", "/data"]).output == b""
            volume = docker_client.volumes.get(f"{APP}_data")
            assert volume.attrs["Labels"]["io.balena.supervised"] == "true"
            messages = [m for _, m in dev.rt.system_log]
            assert f"Purging data for app {APP}" in messages
            assert messages.index("Purged data") > messages.index(f"Purging data for app {APP}")

            # cleanup-volumes: only the orphans of the apps in scope go
            labels = {"io.balena.supervised": "true"}
            docker_client.volumes.create(f"{APP}_orphan", labels=labels)
            docker_client.volumes.create(f"{APP + 1}_other", labels=labels)
            try:
                removed = await dev.actions.cleanup_volumes(frozenset({APP}))
                assert removed == [f"{APP}_orphan"]
                names = {v.name for v in docker_client.volumes.list()}
                assert f"{APP}_data" in names and f"{APP + 1}_other" in names
            finally:
                for name in (f"{APP}_orphan", f"{APP + 1}_other"):
                    with suppress(docker.errors.NotFound):
                        docker_client.volumes.get(name).remove(force=True)

    run(scenario)


def test_service_stop_stays_stopped_then_start_and_restart(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            await dev.actions.set_local_target(
                local_target(image, commit, {"one": {}, "two": {}}), False)
            before = await until(lambda: running_ids(docker_client, "one", "two"), "app up")

            await dev.actions.service_action("stop", APP, "two", None, False)
            two = docker_client.containers.get(before["two"])
            assert two.status == "exited"
            # the loop runs (events, an explicit nudge) but never starts an exited container:
            # wait for a whole round that began after the nudge, then look
            loop = dev.rt.reconciler.state
            beat = loop.heartbeat
            dev.rt.reconciler.mark_dirty()
            await until(lambda: loop.heartbeat != beat and not loop.applying, "a round")
            two.reload()
            assert two.status == "exited"
            assert [c["Id"] for c in containers(docker_client)["two"]] == [before["two"]]
            assert running_ids(docker_client, "one") == {"one": before["one"]}

            await dev.actions.service_action("start", APP, "two", None, False)
            two.reload()
            assert two.status == "running"  # the same container, started again

            # by imageId this time ("two" is the target's imageId 102)
            await dev.actions.service_action("restart", APP, None, 102, False)
            after = running_ids(docker_client, "one", "two")
            assert after is not None
            assert after["one"] == before["one"]  # only the named service was recreated
            assert after["two"] != before["two"]

    run(scenario)


def test_user_lock_refuses_restart_with_423_until_forced(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            await dev.actions.set_local_target(
                local_target(image, commit, {"one": {}, "two": {}}), False)
            before = await until(lambda: running_ids(docker_client, "one", "two"), "app up")
            locks = tmp_path / "locks"
            await until(lambda: not list(locks.rglob("*updates.lock")), "the loop's unlock")
            # a file owned by someone else than the supervisor (uid 65534) is a user lock
            lock = tmp_path / "locks" / "services" / str(APP) / "two" / "updates.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock.write_text("")
            if os.stat(lock).st_uid == 65534:
                pytest.fail("the test must not run as uid 65534")

            with pytest.raises(UpdatesLocked) as refused:
                await dev.actions.restart_app(APP, False)
            locked_text = f"Lockfile exists for {{ appId: {APP}, service: two }}"  # locks.md §10
            assert str(refused.value) == locked_text

            app = build_app(RuntimeApi(dev.rt))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://device") as http:
                res = await http.post(f"/v2/applications/{APP}/restart", json={})
                assert res.status_code == 423
                assert res.json() == {"status": "failed", "message": locked_text}
                res = await http.post(f"/v1/apps/{APP}/stop", json={})  # multi-container
                assert res.status_code == 400

            # nothing was touched, and the user's lock is still there
            assert running_ids(docker_client, "one", "two") == before
            assert lock.exists()
            assert not [p for p in (tmp_path / "locks").rglob("resin-updates.lock")]

            await dev.actions.restart_app(APP, True)
            after = running_ids(docker_client, "one", "two")
            assert after is not None and set(after.values()).isdisjoint(before.values())
            assert not lock.exists()  # force took the user's lock over and released it

    run(scenario)


def test_v1_stop_and_start_a_single_container_app(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            await dev.actions.set_local_target(local_target(image, commit, {"solo": {}}), False)
            before = await until(lambda: running_ids(docker_client, "solo"), "app up")

            assert await dev.actions.v1_stop(APP, False) == before["solo"]
            solo = docker_client.containers.get(before["solo"])
            assert solo.status == "exited"
            assert await dev.actions.v1_start(APP) == before["solo"]
            solo.reload()
            assert solo.status == "running"
            assert running_ids(docker_client, "solo") == before

    run(scenario)
