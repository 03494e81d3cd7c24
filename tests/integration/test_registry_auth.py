"""Registry auth through the real engine: a second local `docker-registry` with htpasswd auth
(bcrypt entry for `d_<uuid>`), started and stopped by the test on its own 127.0.0.1 port.
A pull with the credentials `cloud/registry_auth.py` builds works; an anonymous pull, or one
with another key, is refused."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import bcrypt
import docker
import pytest

from supervisor.cloud.registry_auth import image_auth_hook, pull_auth
from supervisor.engine.docker import DockerEngine
from supervisor.errors import EngineError
from tests.integration import dockerkit

UUID = "5ec0" * 8
KEY = secrets.token_hex(16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """127.0.0.1:<port>: a registry that only `d_<UUID>` / KEY may use."""
    binary = shutil.which("docker-registry")
    if binary is None:
        dockerkit.unavailable("docker-registry is not installed")
    root = tmp_path_factory.mktemp("auth-registry")
    hashed = bcrypt.hashpw(KEY.encode(), bcrypt.gensalt(rounds=5)).decode()
    (root / "htpasswd").write_text(f"d_{UUID}:{hashed}\n")
    address = f"127.0.0.1:{_free_port()}"
    (root / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / "data"}
http:
  addr: {address}
  secret: test-auth-registry
auth:
  htpasswd:
    realm: balena-py-test
    path: {root / "htpasswd"}
""")
    log = (root / "registry.log").open("ab")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _status(f"http://{address}/v2/") != 401:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the auth registry did not start:\n"
                            f"{(root / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def private_image(auth_registry: str, docker_client: docker.DockerClient,
                  base_image: str) -> Iterator[str]:
    """The base image pushed to the auth registry (with the device's credentials); the local
    tag is removed so that every pull really asks the registry."""
    ref = f"{auth_registry}/balena-py/private:latest"
    docker_client.images.get(base_image).tag(ref)
    out = docker_client.images.push(ref, auth_config={"username": f"d_{UUID}",
                                                      "password": KEY}, stream=False)
    assert "error" not in out.lower(), out
    docker_client.images.remove(ref)
    yield ref
    _forget(docker_client, ref)


def _forget(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(ref)


def _pull(host: str, ref: str, auth: dict[str, str] | None) -> str:
    engine = DockerEngine(host)
    try:
        return engine.pull(ref, lambda _event: None, threading.Event(), auth)
    finally:
        engine.close()


def test_pull_with_device_credentials_works(docker_host: str, docker_client: docker.DockerClient,
                                            private_image: str, auth_registry: str) -> None:
    auth = image_auth_hook(lambda: (UUID, KEY))(private_image)
    assert auth == {"username": f"d_{UUID}", "password": KEY, "serveraddress": auth_registry}
    _forget(docker_client, private_image)
    image_id = _pull(docker_host, private_image, auth)
    assert docker_client.images.get(private_image).id == image_id
    _forget(docker_client, private_image)


@pytest.mark.parametrize("auth", [None, pull_auth("x/y", uuid=UUID, api_key="k"),
                                  {"username": f"d_{UUID}", "password": "wrong"}],
                         ids=["anonymous", "no-registry-host", "wrong-key"])
def test_pull_without_the_right_credentials_is_refused(
        docker_host: str, docker_client: docker.DockerClient, private_image: str,
        auth: dict[str, str] | None) -> None:
    _forget(docker_client, private_image)
    with pytest.raises(EngineError) as caught:
        _pull(docker_host, private_image, auth)
    assert "auth" in str(caught.value).lower()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(private_image)


def test_references_without_a_registry_host_pull_anonymously() -> None:
    assert pull_auth("busybox:latest", uuid=UUID, api_key=KEY) is None
    assert pull_auth("library/busybox", uuid=UUID, api_key=KEY) is None
    assert pull_auth("registry2.balena-cloud.com/v2/9e2d@sha256:1df4", uuid=UUID,
                     api_key=KEY) == {"username": f"d_{UUID}", "password": KEY,
                                      "serveraddress": "registry2.balena-cloud.com"}
    assert pull_auth("127.0.0.1:5000/a/b:1", uuid=UUID, api_key="") is None
    assert pull_auth("localhost/a", uuid=UUID, api_key=KEY) == {
        "username": f"d_{UUID}", "password": KEY, "serveraddress": "localhost"}


def test_the_hook_reads_the_key_at_pull_time() -> None:
    identity = [(UUID, "provisioning-key")]
    hook = image_auth_hook(lambda: identity[0])
    assert hook("r.example.com/a")["password"] == "provisioning-key"  # type: ignore[index]
    identity[0] = (UUID, "device-key")  # the key exchange happened
    assert hook("r.example.com/a")["password"] == "device-key"  # type: ignore[index]
