"""Image and engine helpers for the integration tests.

They build test images from the busybox base that `scripts/engine.sh up` imports and pushes to
the local registry, push images with random layers so the supervisor does real pulls, and clear
what the supervisor leaves behind. Everything talks to the engine at DOCKER_HOST and the
registry on 127.0.0.1:5000; nothing comes from the internet.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest

from tests.ci import ci_strict

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_SH = REPO_ROOT / "scripts" / "engine.sh"
REGISTRY = "127.0.0.1:5000"
BASE_REPO = "balena-py/busybox"
BASE_IMAGE = f"{REGISTRY}/{BASE_REPO}:latest"
DEMO_IMAGE = f"{REGISTRY}/balena-py/demo:latest"
SUPERVISED_LABEL = "io.balena.supervised"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MIB = 1024 * 1024


def unavailable(reason: str) -> NoReturn:
    """Skip on a laptop without an engine; fail in CI, where the engine must be there."""
    hint = " (start it with `make engine-up`)"
    if ci_strict():
        pytest.fail(f"{reason}{hint}; CI is set, so this is a failure", pytrace=False)
    pytest.skip(f"{reason}{hint}")


def docker_host() -> str:
    """DOCKER_HOST, else where `scripts/engine.sh up` would start the private engine."""
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host
    try:
        out = subprocess.run(
            ["bash", str(ENGINE_SH), "host"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unix:///var/run/docker.sock"
    return out.strip().splitlines()[-1] if out.strip() else "unix:///var/run/docker.sock"


def connect(host: str) -> docker.DockerClient:
    """A client at `host`; `version="auto"` because the engine may be older than docker-py."""
    client = docker.DockerClient(base_url=host, version="auto", timeout=300)
    client.ping()
    return client


def start_engine(name: str) -> str:
    """Start (or find) the extra engine ENGINE_NAME=`name` for multi-device tests; its host."""
    env = {**os.environ, "ENGINE_NAME": name}
    env.pop("DOCKER_HOST", None)
    proc = subprocess.run(
        ["bash", str(ENGINE_SH), "up"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("DOCKER_HOST="):
        unavailable(f"engine {name!r} did not start: {proc.stderr.strip()[-2000:]}")
    return lines[-1].removeprefix("DOCKER_HOST=")


# ------------------------------------------------------------------------------ registry


def registry_answers() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def registry_digest(repo: str, tag: str = "latest") -> str | None:
    """The manifest digest the local registry holds for repo:tag, or None."""
    req = urllib.request.Request(
        f"http://{REGISTRY}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_V2},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.headers.get("Docker-Content-Digest") or None
    except (urllib.error.URLError, OSError):
        return None


def split_ref(ref: str) -> tuple[str, str]:
    """'host:port/name:tag' -> ('host:port/name', 'tag'); the port colon is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def push(client: docker.DockerClient, ref: str) -> str:
    """Push `ref` and return the manifest digest; docker-py reports push errors in the stream."""
    repo, tag = split_ref(ref)
    digest = ""
    for line in client.api.push(repo, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {ref} failed: {line['error']}")
        aux = line.get("aux") or {}
        digest = aux.get("Digest", digest)
    if not digest:
        raise RuntimeError(f"push of {ref} reported no digest")
    return str(digest)


def ensure_base_image(client: docker.DockerClient) -> str:
    """The busybox base is in the registry and in the engine; returns its reference."""
    try:
        client.images.get(BASE_IMAGE)
        local = True
    except docker.errors.ImageNotFound:
        local = False
    if registry_digest(BASE_REPO) is None:
        if not local:
            unavailable(f"{BASE_IMAGE} is neither in the registry nor in the engine")
        push(client, BASE_IMAGE)
    if not local:
        client.images.pull(f"{REGISTRY}/{BASE_REPO}", tag="latest")
    return BASE_IMAGE


# ------------------------------------------------------------------------------ images


def _context(dockerfile: str, files: dict[str, bytes] | None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def build_image(
    client: docker.DockerClient,
    tag: str,
    dockerfile: str,
    files: dict[str, bytes] | None = None,
) -> str:
    """Build from an in-memory context (Dockerfile plus `files`); returns the image id.

    The Dockerfile should start `FROM 127.0.0.1:5000/balena-py/busybox:latest` (BASE_IMAGE).
    Files whose name ends in .sh are made executable.
    """
    image, _logs = client.images.build(
        fileobj=_context(dockerfile, files),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
    )
    return str(image.id)


def push_random_image(
    client: docker.DockerClient, repo: str, size_mb: int, tag: str = "latest"
) -> str:
    """Push an image with one layer of `size_mb` MiB of random bytes to the local registry.

    The image is removed from the engine afterwards, so whoever wants it must really pull it
    (with real progress: random bytes do not compress). Returns '127.0.0.1:5000/<repo>:<tag>'.
    """
    ref = f"{REGISTRY}/{repo}:{tag}"
    blob = os.urandom(size_mb * MIB)
    build_image(client, ref, f"FROM {BASE_IMAGE}\nCOPY blob /blob\n", {"blob": blob})
    push(client, ref)
    client.images.remove(ref)
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return ref
    raise RuntimeError(f"{ref} is still in the engine after removal")


# ------------------------------------------------------------------------------ cleanup


def _attempt(errors: list[str], fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except docker.errors.NotFound:
        pass  # gone already (auto-removed, or removed by the supervisor meanwhile)
    except docker.errors.APIError as exc:
        errors.append(str(exc))  # e.g. 409 while a removal is still in progress: try again


def _cleanup_pass(client: docker.DockerClient) -> list[str]:
    flt = {"label": SUPERVISED_LABEL}
    errors: list[str] = []
    for container in client.containers.list(all=True, filters=flt):
        _attempt(errors, container.remove, force=True, v=True)
    for network in client.networks.list(filters=flt):
        _attempt(errors, network.reload)
        for cid in network.attrs.get("Containers") or {}:
            _attempt(errors, network.disconnect, cid, force=True)
        _attempt(errors, network.remove)
    for volume in client.volumes.list(filters=flt):
        _attempt(errors, volume.remove, force=True)
    return errors


def cleanup_supervised(client: docker.DockerClient) -> None:
    """Force-remove every container, network and volume labelled io.balena.supervised."""
    errors: list[str] = []
    for _ in range(5):
        errors = _cleanup_pass(client)
        if not errors:
            return
        time.sleep(0.5)
    raise RuntimeError("cannot remove supervised objects: " + "; ".join(errors))
