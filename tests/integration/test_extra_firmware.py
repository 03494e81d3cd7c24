"""The extra-firmware volume (config.md §11) with a real supervisor process and the real engine.

config.json `os.kernel.extraFirmwareVol` names the volume: the supervisor creates it at start,
a service labelled `io.balena.features.extra-firmware` gets it at /extra-firmware, and a purge
of the app recreates it empty. The volume is global on the engine: the test removes it before
and after (integration tests run one at a time, under the docker lock).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import docker
import docker.errors

from tests.integration.supervisor_proc import SupervisorProc

VOLUME = "extra-firmware"
APP = 7402
CMD = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def target(image: str) -> dict[str, Any]:
    service = {"serviceName": "fw", "imageId": 1, "image": image, "environment": {},
               "labels": {"io.balena.features.extra-firmware": "1"}, "command": CMD}
    return {"local": {"name": "fw-test", "config": {}, "apps": {str(APP): {
        "name": "fw", "commit": "f1f1f1f1", "releaseId": 1, "services": {"1": service},
        "volumes": {}, "networks": {}}}}}


def running(client: docker.DockerClient) -> Any:
    found = client.containers.list(filters={"label": f"io.balena.app-id={APP}",
                                            "status": "running"})
    return found[0] if len(found) == 1 else None


def remove_volume(client: docker.DockerClient) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(VOLUME).remove(force=True)


def test_extra_firmware_volume_created_mounted_and_purged_empty(
        tmp_path: Path, docker_client: docker.DockerClient, base_image: str) -> None:
    remove_volume(docker_client)
    proc = SupervisorProc(tmp_path / "sup", config={
        "uuid": "f" * 32, "os": {"kernel": {"extraFirmwareVol": VOLUME}}})
    try:
        proc.start()
        # created at start, before any service asks for it
        proc.wait_for(lambda: docker_client.volumes.get(VOLUME), what="the volume at start")

        assert proc.post_target(target(base_image)).status_code == 200
        first = proc.wait_for(lambda: running(docker_client), what="the service running")
        mounts = {m["Destination"]: m for m in first.attrs["Mounts"]}
        assert mounts["/extra-firmware"]["Type"] == "volume"
        assert mounts["/extra-firmware"]["Name"] == VOLUME
        assert first.exec_run(["sh", "-c", "echo blob > /extra-firmware/fw.bin"]).exit_code == 0

        answer = proc.client.post("/v1/purge", json={"appId": APP})
        assert answer.status_code == 200, answer.text
        again = proc.wait_for(
            lambda: (c := running(docker_client)) is not None and c.id != first.id and c,
            what="the service recreated after the purge")
        assert again.exec_run(["ls", "-A", "/extra-firmware"]).output == b""
    finally:
        proc.stop()
        for container in docker_client.containers.list(
                all=True, filters={"label": f"io.balena.app-id={APP}"}):
            container.remove(force=True)
        remove_volume(docker_client)
