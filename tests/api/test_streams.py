"""`GET /v2/local/logs`, `GET /v2/events`, `GET /v2/device/metrics` through the real app.

The routes are mounted as `build_app(ctx, extra=stream_endpoints(streams))` (auth middleware
included) and, once, as bare `stream_routes(streams)`. Streams are read a few lines at a time
with the TestClient, which runs the app on its own event loop: the hub and the bus are fed on
that loop through `client.portal`.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from supervisor.api.app import build_app
from supervisor.api.streams import stream_endpoints, stream_routes
from supervisor.events import EventBus
from supervisor.logs import LogHub, LogMessage
from supervisor.model.current import ServiceView, Snapshot
from tests.api.fakes import APP1_KEY, GLOBAL_KEY, FakeContext, device

BASE = "http://127.0.0.1:48484"


@dataclass
class Streams:
    """A `StreamContext`: the hub, the bus and the mode flags the routes read."""

    data_dir: Path
    local_mode: bool = True
    unmanaged: bool = False
    logs: LogHub = field(default_factory=LogHub)
    events: EventBus = field(default_factory=EventBus)


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return Streams(data_dir=tmp_path)


def make_client(ctx: FakeContext, streams: Streams, heartbeat: float = 15.0) -> TestClient:
    app = build_app(ctx, extra=stream_endpoints(streams, heartbeat=heartbeat))
    return TestClient(app, base_url=BASE)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def on_loop(client: TestClient, fn: Callable[..., Any], *args: Any) -> None:
    assert client.portal is not None
    client.portal.call(fn, *args)


def svc_line(text: str, *, stderr: bool = False) -> LogMessage:
    return LogMessage(message=text, timestamp=1_700_000_000_123, is_stderr=stderr,
                      service_name="main", service_id=101, app_id=1, image_id=1000)


def service(app_id: int, name: str, status: str) -> ServiceView:
    return ServiceView(app_id=app_id, app_uuid=f"uuid{app_id}", app_name="a",
                       service_name=name, service_id=app_id * 100 + 1, image_id=app_id * 1000,
                       release_id=10, commit="c0ffee", image="img", status=status)


def snapshot(seq: int, *services: ServiceView, **kw: Any) -> Snapshot:
    return Snapshot(seq=seq, device=device(), services=services, **kw)


def read_event(lines: Iterator[str]) -> tuple[str | None, Any, list[str]]:
    """One SSE block: (event name, decoded data, comment lines)."""
    name: str | None = None
    data: Any = None
    comments: list[str] = []
    for text in lines:
        if text == "":
            if name is not None or comments:
                return name, data, comments
            continue
        if text.startswith(":"):
            comments.append(text[1:].strip())
        elif text.startswith("event: "):
            name = text[len("event: "):]
        elif text.startswith("data: "):
            data = json.loads(text[len("data: "):])
    raise AssertionError("stream ended")


# -- /v2/local/logs ------------------------------------------------------------------------

def test_local_logs_streams_first_line_then_service_and_system_lines(
        streams: Streams) -> None:
    with make_client(FakeContext(local_mode=True), streams) as client, \
            client.stream("GET", "/v2/local/logs") as resp:
        assert resp.status_code == 200
        assert "content-type" not in resp.headers  # as upstream: a bare stream
        lines = resp.iter_lines()
        assert json.loads(next(lines)) == {"message": "Streaming logs", "isSystem": True}
        assert streams.logs.subscribers == 1
        on_loop(client, streams.logs.publish_many, [svc_line("hello"),
                                                    svc_line("oops", stderr=True)])
        on_loop(client, streams.logs.on_system_log, (1_700_000_001.5, "Supervisor starting"))
        assert json.loads(next(lines)) == {
            "message": "hello", "isStdErr": False, "timestamp": 1_700_000_000_123,
            "serviceId": 101, "serviceName": "main", "appId": 1, "imageId": 1000}
        assert json.loads(next(lines))["isStdErr"] is True
        assert json.loads(next(lines)) == {"message": "Supervisor starting", "isSystem": True,
                                           "timestamp": 1_700_000_001_500}
    # Closing the stream unsubscribes (upstream leaks the listener).
    wait_for(lambda: streams.logs.subscribers == 0, "the subscription to be closed")


def test_local_logs_outside_local_mode_sends_only_the_first_line(streams: Streams) -> None:
    streams.local_mode = False
    ctx = FakeContext()  # managed: a key is needed
    with make_client(ctx, streams) as client, client.stream(
            "GET", "/v2/local/logs", headers={"Authorization": f"Bearer {GLOBAL_KEY}"}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert json.loads(next(lines))["message"] == "Streaming logs"
        on_loop(client, streams.logs.publish, svc_line("for the cloud, not for you"))
        streams.local_mode = True  # switching to local mode switches the backend at once
        on_loop(client, streams.logs.publish, svc_line("now local"))
        assert json.loads(next(lines))["message"] == "now local"


def test_local_logs_needs_a_key_when_managed(streams: Streams) -> None:
    with make_client(FakeContext(), streams) as client:
        resp = client.get("/v2/local/logs")
        assert resp.status_code == 401
        assert resp.text == "Unauthorized"
    assert streams.logs.subscribers == 0


def test_bare_routes_match_like_express(streams: Streams) -> None:
    app = Starlette(routes=stream_routes(streams))
    with TestClient(app, base_url=BASE) as client, \
            client.stream("GET", "/V2/Local/Logs/") as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert json.loads(next(lines))["message"] == "Streaming logs"
        on_loop(client, streams.logs.system, "Killing service 'main img'")
        assert json.loads(next(lines))["message"] == "Killing service 'main img'"


def test_slow_log_reader_is_told_about_dropped_lines(streams: Streams) -> None:
    streams.logs = LogHub(queue_size=4)
    with make_client(FakeContext(local_mode=True), streams) as client, \
            client.stream("GET", "/v2/local/logs") as resp:
        lines = resp.iter_lines()
        next(lines)
        # Ten lines in one loop callback: the reader cannot run in between.
        on_loop(client, streams.logs.publish_many, [svc_line(f"l{i}") for i in range(10)])
        got = [json.loads(next(lines))["message"] for _ in range(5)]
        assert got == ["l0", "l1", "l2", "l3",
                       "Warning: 6 log lines dropped: this reader is too slow"]


# -- /v2/events ----------------------------------------------------------------------------

def test_events_start_with_state_then_follow_changes(streams: Streams) -> None:
    first = snapshot(1, service(1, "main", "Installed"))
    streams.events.snapshot_changed(None, first)
    with make_client(FakeContext(local_mode=True), streams) as client, \
            client.stream("GET", "/v2/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        lines = resp.iter_lines()
        assert read_event(lines) == (None, None, ["connected"])
        name, data, _ = read_event(lines)
        assert name == "state"
        assert data["seq"] == 1 and data["services"][0]["status"] == "Installed"
        wait_for(lambda: streams.events.subscribers == 1, "the events subscription")
        second = snapshot(2, service(1, "main", "Running"), apply_in_progress=True)
        on_loop(client, streams.events.snapshot_changed, first, second)
        assert read_event(lines)[:2] == ("apply-start", {"seq": 2})
        name, data, _ = read_event(lines)
        assert name == "service-status"
        assert (data["serviceName"], data["status"], data["previous"]) == \
            ("main", "Running", "Installed")
    wait_for(lambda: streams.events.subscribers == 0, "the events subscription to close")


def test_events_heartbeat_comments(streams: Streams) -> None:
    with make_client(FakeContext(local_mode=True), streams, heartbeat=0.05) as client, \
            client.stream("GET", "/v2/events") as resp:
        lines = resp.iter_lines()
        assert read_event(lines) == (None, None, ["connected"])  # nothing published yet
        assert read_event(lines) == (None, None, ["heartbeat"])
        assert read_event(lines) == (None, None, ["heartbeat"])


def test_events_are_filtered_to_the_callers_apps(streams: Streams) -> None:
    first = snapshot(1, service(1, "main", "Running"), service(2, "web", "Running"))
    streams.events.snapshot_changed(None, first)
    with make_client(FakeContext(), streams) as client, client.stream(
            "GET", "/v2/events", headers={"Authorization": f"Bearer {APP1_KEY}"}) as resp:
        lines = resp.iter_lines()
        assert read_event(lines)[2] == ["connected"]
        _, state, _ = read_event(lines)
        assert [s["appId"] for s in state["services"]] == [1]
        wait_for(lambda: streams.events.subscribers == 1, "the events subscription")
        second = snapshot(2, service(1, "main", "Running"), service(2, "web", "exited"))
        third = snapshot(3, service(1, "main", "exited"), service(2, "web", "exited"))
        on_loop(client, streams.events.snapshot_changed, first, second)  # app 2: hidden
        on_loop(client, streams.events.snapshot_changed, second, third)
        name, data, _ = read_event(lines)
        assert (name, data["appId"], data["seq"]) == ("service-status", 1, 3)


def test_slow_events_client_gets_dropped_then_a_fresh_state(streams: Streams) -> None:
    streams.events = EventBus(queue_size=2)
    with make_client(FakeContext(local_mode=True), streams) as client, \
            client.stream("GET", "/v2/events") as resp:
        lines = resp.iter_lines()
        assert read_event(lines)[2] == ["connected"]
        wait_for(lambda: streams.events.subscribers == 1, "the events subscription")
        snaps = [snapshot(i, service(1, "main", "Running" if i % 2 else "exited"))
                 for i in range(6)]

        def burst() -> None:
            for old, new in itertools.pairwise(snaps):
                streams.events.snapshot_changed(old, new)

        on_loop(client, burst)
        got = [read_event(lines)[:2] for _ in range(4)]
        assert [g[0] for g in got] == ["service-status", "service-status", "dropped", "state"]
        assert got[2][1] == {"count": 3}
        assert got[3][1]["seq"] == 5


# -- /v2/device/metrics --------------------------------------------------------------------

def test_metrics_body(streams: Streams) -> None:
    with make_client(FakeContext(local_mode=True), streams) as client:
        resp = client.get("/v2/device/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == "success"
    assert set(body) == {"status", "cpu_usage", "memory_usage", "memory_total",
                         "storage_usage", "storage_total", "storage_block_device",
                         "cpu_temp", "cpu_id", "uptime", "boot_time"}
    assert 0 <= body["cpu_usage"] <= 100
    assert 0 < body["memory_usage"] < body["memory_total"]
    assert body["storage_total"] > 0 and body["storage_usage"] > 0
    assert body["uptime"] > 0
    assert abs(body["boot_time"] + body["uptime"] - time.time()) < 5


def test_metrics_failure_is_a_json_error(streams: Streams) -> None:
    def broken(data_dir: Path | str) -> Any:
        raise OSError("no /proc")

    app = build_app(FakeContext(local_mode=True),
                    extra=stream_endpoints(streams, probe=broken))
    with TestClient(app, base_url=BASE) as client:
        resp = client.get("/v2/device/metrics")
    assert resp.status_code == 503
    assert resp.json() == {"status": "failed", "message": "no /proc"}


def test_routes_are_documented(streams: Streams) -> None:
    with make_client(FakeContext(local_mode=True), streams) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2/local/logs", "/v2/events", "/v2/device/metrics"):
        assert "get" in paths[path]
