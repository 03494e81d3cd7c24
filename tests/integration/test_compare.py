"""Container comparison on the real engine (engine.md §4.6): a target that only reorders the
fields compared regardless of order recreates nothing, and neither does upgrading from the
previous release, whose containers carry an order-sensitive config hash.

"Recreates nothing" is read from Docker itself: the container ids stay, and the engine's event
log has no create or destroy of a supervised container after the change (events are compared
by their nanosecond timestamps, taken from the same host clock as ours).
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.ci import ci_strict
from tests.integration.supervisor_proc import REPO, SupervisorProc, local_target

SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
# The last commit whose containers carry the order-sensitive hash (an ancestor of main).
PREVIOUS_RELEASE = "854d7ace907c55429408cb3b662a3534888dd56f"

ORDERED: dict[str, Any] = {
    "cap_add": ["NET_ADMIN", "SYS_TIME"],
    "cap_drop": ["MKNOD", "NET_RAW"],
    "devices": ["/dev/zero:/dev/zero2", "/dev/urandom:/dev/urandom2:r"],
    "volumes": ["data:/data", "cache:/cache", "/anon1", "/anon2",
                {"type": "volume", "source": "logs", "target": "/logs"},
                {"type": "tmpfs", "target": "/scratch"}],
    "tmpfs": ["/run1:size=1m", "/run2"],
    "extra_hosts": ["a.local:10.0.0.1", "b.local:10.0.0.2"],
    "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 500},
    "group_add": ["100", "101"],
    "security_opt": ["no-new-privileges", "seccomp=unconfined"],
    "dns_opt": ["ndots:2", "use-vc"],
    "network_mode": "front",
    "networks": {"front": {"aliases": ["x", "y"]}, "back": {}},
}


def reversed_lists(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, list):
            out[key] = list(reversed(value))
        elif key == "ulimits":
            out[key] = dict(reversed(list(value.items())))
        elif key == "networks":
            out[key] = {name: {"aliases": list(reversed(net.get("aliases", [])))}
                        for name, net in reversed(list(value.items()))}
        else:
            out[key] = value
    return out


def target(image: str, fields: dict[str, Any], *, release: int = 1,
           marker_running: bool = True) -> dict[str, Any]:
    main = {"image": image, "command": SLEEP, **copy.deepcopy(fields)}
    marker = {"image": image, "command": SLEEP, "running": marker_running}
    return local_target({"main": main, "marker": marker}, commit=f"c0ffee{release:02d}",
                        release_id=release, volumes={"data": {}, "cache": {}, "logs": {}},
                        networks={"front": {}, "back": {}})


def containers(client: docker.DockerClient) -> dict[str, Any]:
    out = {}
    for c in client.containers.list(all=True, filters={"label": "io.balena.supervised"}):
        out[c.labels["io.balena.service-name"]] = c
    return out


def running(client: docker.DockerClient) -> bool:
    found = containers(client)
    return set(found) == {"main", "marker"} and all(c.status == "running"
                                                    for c in found.values())


def create_destroy_since(client: docker.DockerClient, since_ns: int) -> list[tuple[str, str]]:
    """Create/destroy events of supervised containers after `since_ns` (the host clock)."""
    until = int(time.time()) + 1  # the engine closes the stream once `until` has passed
    out = []
    for event in client.events(since=since_ns // 1_000_000_000 - 1, until=until, decode=True,
                               filters={"type": "container", "label": "io.balena.supervised"}):
        if event.get("Action") in ("create", "destroy") and int(event["timeNano"]) > since_ns:
            out.append((event["Action"], event["Actor"]["Attributes"].get("name", "")))
    return out


def renamed(client: docker.DockerClient, release: int) -> bool:
    found = containers(client)
    return bool(found) and all(c.name.split("_")[2] == str(release) for c in found.values())


def test_a_target_that_only_reorders_recreates_nothing(sup: Any, docker_client: Any,
                                                      base_image: str) -> None:
    proc = sup(target(base_image, ORDERED))
    proc.wait_for(lambda: running(docker_client), what="main and marker running")
    before = {name: c.id for name, c in containers(docker_client).items()}
    host = containers(docker_client)["main"].attrs["HostConfig"]
    assert host["CapAdd"] == ["NET_ADMIN", "SYS_TIME"]  # the create body kept the user's order
    since = time.time_ns()

    # the same release, every list reversed; the marker's stop tells the round has run
    assert proc.post_target(target(base_image, reversed_lists(ORDERED),
                                   marker_running=False)).status_code == 200
    proc.wait_for(lambda: containers(docker_client)["marker"].status == "exited",
                  what="marker stopped")
    proc.wait_for(lambda: proc.status()["appState"] == "applied", what="applied")
    assert {name: c.id for name, c in containers(docker_client).items()} == before
    assert create_destroy_since(docker_client, since) == []

    # a new release of the reordered config: renamed in place, never recreated
    assert proc.post_target(target(base_image, ORDERED, release=2,
                                   marker_running=False)).status_code == 200
    proc.wait_for(lambda: renamed(docker_client, 2), what="renamed to release 2")
    assert {name: c.id for name, c in containers(docker_client).items()} == before
    assert create_destroy_since(docker_client, since) == []


def test_dns_order_counts(sup: Any, docker_client: Any, base_image: str) -> None:
    """dns is compared in order (§4.6): the control case, so the test above can fail."""
    dns = {"network_mode": "front", "networks": {"front": {}}, "dns": ["1.1.1.1", "8.8.8.8"]}
    proc = sup(target(base_image, dns))
    proc.wait_for(lambda: running(docker_client), what="running")
    first = containers(docker_client)["main"].id
    swapped = {**dns, "dns": ["8.8.8.8", "1.1.1.1"]}
    assert proc.post_target(target(base_image, swapped, release=2)).status_code == 200
    proc.wait_for(lambda: renamed(docker_client, 2) and running(docker_client),
                  what="release 2 running")
    main = containers(docker_client)["main"]
    assert main.id != first
    assert main.attrs["HostConfig"]["Dns"] == ["8.8.8.8", "1.1.1.1"]


# ---------------------------------------------------------------------------- upgrade

class PreviousRelease(SupervisorProc):
    """The supervisor as released before this rule: its code from git, run from its own dir."""

    def __init__(self, code: Path, root: Path, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.code = code

    def args(self) -> list[str]:
        # options added after that release would make its argument parser refuse to start
        argv = super().args()
        i = argv.index("--firewall")
        return argv[:i] + argv[i + 2:]

    def start(self, *, wait: bool = True) -> SupervisorProc:
        log = self.log_path.open("ab")
        # `python -m` puts the working directory first on sys.path: the old package wins
        self.proc = subprocess.Popen(self.args(), cwd=self.code, stdout=log,
                                     stderr=subprocess.STDOUT,
                                     env={"SUPERVISOR_LOG_LEVEL": "info", **os.environ})
        if wait:
            self.wait_ping()
        return self


def previous_release_code(dest: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE,
         "supervisor", "board-configs"], capture_output=True, check=False)
    if archive.returncode != 0:
        reason = f"git history with {PREVIOUS_RELEASE[:12]} is not available"
        if ci_strict():
            pytest.fail(f"{reason}: {archive.stderr.decode(errors='replace')}")
        pytest.skip(reason)
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_upgrading_the_supervisor_recreates_nothing(tmp_path: Path, docker_client: Any,
                                                   base_image: str) -> None:
    code = previous_release_code(tmp_path / "previous")
    probe = subprocess.run(
        [sys.executable, "-c", "import supervisor.model.spec as s; print(s.__file__); "
         "print('legacy_config_hash' in s.ContainerSpec.__dataclass_fields__)"],
        cwd=code, capture_output=True, text=True, check=True).stdout.split()
    assert probe == [str(code / "supervisor/model/spec.py"), "False"]  # really the old code

    root = tmp_path / "device"
    old = PreviousRelease(code, root, target=target(base_image, ORDERED))
    new = SupervisorProc(root, target=target(base_image, ORDERED))
    try:
        old.start()
        old.wait_for(lambda: running(docker_client), what="running under the old release")
        before = {name: c.id for name, c in containers(docker_client).items()}
        labels = {name: c.labels["io.balena.supervisor-py.config-hash"]
                  for name, c in containers(docker_client).items()}
        old.stop()
        assert old.proc is not None and old.proc.poll() is not None
        since = time.time_ns()

        new.start()
        # a new release of the same config: the new supervisor must rename, not recreate
        assert new.post_target(target(base_image, ORDERED, release=2)).status_code == 200
        new.wait_for(lambda: renamed(docker_client, 2) and running(docker_client),
                     what="renamed to release 2")
        after = containers(docker_client)
        assert {name: c.id for name, c in after.items()} == before
        assert {name: c.labels["io.balena.supervisor-py.config-hash"]
                for name, c in after.items()} == labels
        assert create_destroy_since(docker_client, since) == []
    finally:
        old.stop()
        new.stop()
