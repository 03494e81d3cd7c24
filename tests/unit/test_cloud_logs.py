"""The device log reaches the cloud stream: CloudLogs subscribes the LogStream to the LogHub
and applies local mode, SUPERVISOR_LOG_CONTROL and each service's BALENA_LOGS_LEVEL. The
stream's own sending is tested against the devcloud (tests/api/test_logstream.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from supervisor.cloud.cloudlogs import CloudLogs
from supervisor.cloud.logstream import LogStream, Timing
from supervisor.logs import LogHub, LogMessage
from supervisor.model.target import TargetState, parse_target

UUID = "u" * 32


def _target(config: dict[str, str], level: str) -> TargetState:
    env = {"BALENA_LOGS_LEVEL": level} if level else {}
    return parse_target({UUID: {"name": "d", "config": config, "apps": {"a" * 32: {
        "id": 1, "name": "app", "releases": {"c" * 32: {"id": 1, "services": {
            "main": {"id": 11, "image_id": 1, "image": "img", "environment": env,
                     "labels": {}}}}}}}}}, device_uuid=UUID)


def _line(text: str, stderr: bool = False) -> LogMessage:
    return LogMessage(message=text, timestamp=1, service_id=11, is_stderr=stderr)


class Holder:
    def __init__(self) -> None:
        self.target: TargetState | None = _target({}, "")
        self.local = False


def _logs(holder: Holder, hub: LogHub | None = None) -> CloudLogs:
    # a closed port and a long backoff: lines stay pending where the test can count them
    stream = LogStream(timing=Timing(backoff_base=300.0, backoff_max=300.0))
    logs = CloudLogs(hub or LogHub(), target=lambda: holder.target,
                     local_mode=lambda: holder.local, stream=stream)
    stream._logs_level = logs.logs_level  # as CloudLogs wires its own stream
    stream.set_credentials("http://127.0.0.1:9", UUID, "key")
    return logs


def test_local_mode_and_log_control_stop_lines_going_to_the_cloud() -> None:
    holder = Holder()
    logs = _logs(holder)
    assert logs.offer([_line("a"), LogMessage.system("b")]) == 2
    holder.local = True
    assert logs.offer([_line("c")]) == 0
    holder.local = False
    holder.target = _target({"RESIN_SUPERVISOR_LOG_CONTROL": "false"}, "")
    assert logs.offer([_line("d")]) == 0
    holder.target = _target({"BALENA_SUPERVISOR_LOG_CONTROL": "1"}, "")
    assert logs.offer([_line("e")]) == 1
    assert logs.stream.pending == 3


def test_a_services_logs_level_filters_its_lines() -> None:
    holder = Holder()
    logs = _logs(holder)
    holder.target = _target({}, "none")
    assert logs.offer([_line("x"), _line("y", stderr=True)]) == 0
    holder.target = _target({}, "err")
    assert logs.offer([_line("x"), _line("y", stderr=True)]) == 1
    assert logs.logs_level(99) == ""


def test_run_forwards_what_the_hub_publishes() -> None:
    async def scenario() -> Any:
        hub = LogHub()
        logs = _logs(Holder(), hub)
        task = asyncio.create_task(logs.run("http://127.0.0.1:9", UUID, "key"))
        for _ in range(200):
            if hub.subscribers:
                break
            await asyncio.sleep(0.01)
        hub.publish_many([_line("one"), _line("two"), LogMessage.system("three")])
        for _ in range(500):
            if logs.stream.pending == 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await logs.close()
        return logs.stream.pending

    assert asyncio.run(scenario()) == 3
