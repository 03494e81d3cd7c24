"""A fleet of two real supervisors managed by the devcloud, all on 127.0.0.1.

The devcloud runs as a subprocess; each device is a `balena-supervisor run` subprocess with
its own data/boot/state/locks dirs, API port and engine (the main engine and the second one,
`ENGINE_NAME=dev2 scripts/engine.sh up`). The devices provision with a provisioning key, and a
release pushed to the fleet must converge on both; the devcloud's API proxy must reach them;
a cloud outage must leave them running, and they catch up when it is back; a device restarted
while the cloud is down must run its cached target.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from supervisor.devcloud.cli import Client
from tests.integration import dockerkit

SUPERVISOR = dockerkit.REPO_ROOT / ".venv" / "bin" / "balena-supervisor"
POLL_MS = 3000
CONVERGE_S = 150.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(check: Callable[[], Any], what: str, timeout: float,
          logs: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as err:  # the cloud or a device may be restarting: try again
            last = err
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{logs()}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class DevCloud:
    data_dir: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.devcloud", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=dockerkit.REPO_ROOT)
        _wait(lambda: self.client().call("GET", "/ping") == "OK", "the devcloud to answer", 30,
              lambda: _tail(self.log))

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def client(self) -> Client:
        token = (self.data_dir / "admin-token").read_text().strip()
        return Client(self.url, token)


@dataclass
class Device:
    name: str
    root: Path
    port: int
    docker_host: str
    engine: docker.DockerClient
    proc: subprocess.Popen[bytes] | None = None
    dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.dirs["boot"] / "config.json").read_text()))

    @property
    def uuid(self) -> str:
        return str(self.config["uuid"])

    def prepare(self, cloud: DevCloud, fleet: str) -> None:
        for name in ("data", "boot", "state", "locks"):
            self.dirs[name] = self.root / name
            self.dirs[name].mkdir(parents=True, exist_ok=True)
        (self.root / "led").write_text("0")
        key = cloud.client().call("POST", f"/admin/fleets/{fleet}/provisioning-keys")
        config = {"apiEndpoint": cloud.url, "applicationId": key["applicationId"],
                  "apiKey": key["key"], "deviceType": key["deviceType"], "listenPort": self.port,
                  "appUpdatePollInterval": POLL_MS, "bootstrapRetryDelay": 2000}
        (self.dirs["boot"] / "config.json").write_text(json.dumps(config))

    def start(self) -> None:
        d = self.dirs
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        self.proc = subprocess.Popen(
            [str(SUPERVISOR), "run", "--data-dir", str(d["data"]), "--boot-dir", str(d["boot"]),
             "--state-dir", str(d["state"]), "--locks-dir", str(d["locks"]),
             "--listen", f"127.0.0.1:{self.port}", "--docker-host", self.docker_host,
             "--host-actions", "dry-run", "--firewall", "dry-run",
             "--led-file", str(self.root / "led"),
             "--blink-seconds", "1"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.root)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def api_key(self) -> str:
        out = subprocess.run([str(SUPERVISOR), "api-key", "--data-dir", str(self.dirs["data"])],
                             capture_output=True, text=True, check=True, timeout=30)
        return out.stdout.strip()

    def running_commits(self) -> set[str]:
        """Commits of this device's running supervised containers, read from its engine
        (container names are `<service>_<imageId>_<releaseId>_<commit>`)."""
        found = self.engine.containers.list(filters={"label": dockerkit.SUPERVISED_LABEL})
        return {container.name.rsplit("_", 1)[-1] for container in found}


@dataclass
class Fleet:
    cloud: DevCloud
    name: str
    app_id: int
    devices: list[Device]

    def logs(self) -> str:
        parts = [f"--- devcloud\n{_tail(self.cloud.log)}"]
        parts += [f"--- {d.name}\n{_tail(d.log)}" for d in self.devices]
        return "\n".join(parts)

    def push(self, release: dict[str, Any]) -> str:
        pushed = self.cloud.client().call("POST", f"/admin/fleets/{self.name}/releases", release)
        return str(pushed["commit"])

    def violations(self) -> list[str]:
        """The openBalena rules the devices broke (supervisor/devcloud/openbalena.py)."""
        return list(self.cloud.client().call("GET", "/admin/violations"))

    def device_rows(self) -> dict[str, dict[str, Any]]:
        return {row["uuid"]: row for row in self.cloud.client().call("GET", "/admin/devices")}

    def all_done(self, commit: str) -> bool:
        rows = self.device_rows()
        return all(
            d.uuid in rows and rows[d.uuid]["release"] == commit
            and rows[d.uuid]["update_status"].get(commit) == "done"
            for d in self.devices)

    def wait_done(self, commit: str, what: str) -> None:
        _wait(lambda: self.all_done(commit), what, CONVERGE_S, self.logs)

    def wait_running(self, device: Device, commit: str, what: str,
                     timeout: float = CONVERGE_S) -> None:
        _wait(lambda: device.running_commits() == {commit}, what, timeout, self.logs)


def _release(image: str, word: str) -> dict[str, Any]:
    return {"services": {"main": {
        "image": image,
        "command": ["sh", "-c", f"while true; do echo {word}; sleep 5; done"],
        "network_mode": "host",
        "environment": {"WORD": word},
    }}}


@pytest.fixture
def fleet(tmp_path: Path, docker_client: docker.DockerClient, docker_host: str,
          base_image: str) -> Iterator[Fleet]:
    dev2_host = dockerkit.start_engine("dev2")
    dev2 = dockerkit.connect(dev2_host)
    dockerkit.cleanup_supervised(dev2)
    cloud = DevCloud(tmp_path / "cloud", _free_port(), tmp_path / "devcloud.log")
    devices = [
        Device("device1", tmp_path / "device1", _free_port(), docker_host, docker_client),
        Device("device2", tmp_path / "device2", _free_port(), dev2_host, dev2),
    ]
    try:
        cloud.start()
        created = cloud.client().call("POST", "/admin/fleets", {"name": "fleet1"})
        for device in devices:
            device.prepare(cloud, "fleet1")
            device.start()
        result = Fleet(cloud, "fleet1", int(created["id"]), devices)
        _wait(lambda: all(d.config.get("deviceId") for d in devices),
              "both devices to provision", 60, result.logs)
        yield result
    finally:
        for device in devices:
            device.stop()
        cloud.stop()
        dockerkit.cleanup_supervised(dev2)
        dev2.close()


@pytest.fixture
def private_image(fleet: Fleet, tmp_path: Path, docker_client: docker.DockerClient,
                  base_image: str) -> Iterator[str]:
    """The base image in a `docker-registry` with token auth whose tokens the devcloud signs
    (supervisor/devcloud/registry.py), as openBalena's registry: pushed by the admin, the
    local tag removed, so a device pulls it only with its own `d_<uuid>` credentials."""
    binary = shutil.which("docker-registry")
    if binary is None:
        dockerkit.unavailable("docker-registry is not installed")
    root = tmp_path / "token-registry"
    root.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    (root / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / "data"}
http:
  addr: {address}
  secret: test-token-registry
auth:
  token:
    realm: {fleet.cloud.url}/auth/v1/token
    service: {address}
    issuer: devcloud
    rootcertbundle: {fleet.cloud.data_dir / "registry-cert.pem"}
""")
    log = (root / "registry.log").open("ab")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ref = f"{address}/{fleet.name}/private:latest"
    try:
        _wait(lambda: _http_status(f"http://{address}/v2/") == 401, "the token registry", 60,
              lambda: _tail(root / "registry.log"))
        docker_client.images.get(base_image).tag(ref)
        token = (fleet.cloud.data_dir / "admin-token").read_text().strip()
        out = docker_client.images.push(ref, auth_config={"username": "admin",
                                                          "password": token})
        assert "error" not in out.lower(), out
        docker_client.images.remove(ref)
        with pytest.raises(docker.errors.APIError):  # private: no anonymous pull
            docker_client.images.pull(ref)
        yield ref
    finally:
        for device in fleet.devices:  # untagged (force: its containers may still exist)
            with contextlib.suppress(docker.errors.DockerException):
                device.engine.images.remove(ref, force=True)
        proc.terminate()
        proc.wait(30)
        log.close()


def _http_status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.timeout(400)
def test_a_release_converges_on_both_devices_and_the_proxy_reaches_them(
        fleet: Fleet, private_image: str) -> None:
    for device in fleet.devices:
        config = device.config
        assert "apiKey" not in config, "the provisioning key must be dropped once registered"
        assert config["registered_at"] and config["deviceApiKey"]

    # a private release: each device pulls it with its own d_<uuid> credentials
    commit = fleet.push(_release(private_image, "hello"))
    fleet.wait_done(commit, f"both devices to report {commit} done")
    for device in fleet.devices:
        fleet.wait_running(device, commit, f"{device.name} to run {commit}", 30)
        container = device.engine.containers.list(
            filters={"label": dockerkit.SUPERVISED_LABEL})[0]
        assert "WORD=hello" in container.attrs["Config"]["Env"]

    rows = fleet.device_rows()
    client = fleet.cloud.client()

    def logged(uuid: str) -> bool:
        return any(e.get("message") == "hello" and e.get("serviceName") == "main"
                   for e in client.call("GET", f"/admin/devices/{uuid}/logs"))

    for device in fleet.devices:  # the device log streams to the cloud (cloud/cloudlogs.py)
        _wait(functools.partial(logged, device.uuid), f"{device.name}'s log in the cloud", 60,
              fleet.logs)
    for device in fleet.devices:
        row = rows[device.uuid]
        detail = client.call("GET", f"/admin/devices/{device.uuid}")
        assert row["api_port"] == device.port
        assert detail["state"]["api_secret"] == device.api_key()
        app = detail["state"]["apps"][detail["target"][device.uuid]["apps"].popitem()[0]]
        assert app["releases"][commit]["services"]["main"]["status"] == "Running"

        assert client.call("POST", "/supervisor/ping",
                           {"uuid": device.uuid, "method": "GET"}) == "OK"
        info = client.call("POST", "/supervisor/v1/device",
                           {"deviceId": row["id"], "method": "GET"})
        assert info["api_port"] == device.port
        assert info["commit"] == commit

    # openBalena's proxy: the device called with ?apikey=<api_secret>, a fleet-wide call
    # answered 207 with [{statusCode, body}]
    results = client.call("POST", "/supervisor/v1/blink", {"appId": fleet.app_id})
    assert len(results) == 2 and all(r["statusCode"] == 200 for r in results), results
    pings = client.call("POST", "/supervisor/ping", {"appId": fleet.app_id, "method": "GET"})
    assert [p["body"] for p in pings] == ["OK", "OK"]

    # tags: the device API refuses a reserved key (openBalena would); the others reach the cloud
    device = fleet.devices[0]
    api = f"http://127.0.0.1:{device.port}/v2/device/tags"
    key = {"Authorization": f"Bearer {device.api_key()}"}
    refused = httpx.patch(api, json={"room": "lab", "io.balena.x": "1"}, headers=key)
    assert refused.status_code == 400
    assert httpx.patch(api, json={"room": "lab", "floor": "2"}, headers=key).status_code == 202
    _wait(lambda: client.call("GET", f"/admin/devices/{device.uuid}")["tags"] ==
          {"room": "lab", "floor": "2"}, "the tags to reach the cloud", 60, fleet.logs)
    assert fleet.violations() == []
    assert "Failed to report current state" not in device.log.read_text(errors="replace")


@pytest.mark.timeout(400)
def test_devices_ride_out_a_cloud_outage_and_boot_offline_from_the_cache(
        fleet: Fleet, base_image: str) -> None:
    first = fleet.push(_release(base_image, "one"))
    fleet.wait_done(first, "the first release to converge")

    pushed_at = time.time()
    second = fleet.push(_release(base_image, "two"))

    def polled_since_push() -> bool:
        rows = fleet.device_rows()
        return all(rows[d.uuid]["last_poll"] and
                   _epoch(rows[d.uuid]["last_poll"]) > pushed_at for d in fleet.devices)

    _wait(polled_since_push, "both devices to fetch the new target", 60, fleet.logs)
    fleet.cloud.stop()  # the cloud goes away while the devices apply the new release

    for device in fleet.devices:
        fleet.wait_running(device, second, f"{device.name} to apply {second} offline")
        assert device.proc is not None and device.proc.poll() is None, f"{device.name} died"

    fleet.cloud.start()
    fleet.wait_done(second, "the devices to report the new release once the cloud is back")

    # A device restarted with the cloud down runs its cached target.
    device = fleet.devices[1]
    device.stop()
    fleet.cloud.stop()
    for container in device.engine.containers.list(
            all=True, filters={"label": dockerkit.SUPERVISED_LABEL}):
        container.remove(force=True)
    assert device.running_commits() == set()
    device.start()
    fleet.wait_running(device, second, f"{device.name} to run its cached target offline")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.timeout(400)
def test_a_host_network_service_calls_the_api_with_its_scoped_key(
        fleet: Fleet, base_image: str) -> None:
    script = (
        'sleep 1; echo "ADDR=$BALENA_SUPERVISOR_ADDRESS HOST=$BALENA_SUPERVISOR_HOST '
        'PORT=$BALENA_SUPERVISOR_PORT RESIN=$RESIN_SUPERVISOR_ADDRESS"; '
        'echo "DEVICE=$(wget -qO- "$BALENA_SUPERVISOR_ADDRESS/v1/device?apikey='
        '$BALENA_SUPERVISOR_API_KEY")"; '
        'wget -qO- "$BALENA_SUPERVISOR_ADDRESS/v1/device?apikey=notakey" || echo DENIED; '
        "while true; do sleep 5; done")
    release = {"services": {"main": {
        "image": base_image, "command": ["sh", "-c", script], "network_mode": "host",
        "labels": {"io.balena.features.supervisor-api": "1"}}}}
    commit = fleet.push(release)
    device = fleet.devices[0]
    fleet.wait_running(device, commit, "the API-calling service to run")

    def output() -> str:
        containers = device.engine.containers.list(
            filters={"label": dockerkit.SUPERVISED_LABEL})
        return containers[0].logs().decode() if containers else ""

    logs = _wait(lambda: (out := output()) and "DENIED" in out and out, "the service's calls",
                 60, fleet.logs)
    port = device.port
    assert f"ADDR=http://127.0.0.1:{port} HOST=127.0.0.1 PORT={port}" in logs
    assert f"RESIN=http://127.0.0.1:{port}" in logs
    line = next(x for x in logs.splitlines() if x.startswith("DEVICE="))
    body = json.loads(line[len("DEVICE="):])
    assert body["api_port"] == port and body["commit"] == commit
    container = device.engine.containers.list(filters={"label": dockerkit.SUPERVISED_LABEL})[0]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    scoped = env["BALENA_SUPERVISOR_API_KEY"]
    assert scoped != device.api_key() and len(scoped) == 32
    assert env["RESIN_SUPERVISOR_API_KEY"] == scoped


@pytest.mark.timeout(400)
def test_local_mode_from_the_cloud_and_back(fleet: Fleet, base_image: str) -> None:
    commit = fleet.push(_release(base_image, "cloud"))
    fleet.wait_done(commit, "the cloud release to converge")
    device = fleet.devices[0]
    client = fleet.cloud.client()
    api = f"http://127.0.0.1:{device.port}"

    # managed: the local target endpoint needs a key and refuses to work outside local mode
    assert httpx.get(f"{api}/v2/local/target-state").status_code == 401
    client.call("PUT", f"/admin/devices/{device.uuid}/config/SUPERVISOR_LOCAL_MODE",
                {"value": "1"})
    _wait(lambda: httpx.get(f"{api}/v2/local/target-state").status_code == 200,
          "local mode (no key needed)", 60, fleet.logs)
    local = {"local": {"name": "local", "config": {}, "apps": {"7": {
        "name": "pushed", "commit": "localc0mmit", "releaseId": 1, "services": {"1": {
            "serviceName": "pushed", "imageId": 1, "image": base_image,
            "command": ["sh", "-c", "while true; do sleep 5; done"], "network_mode": "host",
            "environment": {}, "labels": {}}}}}}}
    assert httpx.post(f"{api}/v2/local/target-state", json=local).status_code == 200
    fleet.wait_running(device, "localc0mmit", "the local target to run")

    # the local release is never reported: openBalena refuses the whole report naming it
    # (401, recorded as a violation), which would stop status/IP updates for good
    detail = fleet.cloud.client().call("GET", f"/admin/devices/{device.uuid}")
    assert "localc0mmit" not in json.dumps(detail["state"])
    assert fleet.violations() == []
    assert "Failed to report current state" not in device.log.read_text(errors="replace")

    # leaving local mode restores the cloud target
    client.call("DELETE", f"/admin/devices/{device.uuid}/config/SUPERVISOR_LOCAL_MODE")
    fleet.wait_running(device, commit, "the cloud target to come back")
    assert httpx.get(f"{api}/v2/local/target-state").status_code == 401
    fleet.wait_done(commit, "the cloud release reported again after local mode")
    assert fleet.violations() == []
    assert "Failed to report current state" not in device.log.read_text(errors="replace")
