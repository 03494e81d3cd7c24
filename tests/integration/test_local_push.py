"""`balena push <device>` in local mode, request by request, as balena-cli does it.

balena-cli builds the images on the device's own engine (`local_image_<service>:latest`), then
POSTs a v2 local target that repeats the same imageId and commit on every push.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import docker

from tests.integration.dockerkit import BASE_IMAGE, build_image
from tests.integration.supervisor_proc import SupervisorProc


def push_target(image: str) -> dict[str, Any]:
    return {"local": {"name": "pushed-device", "config": {"SUPERVISOR_LOCAL_MODE": "1"},
                      "apps": {"1": {"name": "localapp", "commit": "deadbeef", "releaseId": 1,
                                     "services": {"1": {
                                         "serviceName": "main", "imageId": 1, "image": image,
                                         "environment": {}, "labels": {},
                                         "network_mode": "host", "running": True}},
                                     "volumes": {}, "networks": {}}}}}


def build(client: docker.DockerClient, version: str) -> str:
    script = f"#!/bin/sh\nwhile true; do echo hello {version}; sleep 1; done\n".encode()
    dockerfile = (f"FROM {BASE_IMAGE}\nCOPY run.sh /run.sh\nRUN chmod +x /run.sh\n"
                  'CMD ["/run.sh"]\n')
    return build_image(client, "local_image_main:latest", dockerfile, {"run.sh": script})


def main_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={
        "label": ["io.balena.supervised", "io.balena.service-name=main"]})


def test_balena_cli_push_sequence(tmp_path: Path, docker_client: Any, base_image: str) -> None:
    proc = SupervisorProc(tmp_path / "sup").start()
    try:
        api = proc.client
        assert api.get("/ping").text == "OK"
        version = api.get("/v2/version").json()
        assert version["status"] == "success"
        major, minor, patch = (int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)",
                                                          version["version"]).groups())
        assert (major, minor, patch) >= (7, 21, 4)
        info = api.get("/v2/local/device-info").json()
        assert info["status"] == "success" and "deviceType" in info["info"]
        state = api.get("/v2/local/target-state").json()
        assert state["status"] == "success" and "local" in state["state"]

        first_id = build(docker_client, "one")
        resp = api.post("/v2/local/target-state", json=push_target("local_image_main"))
        assert resp.status_code == 200, resp.text
        proc.wait_for(lambda: [c for c in main_containers(docker_client)
                               if c.status == "running" and c.image.id == first_id],
                      what="first push running")
        old = main_containers(docker_client)[0]

        # second push: changed code, same tag, same imageId and commit
        second_id = build(docker_client, "two")
        assert second_id != first_id
        resp = api.post("/v2/local/target-state", json=push_target("local_image_main"))
        assert resp.status_code == 200, resp.text
        proc.wait_for(lambda: [c for c in main_containers(docker_client)
                               if c.status == "running" and c.image.id == second_id],
                      what="second push replaces the container")
        containers = main_containers(docker_client)
        assert len(containers) == 1 and containers[0].id != old.id
        assert b"hello two" in containers[0].logs()
    finally:
        proc.stop()
        for tag in ("local_image_main:latest",):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag, force=True)


def test_invalid_push_is_refused_and_nothing_touched(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    proc = SupervisorProc(tmp_path / "sup").start()
    try:
        good = push_target(base_image)
        good["local"]["apps"]["1"]["services"]["1"]["command"] = ["sleep", "3600"]
        assert proc.post_target(good).status_code == 200
        proc.wait_for(lambda: [c for c in main_containers(docker_client) if c.status == "running"],
                      what="running")
        before = main_containers(docker_client)[0].id
        bad_bodies: list[Any] = [
            {}, {"local": None}, {"local": {"apps": None}}, {"local": {"name": "x"}},
            {"local": {"apps": {"1": "nope"}}}, [],
            {"local": {"apps": {"1": {"name": "a", "commit": 5, "releaseId": 1,
                                      "services": {}}}}},
            {"local": {"apps": {"1": {"name": "a", "commit": "c", "releaseId": 1,
                                      "services": {"1": {"image": "x"}}}}}},
        ]
        for body in bad_bodies:
            resp = proc.post_target(body)
            assert resp.status_code == 400, (body, resp.text)
            assert resp.json()["status"] == "failed"
        resp = proc.client.post("/v2/local/target-state", content=b"{not json",
                                headers={"Content-Type": "application/json"})
        assert resp.status_code == 400
        assert proc.client.get("/ping").text == "OK"
        assert [c.id for c in main_containers(docker_client)] == [before]
        # only an explicit, valid empty apps object removes the apps
        empty = {"local": {"name": "d", "config": {"SUPERVISOR_LOCAL_MODE": "1"}, "apps": {}}}
        assert proc.post_target(empty).status_code == 200
        proc.wait_for(lambda: not main_containers(docker_client), what="apps removed")
    finally:
        proc.stop()
