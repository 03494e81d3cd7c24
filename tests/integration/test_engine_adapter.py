"""The Docker adapter (supervisor/engine/docker.py) on the real engine: what the unit tests
(tests/unit/test_engine_docker.py) assume about Docker's answers holds.

Starting a running container or stopping a stopped one is not an error; removing
what is gone is not one either; a container whose network connect fails is removed, not left
looking installed; a missing image reads as None and pulls as ImageNotFound; observe re-reads
a renamed container and forgets a removed one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from supervisor import errors
from supervisor.engine.docker import DockerEngine
from supervisor.model.spec import ContainerSpec

APP = 7401
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


@pytest.fixture
def engine(docker_host: str) -> Iterator[DockerEngine]:
    eng = DockerEngine(docker_host)
    yield eng
    eng.close()


def spec(image: str, name: str, extra_networks: tuple[tuple[str, dict[str, object]], ...] = (),
         ) -> ContainerSpec:
    body = {"Image": image, "Cmd": SLEEP, "StopTimeout": 5,
            "Labels": {"io.balena.supervised": "true", "io.balena.app-id": str(APP),
                       "io.balena.service-name": "main"},
            "HostConfig": {"NetworkMode": "none"}}
    return ContainerSpec(name=name, body=body, extra_networks=extra_networks, config_hash="h",
                         app_id=APP, app_uuid=str(APP), service_name="main", depends_on=())


def test_repeated_and_late_calls_are_not_errors(
        engine: DockerEngine, docker_client: docker.DockerClient, base_image: str) -> None:
    commit = uuid.uuid4().hex[:12]
    cid = engine.create(spec(base_image, f"main_1_1_{commit}"))
    engine.start(cid)
    engine.start(cid)  # already started
    (seen,) = [c for c in engine.observe().containers if c.app_id == APP]
    assert (seen.id, seen.running, seen.name) == (cid, True, f"main_1_1_{commit}")

    engine.rename(cid, f"main_1_2_{commit}")
    (seen,) = [c for c in engine.observe().containers if c.app_id == APP]
    assert (seen.id, seen.release_id) == (cid, 2)  # the renamed container is read again

    engine.stop(cid)
    engine.stop(cid)  # already stopped
    assert docker_client.containers.get(cid).status == "exited"
    engine.remove(cid, force=True)
    engine.remove(cid, force=True)  # gone
    engine.stop(cid)
    assert [c for c in engine.observe().containers if c.app_id == APP] == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(cid)
    engine.remove_volume(f"{APP}_missing-{commit}")
    engine.remove_network(f"missing-{commit}")


def test_a_failed_network_connect_leaves_no_container(
        engine: DockerEngine, docker_client: docker.DockerClient, base_image: str) -> None:
    name = f"main_1_1_{uuid.uuid4().hex[:12]}"
    # Docker refuses this connect at once (an alias on the host network); a network that does
    # not exist would only be refused when the container starts
    with pytest.raises(errors.EngineError, match=r"^connect main_1_1_"):
        engine.create(spec(base_image, name, (("host", {"Aliases": ["main"]}),)))
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
    assert engine.find_container(name) is None


def test_a_missing_image(engine: DockerEngine, registry: str) -> None:
    ref = f"{registry}/no-such-image-{uuid.uuid4().hex[:8]}:v1"
    assert engine.image_id(ref) is None
    with pytest.raises(errors.ImageNotFound):
        engine.pull(ref, lambda event: None, threading.Event())
