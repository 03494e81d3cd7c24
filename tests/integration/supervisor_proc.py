"""Run a real `balena-supervisor run` process for a test, on 127.0.0.1 and a free port.

Each process gets its own data, boot, state and locks dirs under the test's tmp_path, talks to
the engine at DOCKER_HOST, and is driven through its real HTTP API (local mode: no API key).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker.errors
import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SupervisorProc:
    def __init__(self, root: Path, *, target: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None, port: int | None = None,
                 docker_host: str | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.docker_host = docker_host or os.environ["DOCKER_HOST"]
        for sub in ("data", "boot", "state", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        if config is not None:
            (root / "boot" / "config.json").write_text(json.dumps(config))
        self.target_file: Path | None = None
        if target is not None:
            self.target_file = root / "target.json"
            self.target_file.write_text(json.dumps(target))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "supervisor.log"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def args(self) -> list[str]:
        argv = [
            sys.executable, "-m", "supervisor", "run",
            "--data-dir", str(self.root / "data"), "--boot-dir", str(self.root / "boot"),
            "--state-dir", str(self.root / "state"), "--locks-dir", str(self.root / "locks"),
            "--listen", f"127.0.0.1:{self.port}", "--host-actions", "dry-run",
            "--firewall", "dry-run",
            "--docker-host", self.docker_host, "--blink-seconds", "0.5",
        ]
        if self.target_file is not None:
            argv += ["--local-target", str(self.target_file)]
        return argv

    def start(self, *, wait: bool = True) -> SupervisorProc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     env={"SUPERVISOR_LOG_LEVEL": "info", **os.environ})
        if wait:
            self.wait_ping()
        return self

    def wait_ping(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited early:\n{self.log()}")
            try:
                if self.client.get("/ping").text == "OK":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"supervisor did not answer /ping:\n{self.log()}")

    def log(self, tail: int | None = 6000) -> str:
        """The process's output: its end (what a failure message shows), or all of it."""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/v2/state/status").json())

    def post_target(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.post("/v2/local/target-state", json=body)

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except (httpx.HTTPError, json.JSONDecodeError, docker.errors.NotFound):
                # not answering yet, or a container vanished between list and inspect; a
                # missing field (KeyError) is a broken body: it fails at once, not at the limit
                last = None
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited after a grace: a hung shutdown must not
        hang the test session."""
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        self.client.close()


def local_target(services: dict[str, dict[str, Any]], *, app_id: int = 1, commit: str = "c0ffee01",
                 release_id: int = 1, name: str = "testapp",
                 volumes: dict[str, Any] | None = None,
                 networks: dict[str, Any] | None = None) -> dict[str, Any]:
    """A v2 local target (what balena-cli posts) from {serviceName: compose-ish dict}."""
    svcs = {}
    for index, (svc_name, svc) in enumerate(services.items(), start=1):
        entry = {"serviceName": svc_name, "imageId": svc.pop("imageId", index),
                 "environment": svc.pop("environment", {}), "labels": svc.pop("labels", {}),
                 **svc}
        svcs[str(svc.pop("serviceId", index))] = entry
    return {"local": {"name": "test-device", "config": {}, "apps": {str(app_id): {
        "name": name, "commit": commit, "releaseId": release_id, "services": svcs,
        "volumes": volumes or {}, "networks": networks or {}}}}}
