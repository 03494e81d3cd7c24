"""Lock rules of locks.md on the real engine and the real actions (through the HTTP app):

* a directory or a dangling symlink named like a lock is a lock (§3): made by the service
  itself in its /tmp/balena, it refuses `restart-service` with upstream's 423;
* `/v1/apps/:id/start` and `/v2/applications/:id/start-service` ignore locks (§9);
* the lock override (`SUPERVISOR_OVERRIDE_LOCK`, §7) applies to `restart` and
  `restart-service`: a user lock no longer refuses them;
* at start the supervisor's own leftover locks go and the user's stay (§11).

The device is a real `Runtime` in-process with its reconciler loop (tests/integration/
test_actions.py's `device`); what the actions did is read from Docker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from supervisor.api.actions import RuntimeApi
from supervisor.api.app import build_app
from supervisor.locks import LOCK_NAMES, SUPERVISOR_UID
from tests.integration.test_actions import (
    APP,
    Device,
    containers,
    device,
    local_target,
    run,
    running_ids,
    until,
)


@pytest.fixture
def image(base_image: str) -> str:
    return base_image


@pytest.fixture
def commit() -> str:
    return uuid.uuid4().hex[:12]


def locked(service: str) -> dict[str, str]:
    """The 423 body (locks.md §10)."""
    return {"status": "failed",
            "message": f"Lockfile exists for {{ appId: {APP}, service: {service} }}"}


def lock_dir(tmp_path: Path, service: str, app: int = APP) -> Path:
    path = tmp_path / "locks" / "services" / str(app) / service
    path.mkdir(parents=True, exist_ok=True)
    return path


def supervisor_locks(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "locks").rglob("*")
            if p.name in LOCK_NAMES and p.lstat().st_uid == SUPERVISOR_UID]


@asynccontextmanager
async def http(dev: Device) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(RuntimeApi(dev.rt)))
    async with httpx.AsyncClient(transport=transport, base_url="http://device",
                                 timeout=120) as client:
        yield client


def status(client: docker.DockerClient, cid: str) -> str:
    return str(client.containers.get(cid).status)


def test_lock_dirs_and_dangling_symlinks_lock_and_start_service_ignores_them(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev, http(dev) as api:
            await dev.actions.set_local_target(
                local_target(image, commit, {"one": {}, "two": {}}), False)
            before = await until(lambda: running_ids(docker_client, "one", "two"), "app up")
            await until(lambda: not supervisor_locks(tmp_path), "the loop's unlock")

            res = await api.post(f"/v2/applications/{APP}/stop-service",
                                 json={"serviceName": "two"})
            assert res.status_code == 200, res.text
            assert status(docker_client, before["two"]) == "exited"

            # the service itself makes a lock directory at its advertised lock path, and a
            # dangling symlink with the legacy name sits in the other service's dir
            one = docker_client.containers.get(before["one"])
            made = one.exec_run(["sh", "-c", 'mkdir "$BALENA_APP_LOCK_PATH"'])
            assert made.exit_code == 0, made.output
            lock_dir_one = lock_dir(tmp_path, "one") / "updates.lock"
            assert lock_dir_one.is_dir() and lock_dir_one.lstat().st_uid != SUPERVISOR_UID
            link = lock_dir(tmp_path, "two") / "resin-updates.lock"
            link.symlink_to(tmp_path / "nowhere")

            # start-service ignores locks: the same container runs again
            res = await api.post(f"/v2/applications/{APP}/start-service",
                                 json={"serviceName": "two"})
            assert res.status_code == 200, res.text
            assert status(docker_client, before["two"]) == "running"

            # the directory is a lock ("one" is checked first) ...
            res = await api.post(f"/v2/applications/{APP}/restart-service",
                                 json={"serviceName": "two"})
            assert (res.status_code, res.json()) == (423, locked("one"))
            # ... and so is the dangling symlink
            lock_dir_one.rmdir()
            res = await api.post(f"/v2/applications/{APP}/restart-service",
                                 json={"serviceName": "two"})
            assert (res.status_code, res.json()) == (423, locked("two"))
            assert link.is_symlink()
            assert running_ids(docker_client, "one", "two") == before
            assert supervisor_locks(tmp_path) == []

    run(scenario)


def test_v1_start_ignores_user_locks(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev, http(dev) as api:
            await dev.actions.set_local_target(local_target(image, commit, {"solo": {}}), False)
            before = await until(lambda: running_ids(docker_client, "solo"), "app up")
            await until(lambda: not supervisor_locks(tmp_path), "the loop's unlock")
            res = await api.post(f"/v1/apps/{APP}/stop", json={})
            assert (res.status_code, res.json()) == (200, {"containerId": before["solo"]})
            assert status(docker_client, before["solo"]) == "exited"

            user_lock = lock_dir(tmp_path, "solo") / "updates.lock"
            user_lock.write_text("")
            res = await api.post(f"/v1/apps/{APP}/start", json={})
            assert (res.status_code, res.json()) == (200, {"containerId": before["solo"]})
            assert status(docker_client, before["solo"]) == "running"
            assert user_lock.exists() and supervisor_locks(tmp_path) == []

            # the control: stopping is refused by the same lock
            res = await api.post(f"/v1/apps/{APP}/stop", json={})
            assert res.status_code == 423
            assert status(docker_client, before["solo"]) == "running"

    run(scenario)


def override_target(image: str, commit: str) -> dict[str, Any]:
    target = local_target(image, commit, {"one": {}, "two": {}})
    target["local"]["config"] = {"BALENA_SUPERVISOR_OVERRIDE_LOCK": "1"}
    return target


def test_lock_override_applies_to_restart_and_restart_service(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev, http(dev) as api:
            await dev.actions.set_local_target(override_target(image, commit), False)
            first = await until(lambda: running_ids(docker_client, "one", "two"), "app up")
            await until(lambda: not supervisor_locks(tmp_path), "the loop's unlock")
            user_lock = lock_dir(tmp_path, "two") / "updates.lock"

            user_lock.write_text("")
            res = await api.post(f"/v2/applications/{APP}/restart-service",
                                 json={"serviceName": "two"})  # no force in the body
            assert res.status_code == 200, res.text
            second = running_ids(docker_client, "one", "two")
            assert second is not None
            assert second["one"] == first["one"] and second["two"] != first["two"]
            assert not user_lock.exists()  # taken over as if forced, then released

            user_lock.write_text("")
            res = await api.post("/v1/restart", json={"appId": APP})
            assert (res.status_code, res.text) == (200, "OK")
            third = running_ids(docker_client, "one", "two")
            assert third is not None and set(third.values()).isdisjoint(second.values())
            assert not user_lock.exists()

            user_lock.write_text("")
            res = await api.post(f"/v2/applications/{APP}/restart", json={})
            assert res.status_code == 200, res.text
            fourth = running_ids(docker_client, "one", "two")
            assert fourth is not None and set(fourth.values()).isdisjoint(third.values())
            assert not user_lock.exists() and supervisor_locks(tmp_path) == []

    run(scenario)


def test_leftover_supervisor_locks_go_at_start_and_user_locks_stay(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, image: str,
        commit: str) -> None:
    leftovers = [lock_dir(tmp_path, "one") / name for name in LOCK_NAMES]
    for path in leftovers:  # a crash while the supervisor held "one"
        path.write_text("")
        os.chown(path, SUPERVISOR_UID, SUPERVISOR_UID)
    user_dir = lock_dir(tmp_path, "side") / "updates.lock"  # not a service of the target
    user_dir.mkdir()
    other_app = lock_dir(tmp_path, "main", app=APP + 1) / "resin-updates.lock"
    other_app.write_text("")
    assert os.stat(other_app).st_uid != SUPERVISOR_UID

    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            assert not [p for p in leftovers if p.is_symlink() or p.exists()]
            await dev.actions.set_local_target(
                local_target(image, commit, {"one": {}, "two": {}}), False)
            await until(lambda: running_ids(docker_client, "one", "two"), "app up")
            await until(lambda: not supervisor_locks(tmp_path), "the loop's unlock")
            assert user_dir.is_dir() and other_app.exists()
            assert set(containers(docker_client)) == {"one", "two"}

    run(scenario)
