"""The devcloud as a subprocess on a free 127.0.0.1 port, for tests of the agent's cloud
clients on a real socket (log stream, registry tokens). One fleet, one registered device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from supervisor.devcloud.cli import Client

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll `check` until it is truthy (a condition, never a duration); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cloud:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    uuid: str = "feed" * 8
    key: str = "k" * 32
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.data_dir / "devcloud.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.devcloud", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=REPO, env={**os.environ, **self.env})
        log.close()
        wait_for(self._answers, "the devcloud to answer")

    def _answers(self) -> bool:
        try:
            return bool(self.client().call("GET", "/ping") == "OK")
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def client(self) -> Client:
        return Client(self.url, (self.data_dir / "admin-token").read_text().strip())

    def register(self) -> None:
        """A fleet with a release naming service ids, and our device in it."""
        client = self.client()
        client.call("POST", "/admin/fleets", {"name": "logs"})
        client.call("POST", "/admin/fleets/logs/releases", {"services": {
            "main": {"image": "busybox"}, "quiet": {"image": "busybox"},
            "errors": {"image": "busybox"}}})
        key = client.call("POST", "/admin/fleets/logs/provisioning-keys")
        Client(self.url, key["key"]).call("POST", "/device/register", {
            "application": key["applicationId"], "uuid": self.uuid, "api_key": self.key,
            "device_type": key["deviceType"]})

    def service_ids(self) -> dict[str, int]:
        target = self.client().call("GET", f"/admin/devices/{self.uuid}")["target"]
        services = next(iter(next(iter(target[self.uuid]["apps"].values()))
                             ["releases"].values()))["services"]
        return {name: svc["id"] for name, svc in services.items()}

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.client().lines(f"/devices/{self.uuid}/logs")]

    def messages(self) -> list[str]:
        return [e["message"] for e in self.logs()]
