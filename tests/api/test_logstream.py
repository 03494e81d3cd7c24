"""The cloud log stream against the real devcloud (a subprocess on 127.0.0.1): gzip NDJSON on
one long-lived POST, device-key auth, truncation, filters, suppression, the idle close, and
reconnecting with backoff while the devcloud is stopped and restarted. Every wait is for a
condition; the stream's timings are shrunk (injected), never measured."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.cloud.logstream import (
    LogStream,
    Timing,
    backoff_delay,
    passes_level,
    truncate,
    wire_object,
)
from supervisor.logs import LogMessage
from tests.api.devcloud_proc import REPO, Cloud, free_port, wait_for

FAST = Timing(backoff_base=0.05, backoff_max=0.4, grace=0.05, idle=300.0,
              flush_interval=0.1, io_timeout=10.0)


@pytest.fixture
def stream(cloud: Cloud) -> Iterator[LogStream]:
    made = LogStream(timing=FAST)
    made.set_credentials(cloud.url, cloud.uuid, cloud.key)
    made.start()
    yield made
    made.stop()


def system(text: str, stderr: bool = False) -> LogMessage:
    return LogMessage.system(text, is_stderr=stderr)


def service(text: str, service_id: int | None, stderr: bool = False) -> LogMessage:
    return LogMessage(message=text, timestamp=1_700_000_000_000, is_stderr=stderr,
                      service_name="ignored", service_id=service_id, app_id=1, image_id=2)


def marker(stream: LogStream, cloud: Cloud, text: str) -> list[dict[str, Any]]:
    """Send a last line and wait for it: everything offered before has been handled."""
    assert stream.offer(system(text))
    wait_for(lambda: text in cloud.messages(), f"{text!r} in the devcloud")
    return cloud.logs()


# ---------------------------------------------------------------------------- pure parts

def test_truncation_keeps_ten_thousand_characters() -> None:
    assert truncate("x" * 10_000) == "x" * 10_000
    cut = truncate("y" * 10_001)
    assert len(cut) == 10_000 and cut == "y" * 9_995 + "[...]"


def test_wire_objects_are_the_specs() -> None:
    boot = LogMessage.system("boot", is_stderr=True, timestamp=1_700_000_000_001)
    assert wire_object(boot) == {"message": "boot", "isSystem": True,
                                 "timestamp": 1_700_000_000_001, "isStdErr": True}
    up = LogMessage.system("up", timestamp=5)
    assert wire_object(up) == {"message": "up", "isSystem": True, "timestamp": 5}
    assert wire_object(service("hi", 7, stderr=True)) == {
        "message": "hi", "isStdErr": True, "timestamp": 1_700_000_000_000, "serviceId": 7}
    assert wire_object(service("lost", None)) is None


@pytest.mark.parametrize(("level", "stdout", "stderr"), [
    ("", True, True), ("info", True, True), ("none", False, False), ("NONE", False, False),
    ("err", False, True), ("error", False, True)])
def test_logs_level(level: str, stdout: bool, stderr: bool) -> None:
    assert passes_level(level, False) is stdout
    assert passes_level(level, True) is stderr


def test_backoff_doubles_from_five_seconds_up_to_five_minutes() -> None:
    assert [backoff_delay(n, Timing()) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_delay(10_000, Timing()) == 300


def test_gates_drop_before_provisioning_in_local_mode_and_without_log_control() -> None:
    stream = LogStream(timing=FAST)  # never started: only the gates are exercised
    assert not stream.offer(system("not provisioned"))
    stream.set_credentials("http://127.0.0.1:9", "u", None)
    assert not stream.offer(system("no key yet"))
    stream.set_credentials("http://127.0.0.1:9", "u", "k")
    assert stream.offer(system("kept"))
    stream.set_local_mode(True)
    assert not stream.offer(system("local mode"))
    stream.set_local_mode(False)
    stream.set_log_control(False)
    assert not stream.offer(system("log control off"))
    stream.set_log_control(True)
    assert not stream.offer(service("no service id", None))
    assert stream.offer(service("with id", 3))
    assert stream.pending == 2
    stream.set_credentials(None, None, None)  # deprovisioned: what was kept goes too
    assert stream.pending == 0
    stream.stop()


# ---------------------------------------------------------------------------- on the wire

def test_lines_arrive_gzipped_on_one_open_stream(stream: LogStream, cloud: Cloud) -> None:
    ids = cloud.service_ids()
    assert stream.offer(service("hello out", ids["main"]))
    assert stream.offer(service("hello err", ids["main"], stderr=True))
    assert stream.offer(system("Supervisor starting"))
    wait_for(lambda: "Supervisor starting" in cloud.messages(), "the lines")
    got = {e["message"]: e for e in cloud.logs()}
    assert got["hello out"] == {"message": "hello out", "timestamp": 1_700_000_000_000,
                                "serviceId": ids["main"], "serviceName": "main",
                                "isStdErr": False}
    assert got["hello err"]["isStdErr"] is True
    assert got["Supervisor starting"]["isSystem"] is True
    # the lines were readable while the gzip stream is still open: sync flushes
    assert stream.connected and stream.sessions == 1 and stream.failures_total == 0


def test_truncation_and_filters_on_the_wire(cloud: Cloud) -> None:
    ids = cloud.service_ids()
    levels = {ids["quiet"]: "none", ids["errors"]: "err"}
    stream = LogStream(timing=FAST, logs_level=lambda sid: levels.get(sid, ""))
    stream.set_credentials(cloud.url, cloud.uuid, cloud.key)
    stream.start()
    try:
        stream.offer_many([
            service("z" * 12_000, ids["main"]),
            service("quiet out", ids["quiet"]), service("quiet err", ids["quiet"], True),
            service("errors out", ids["errors"]), service("errors err", ids["errors"], True),
            service("anonymous", None),
        ])
        logs = marker(stream, cloud, "filters done")
    finally:
        stream.stop()
    messages = [e["message"] for e in logs]
    assert "z" * 9_995 + "[...]" in messages
    assert "errors err" in messages
    for dropped in ("quiet out", "quiet err", "errors out", "anonymous"):
        assert dropped not in messages


def test_refused_key_keeps_the_lines_until_a_good_one(cloud: Cloud) -> None:
    # A grace long enough for the 401 to come back on a loaded machine: with a grace shorter
    # than the answer, data would flow into the refused stream (by design, as upstream's).
    stream = LogStream(timing=Timing(backoff_base=0.05, backoff_max=0.4, grace=3.0,
                                     idle=300.0, flush_interval=0.1, io_timeout=10.0))
    stream.set_credentials(cloud.url, cloud.uuid, "wrong" * 6)
    stream.start()
    try:
        stream.offer(system("kept through a 401"))
        wait_for(lambda: stream.failures_total >= 2, "the devcloud to refuse twice")
        assert stream.pending == 1  # nothing flowed into a refused stream
        stream.set_credentials(cloud.url, cloud.uuid, cloud.key)
        wait_for(lambda: "kept through a 401" in cloud.messages(), "the line")
    finally:
        stream.stop()


def test_a_broken_endpoint_does_not_end_streaming(cloud: Cloud) -> None:
    stream = LogStream(timing=FAST)
    stream.set_credentials("http://[::1", cloud.uuid, cloud.key)  # urlsplit raises
    stream.start()
    try:
        stream.offer(system("after a broken endpoint"))
        wait_for(lambda: stream.failures_total >= 2, "failed attempts")
        stream.set_credentials(cloud.url, cloud.uuid, cloud.key)
        wait_for(lambda: "after a broken endpoint" in cloud.messages(), "the line")
    finally:
        stream.stop()


def test_idle_stream_is_closed_and_reopened(cloud: Cloud) -> None:
    stream = LogStream(timing=Timing(backoff_base=0.05, backoff_max=0.4, grace=0.05,
                                     idle=0.3, flush_interval=0.1, io_timeout=10.0))
    stream.set_credentials(cloud.url, cloud.uuid, cloud.key)
    stream.start()
    try:
        stream.offer(system("before idle"))
        wait_for(lambda: "before idle" in cloud.messages(), "the first line")
        wait_for(lambda: not stream.connected, "the idle close")
        stream.offer(system("after idle"))
        wait_for(lambda: "after idle" in cloud.messages(), "the second line")
        assert stream.sessions == 2 and stream.failures_total == 0
    finally:
        stream.stop()


def test_reconnect_after_the_devcloud_restarts_with_suppression(
        cloud: Cloud, tmp_path: Path) -> None:
    own = Cloud(tmp_path, free_port())
    own.start()
    own.register()
    stream = LogStream(timing=FAST, max_pending=20 * 100)  # about 20 short lines
    stream.set_credentials(own.url, own.uuid, own.key)
    stream.start()
    try:
        marker(stream, own, "before the outage")
        own.stop()
        wait_for(lambda: not stream.connected, "the stream to notice")
        offered = [system(f"during outage {i}") for i in range(60)]
        kept = stream.offer_many(offered)
        assert 0 < kept < 60
        wait_for(lambda: stream.failures_total >= 3, "failed reconnects")
        own.start()
        logs = wait_for(lambda: [e for e in own.logs()
                                 if e["message"].startswith("Warning: Suppressed")] and own.logs(),
                        "the lines kept during the outage")
    finally:
        stream.stop()
        own.stop()
    messages = [e["message"] for e in logs]
    assert messages[:kept] == [f"during outage {i}" for i in range(kept)]
    warning = logs[kept]
    assert warning["message"] == f"Warning: Suppressed {60 - kept} message(s) due to high load"
    assert warning["isSystem"] is True and warning["isStdErr"] is True


# ---------------------------------------------------------------------------- the CLI

def test_devcloud_logs_command_prints_and_follows(stream: LogStream, cloud: Cloud) -> None:
    marker(stream, cloud, "for the cli")
    base = [sys.executable, "-m", "supervisor.devcloud", "--listen", f"127.0.0.1:{cloud.port}",
            "--data-dir", str(cloud.data_dir), "logs", cloud.uuid]
    out = subprocess.run([*base, "--count", "1"], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True).stdout
    assert out.endswith("[Supervisor] for the cli\n")
    follow = subprocess.Popen([*base, "--follow", "--count", "0", "--json"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(
            line for line in follow.stdout or () if "followed line" in line), daemon=True)
        reader.start()
        wait_for(lambda: stream.offer(system("followed line")) and seen, "the followed line")
        assert json.loads(seen[0])["message"] == "followed line"
    finally:
        follow.terminate()
        follow.wait(30)


def test_offer_never_waits_for_a_stalled_server() -> None:
    """A server that accepts and never reads: the sender blocks in the kernel's send, and
    `offer` still returns at once (dropping and counting what does not fit)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    stream = LogStream(timing=Timing(backoff_base=0.05, backoff_max=0.4, grace=0.05,
                                     idle=300.0, flush_interval=0.01, io_timeout=2.0))
    stream.set_credentials(f"http://127.0.0.1:{server.getsockname()[1]}", "u", "k")
    stream.start()
    try:
        stream.offer(system("first"))
        wait_for(lambda: stream.connected and stream.pending == 0, "the first line to be sent")
        chunk = "x" * 9_000  # incompressible enough: random-free but long lines fill buffers
        offered = 0
        while stream.total_dropped == 0:
            stream.offer(system(f"{offered} {chunk}{offered}"))
            offered += 1
        assert stream.total_dropped >= 1  # the buffer filled while the sender was stuck
    finally:
        stream.stop()
        for sock in accepted:
            sock.close()
        server.close()
