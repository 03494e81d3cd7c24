"""Every route refused by a user update lock answers upstream's 423, to the byte (locks.md §10).

A real `Runtime` on the real engine (the `device` of test_actions.py) runs two apps; a user
lock is planted in each, in every form locks.md counts as a lock (either file name, a
directory, a dangling symlink); then a host OS update breadcrumb. Each route is called through
the real ASGI app: the status and the body are compared with the spec's text, written out here
literally.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from supervisor.api.actions import RuntimeApi
from supervisor.api.app import build_app
from tests.integration.test_actions import CMD, device, run, until

APP = 7301  # services "one" and "two"; the lock is in "two"
SOLO = 7302  # one service, "solo": /v1/apps/:appId/stop needs a single-container app


def two_apps(image: str, commit: str) -> dict[str, Any]:
    def app(name: str, services: list[str], first_id: int) -> dict[str, Any]:
        svcs = {str(first_id + i): {"serviceName": s, "imageId": first_id + i, "image": image,
                                    "environment": {}, "labels": {}, "command": CMD}
                for i, s in enumerate(services)}
        return {"name": name, "commit": commit, "releaseId": 1, "services": svcs,
                "volumes": {}, "networks": {}}

    return {"local": {"name": "lock-bodies", "config": {}, "apps": {
        str(APP): app("pair", ["one", "two"], 100), str(SOLO): app("solo", ["solo"], 200)}}}


def running(client: docker.DockerClient) -> dict[str, str] | None:
    """{service: container id} once each of the three services has one running container."""
    found: dict[str, list[dict[str, Any]]] = {}
    for app_id in (APP, SOLO):
        for c in client.api.containers(all=True, filters={"label": f"io.balena.app-id={app_id}"}):
            found.setdefault(c["Labels"]["io.balena.service-name"], []).append(c)
    if all(len(found.get(s, [])) == 1 and found[s][0]["State"] == "running"
           for s in ("one", "two", "solo")):
        return {s: found[s][0]["Id"] for s in ("one", "two", "solo")}
    return None


PAIR = "Lockfile exists for { appId: 7301, service: two }"
ALONE = "Lockfile exists for { appId: 7302, service: solo }"

# (method, path, JSON body, exact response body): locks.md §10 and api.md §3-§4
ROUTES: list[tuple[str, str, dict[str, Any] | None, bytes]] = [
    ("POST", "/v1/restart", {"appId": APP},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
    ("POST", "/v1/purge", {"appId": APP},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
    ("POST", f"/v1/apps/{SOLO}/stop", {},
     b'{"status":"failed","message":"' + ALONE.encode() + b'"}'),
    ("POST", "/v1/reboot", {}, b'{"Data":"","Error":"' + PAIR.encode() + b'"}'),
    ("POST", "/v1/shutdown", {}, b'{"Data":"","Error":"' + PAIR.encode() + b'"}'),
    ("PATCH", "/v1/device/host-config", {"network": {"hostname": "locked"}}, PAIR.encode()),
    ("POST", f"/v2/applications/{APP}/restart", {},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
    ("POST", f"/v2/applications/{APP}/purge", {},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
    ("POST", f"/v2/applications/{APP}/restart-service", {"serviceName": "one"},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
    ("POST", f"/v2/applications/{APP}/stop-service", {"serviceName": "two"},
     b'{"status":"failed","message":"' + PAIR.encode() + b'"}'),
]


def plant(path: Path, form: str) -> None:
    """A user lock (owned by root, not by the supervisor's uid 65534) in the given form."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "file":
        path.write_text("")
    elif form == "directory":
        path.mkdir()
    else:  # a dangling symlink: lstat sees it, so it counts
        path.symlink_to(path.parent / "nowhere")
    assert os.lstat(path).st_uid != 65534, "the test must not run as uid 65534"


def present(paths: list[Path]) -> bool:
    return all(os.path.lexists(p) for p in paths)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("name", ["updates.lock", "resin-updates.lock"])
def test_every_locked_route_answers_upstreams_423(
        tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, base_image: str,
        name: str) -> None:
    async def scenario() -> None:
        async with device(tmp_path, docker_host) as dev:
            await dev.actions.set_local_target(two_apps(base_image, "c0ffee01"), False)
            before = await until(lambda: running(docker_client), "both apps up")
            services = tmp_path / "locks" / "services"
            await until(lambda: not list(services.rglob("*updates.lock")), "the loop's unlock")
            app = build_app(RuntimeApi(dev.rt))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://device") as http:
                for form in ("file", "directory", "symlink"):
                    locks = [services / str(APP) / "two" / name,
                             services / str(SOLO) / "solo" / name]
                    for lock in locks:
                        plant(lock, form)
                    for method, path, body, expected in ROUTES:
                        res = await http.request(method, path, json=body)
                        assert (res.status_code, res.content) == (423, expected), \
                            (form, method, path)
                    # nothing was touched, and the user's locks are still there
                    assert running(docker_client) == before, form
                    assert present(locks), form
                    for lock in locks:
                        remove(lock)
                    # only the user's lock was there: no supervisor lock was left behind
                    assert not [p for p in services.rglob("*") if p.name.endswith(
                        "updates.lock")], form
                # a host OS update settling refuses reboot and shutdown (locks.md §8)
                for crumb in ("rollback-health-breadcrumb", "rollback-altboot-breadcrumb"):
                    (tmp_path / "state" / crumb).write_text("")
                    for path in ("/v1/reboot", "/v1/shutdown"):
                        res = await http.post(path, json={})
                        assert (res.status_code, res.content) == (
                            423, b'{"Data":"","Error":"Waiting for Host OS update to finish"}')
                    (tmp_path / "state" / crumb).unlink()
                assert running(docker_client) == before

    run(scenario)
