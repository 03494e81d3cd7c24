"""Logs, events and the plan seen through a real supervisor's HTTP API during real updates."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.integration.dockerkit import push_random_image
from tests.integration.supervisor_proc import SupervisorProc, local_target

# sh as PID 1 ignores SIGTERM: trap it, or every stop waits the full 10 s grace period
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def reader(url: str, lines: queue.Queue[str], stop: threading.Event, *,
           stall: threading.Event | None = None) -> threading.Thread:
    """Read a streaming endpoint line by line on a thread; with `stall`, read one line and
    then nothing until `stall` is set (a reader that stopped reading)."""

    def run() -> None:
        with httpx.stream("GET", url, timeout=None) as resp:
            for line in resp.iter_lines():
                lines.put(line)
                if stop.is_set():
                    return
                if stall is not None:
                    stall.wait()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_line(lines: queue.Queue[str], predicate: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if predicate(line):
            return line
    raise AssertionError("expected line never came")


def test_log_stream_shows_lines_printed_after_it_opened(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    marker = f"marker-{os.getpid()}-{time.time_ns()}"
    proc = SupervisorProc(tmp_path / "sup").start()
    stop = threading.Event()
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader(f"http://127.0.0.1:{proc.port}/v2/local/logs", lines, stop)
        cmd = ["sh", "-c", f"sleep 2; echo {marker}; while true; do sleep 1; done"]
        proc.post_target(local_target({"printer": {"image": base_image, "command": cmd}}))
        line = wait_line(lines, lambda x: marker in x, timeout=60)
        entry = json.loads(line)
        assert entry["serviceName"] == "printer" and entry["message"] == marker
    finally:
        stop.set()
        proc.stop()


def test_slow_log_reader_does_not_delay_an_apply(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    noisy = ["sh", "-c", "while true; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done"]
    proc = SupervisorProc(tmp_path / "sup").start()
    stop = threading.Event()
    try:
        proc.post_target(local_target({"noisy": {"image": base_image, "command": noisy}}))
        proc.wait_for(lambda: proc.status()["appState"] == "applied"
                      and proc.status()["containers"], what="noisy running")
        slow: queue.Queue[str] = queue.Queue()
        resume = threading.Event()
        reader(f"http://127.0.0.1:{proc.port}/v2/local/logs", slow, stop, stall=resume)
        wait_line(slow, lambda x: True, timeout=60)  # open, and now it stops reading
        proc.post_target(local_target({
            "noisy": {"image": base_image, "command": noisy},
            "quiet": {"image": base_image, "command": SLEEP},
        }, commit="c0ffee02", release_id=2))
        proc.wait_for(lambda: any(c["serviceName"] == "quiet" and c["status"] == "Running"
                                  for c in proc.status()["containers"]), what="quiet running",
                      timeout=60)
        assert proc.client.get("/ping", timeout=30).text == "OK"
        # the stalled reader's queue did overflow: reading again, it is told what it lost
        resume.set()
        wait_line(slow, lambda x: "log lines dropped: this reader is too slow" in x,
                  timeout=60)
    finally:
        stop.set()
        proc.stop()


def test_plan_is_empty_when_settled_and_lists_steps_when_blocked(
    tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    proc = SupervisorProc(tmp_path / "sup").start()
    try:
        proc.post_target(local_target({"a": {"image": base_image, "command": SLEEP}}))
        proc.wait_for(lambda: proc.status()["appState"] == "applied"
                      and proc.status()["containers"], what="settled")
        assert proc.client.get("/v2/plan").json()["steps"] == []
        (container,) = docker_client.containers.list(filters={"label": "io.balena.supervised"})
        container.exec_run(["touch", "/tmp/balena/updates.lock"])
        proc.post_target(local_target({"a": {"image": base_image, "command": SLEEP,
                                             "environment": {"V": "2"}}},
                                      commit="c0ffee02", release_id=2))
        steps = proc.wait_for(lambda: proc.client.get("/v2/plan").json()["steps"],
                              what="a plan", timeout=20)
        assert steps[0]["action"] == "takeLock" and steps[0]["appId"] == 1
    finally:
        proc.stop()


def test_events_show_downloading_installing_running(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    image = push_random_image(docker_client, "balena-py/sse", 40, tag=f"t{time.time_ns()}")
    proc = SupervisorProc(tmp_path / "sup").start()
    stop = threading.Event()
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader(f"http://127.0.0.1:{proc.port}/v2/events", lines, stop)
        proc.post_target(local_target({"a": {"image": image, "command": SLEEP}}))
        statuses: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Running" not in statuses:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if data.get("serviceName") == "a" and "status" in data and (
                not statuses or statuses[-1] != data["status"]
            ):
                statuses.append(data["status"])
        assert "Running" in statuses, statuses
        order = [s for s in statuses if s in ("Downloading", "Installing", "Running")]
        assert order.index("Downloading") < order.index("Installing") < order.index("Running")
    finally:
        stop.set()
        proc.stop()
        docker_client.images.remove(image, force=True)
