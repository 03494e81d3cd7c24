"""Fixtures of the integration tests: the real engine, the local registry, the base image.

The engine is the one at DOCKER_HOST, else the private one of `scripts/engine.sh`. When it
does not answer, tests skip on a laptop and fail in CI (see dockerkit.unavailable). Every test
starts and ends with no supervised containers, networks or volumes left on the engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration import dockerkit
from tests.integration.supervisor_proc import SupervisorProc


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """The engine's address; exported as DOCKER_HOST so a supervisor under test finds it too."""
    host = dockerkit.docker_host()
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    yield host
    if previous is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = previous


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    try:
        client = dockerkit.connect(docker_host)
    except Exception as exc:  # any failure to reach the engine means "no engine"
        dockerkit.unavailable(f"no Docker engine answers at {docker_host}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry() -> str:
    """The local registry's address, "127.0.0.1:5000"."""
    if not dockerkit.registry_answers():
        dockerkit.unavailable(f"no registry answers at http://{dockerkit.REGISTRY}/v2/")
    return dockerkit.REGISTRY


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient, registry: str) -> str:
    """The base image reference, present in the registry and in the engine."""
    return dockerkit.ensure_base_image(docker_client)


@pytest.fixture(autouse=True)
def _clean_supervised(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("no_engine") is not None:
        yield  # a test of its own daemon (D-Bus): no engine needed, none touched
        return
    client: docker.DockerClient = request.getfixturevalue("docker_client")
    dockerkit.cleanup_supervised(client)
    yield
    dockerkit.cleanup_supervised(client)


@pytest.fixture
def sup(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Any]:
    """A factory of real supervisor processes (local mode), each stopped after the test."""
    procs: list[SupervisorProc] = []

    def make(target: dict[str, Any] | None = None, **kw: Any) -> SupervisorProc:
        proc = SupervisorProc(tmp_path / f"sup{len(procs)}", target=target, **kw)
        procs.append(proc)
        return proc.start()

    yield make
    for proc in procs:
        proc.stop()
