"""The test infrastructure itself: engine, registry, images, cleanup and the second engine.

If these fail, every other integration test is meaningless, so they check the real thing:
bytes pushed to and pulled back from the registry, pages fetched from a container on
127.0.0.1, labels honoured by the cleanup.
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid

import docker
import docker.errors
import pytest

from tests.integration import dockerkit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_engine_answers(docker_client: docker.DockerClient) -> None:
    assert docker_client.ping() is True
    version = docker_client.version()
    assert version["ApiVersion"]
    assert docker_client.info()["OSType"] == "linux"


def test_registry_round_trips_a_random_image(
    docker_client: docker.DockerClient, base_image: str
) -> None:
    repo = _unique("balena-py-test/random")
    ref = dockerkit.push_random_image(docker_client, repo, size_mb=6)
    assert ref == f"127.0.0.1:5000/{repo}:latest"
    assert dockerkit.registry_digest(repo) is not None
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(ref)

    image = docker_client.images.pull(f"127.0.0.1:5000/{repo}", tag="latest")
    try:
        base = docker_client.images.get(base_image)
        assert len(image.attrs["RootFS"]["Layers"]) == len(base.attrs["RootFS"]["Layers"]) + 1
        assert image.attrs["Size"] - base.attrs["Size"] == 6 * dockerkit.MIB
        out = docker_client.containers.run(ref, ["sh", "-c", "wc -c < /blob"], remove=True)
        assert out.decode().strip() == str(6 * dockerkit.MIB)
    finally:
        docker_client.images.remove(ref, force=True)


def test_host_network_container_runs_and_exits_zero(
    docker_client: docker.DockerClient, base_image: str
) -> None:
    container = docker_client.containers.run(
        base_image, ["sh", "-c", "echo hello from $(hostname)"], network_mode="host", detach=True
    )
    try:
        result = container.wait(timeout=60)
        assert result["StatusCode"] == 0
        # Host networking shares the host's UTS namespace, hence its hostname.
        assert container.logs().decode().strip() == f"hello from {socket.gethostname()}"
    finally:
        container.remove(force=True)


def test_demo_image_serves_on_port_from_env(docker_client: docker.DockerClient) -> None:
    port = _free_port()
    container = docker_client.containers.run(
        dockerkit.DEMO_IMAGE,
        network_mode="host",
        environment={"PORT": str(port), "LOG_INTERVAL": "1"},
        detach=True,
    )
    try:
        deadline = time.monotonic() + 15
        page = ""
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    page = resp.read().decode()
            except OSError:
                time.sleep(0.2)
        assert f"port: {port}" in page
        while time.monotonic() < deadline and b"tick 2" not in container.logs():
            time.sleep(0.2)
        assert f"tick 2, port {port}".encode() in container.logs()
        container.stop(timeout=10)
        assert container.wait(timeout=30)["StatusCode"] == 0
    finally:
        container.remove(force=True)


def test_build_image_from_memory(docker_client: docker.DockerClient, base_image: str) -> None:
    tag = _unique("balena-py-test/built") + ":t"
    image_id = dockerkit.build_image(
        docker_client,
        tag,
        f'FROM {base_image}\nCOPY hello.sh /hello.sh\nCMD ["/hello.sh"]\n',
        {"hello.sh": b"#!/bin/sh\necho built-in-memory\n"},
    )
    try:
        assert docker_client.images.get(tag).id == image_id
        out = docker_client.containers.run(tag, remove=True)
        assert out.decode().strip() == "built-in-memory"
    finally:
        docker_client.images.remove(tag, force=True)


def test_cleanup_removes_only_supervised_objects(
    docker_client: docker.DockerClient, base_image: str
) -> None:
    label = {dockerkit.SUPERVISED_LABEL: "true"}
    net = docker_client.networks.create(_unique("bp-net"), driver="bridge", labels=label)
    vol = docker_client.volumes.create(_unique("bp-vol"), labels=label)
    supervised = docker_client.containers.run(
        base_image, ["sleep", "300"], labels=label, network=net.name, detach=True
    )
    bystander = docker_client.containers.run(base_image, ["sleep", "300"], detach=True)
    try:
        dockerkit.cleanup_supervised(docker_client)
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(supervised.id)
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(net.id)
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(vol.name)
        bystander.reload()
        assert bystander.status == "running"
    finally:
        bystander.remove(force=True)


def test_second_engine_is_separate(docker_client: docker.DockerClient, registry: str) -> None:
    host = dockerkit.start_engine("dev2")
    assert host != dockerkit.docker_host()
    dev2 = dockerkit.connect(host)
    try:
        assert dev2.info()["ID"] != docker_client.info()["ID"]
        assert dev2.info()["DockerRootDir"] != docker_client.info()["DockerRootDir"]
        # Its base image came from the shared registry; bridge networks work without docker0.
        out = dev2.containers.run(
            dockerkit.BASE_IMAGE, ["sh", "-c", "echo dev2-ok"], network_mode="host", remove=True
        )
        assert out.decode().strip() == "dev2-ok"
        net = dev2.networks.create(_unique("bp-dev2"), driver="bridge")
        net.remove()
    finally:
        dev2.close()
