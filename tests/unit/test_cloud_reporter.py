"""The state report: building it from a snapshot, diffing, buckets, throttling, the cache."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from supervisor.cloud.http import CloudError, Response
from supervisor.cloud.reporter import (
    Reporter,
    apps_state,
    device_state,
    metrics_only,
    prune,
    snap_metrics,
    state_diff,
    update_status,
)
from supervisor.model.current import DeviceView, ServiceView, Snapshot
from supervisor.model.target import TargetApp, TargetRelease, TargetState

APP_UUID = "a" * 32
OLD, NEW = "c1" * 16, "c2" * 16


def _device() -> DeviceView:
    return DeviceView(uuid="dev1", name="d", api_port=48484, os_version="balenaOS 6",
                      supervisor_version="19.0.5", device_type="generic", arch="amd64")


def _view(commit: str, status: str, progress: int | None = None,
          service: str = "main") -> ServiceView:
    return ServiceView(app_id=7, app_uuid=APP_UUID, app_name="app", service_name=service,
                       service_id=1, image_id=1, release_id=1, commit=commit,
                       image=f"reg/{service}:{commit[:4]}", status=status,
                       download_progress=progress)


def _snapshot(*views: ServiceView, commits: Mapping[int, str] | None = None) -> Snapshot:
    target = TargetState(device_uuid="dev1", name="d", apps={
        APP_UUID: TargetApp(app_id=7, uuid=APP_UUID, name="app",
                            release=TargetRelease(commit=NEW, release_id=2))})
    return Snapshot(seq=1, device=_device(), target=target, services=views,
                    commits=dict(commits or {}))


# -- building -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("services", "expected"), [
    ([{"status": "Running"}], "done"),
    ([{"status": "Running"}, {"status": "Aborted", "download_progress": 5}], "aborted"),
    ([{"status": "Downloading", "download_progress": 40}, {"status": "Downloaded"}],
     "downloading"),
    ([{"status": "Downloading", "download_progress": 100}, {"status": "Downloaded"}],
     "downloaded"),
    ([{"status": "downloaded"}, {"status": "Installing"}], "downloaded"),
    ([{"status": "Running"}, {"status": "Installed"}], "applying changes"),
    ([{"status": "Awaiting handover"}, {"status": "Handing over"}], "applying changes"),
    ([{"status": "exited"}], "done"),
])
def test_update_status_precedence(services: list[dict[str, Any]], expected: str) -> None:
    assert update_status(services) == expected


def test_apps_report_groups_services_by_release_during_an_update() -> None:
    snap = _snapshot(_view(OLD, "Running"), _view(NEW, "Downloading", 35, service="web"),
                     _view(NEW, "Downloaded"), commits={7: OLD})
    apps = apps_state(snap)
    assert apps == {APP_UUID: {
        "release_uuid": OLD,
        "releases": {
            OLD: {"update_status": "done",
                  "services": {"main": {"image": "reg/main:c1c1", "status": "Running"}}},
            NEW: {"update_status": "downloading", "services": {
                "web": {"image": "reg/web:c2c2", "status": "Downloading",
                        "download_progress": 35},
                "main": {"image": "reg/main:c2c2", "status": "Downloaded"}}},
        },
    }}


def test_apps_report_leaves_out_apps_not_in_the_target_and_marks_aborted() -> None:
    stranger = ServiceView(app_id=99, app_uuid="b" * 32, app_name="x", service_name="s",
                           service_id=1, image_id=1, release_id=1, commit=OLD, image="i",
                           status="Running")
    snap = _snapshot(_view(NEW, "Downloaded"), stranger)
    apps = apps_state(snap, aborted=[NEW])
    assert list(apps) == [APP_UUID]
    assert "release_uuid" not in apps[APP_UUID]  # no current commit stored yet
    assert apps[APP_UUID]["releases"][NEW]["update_status"] == "aborted"


def test_device_state_holds_the_fixed_fields_and_metrics() -> None:
    state = device_state(_snapshot(), api_secret="k", os_variant="dev", ip_address="10.0.0.2",
                         mac_address="AA:BB", metrics={"cpu_usage": 12, "memory_total": 900},
                         is_undervolted=False)
    assert state["api_port"] == 48484
    assert state["api_secret"] == "k"
    assert state["status"] == "Idle"
    assert state["provisioning_progress"] is None
    assert state["cpu_usage"] == 12 and state["cpu_temp"] is None
    assert state["apps"] == {APP_UUID: {"releases": {}}}


# -- diffing ------------------------------------------------------------------------------------


def test_diff_sends_changed_fields_and_the_whole_apps_object() -> None:
    apps1 = {APP_UUID: {"releases": {OLD: {"update_status": "done", "services": {"a": {}}}}}}
    apps2 = {APP_UUID: {"releases": {OLD: {"update_status": "downloading",
                                           "services": {"a": {}}}}}}
    last = {"ip_address": "1", "status": "Idle", "apps": apps1}
    assert state_diff(last, {"ip_address": "2", "status": "Idle", "apps": apps1}) == \
        {"ip_address": "2"}
    diff = state_diff(last, {"ip_address": "1", "status": "Idle", "apps": apps2})
    # the whole apps object, with the empty `services.a` pruned
    assert diff == {"apps": {APP_UUID: {"releases": {OLD: {"update_status": "downloading"}}}}}
    assert state_diff(last, dict(last)) == {}


def test_diff_drops_removed_keys_and_empty_apps_but_keeps_nulls() -> None:
    last = {"apps": {APP_UUID: {"releases": {}}}, "cpu_temp": 40, "gone": 1}
    diff = state_diff(last, {"apps": {}, "cpu_temp": None})
    assert diff == {"cpu_temp": None}
    assert prune({"a": {"b": {"c": {}}}, "d": 0, "e": None}) == {"d": 0, "e": None}


def test_bucketed_metrics_only_change_across_a_bucket() -> None:
    last = {"cpu_usage": 21, "cpu_temp": 51, "memory_usage": 101, "storage_usage": 5}
    same = snap_metrics(last, {"cpu_usage": 39, "cpu_temp": 54, "memory_usage": 109,
                               "storage_usage": 6})
    assert same == {"cpu_usage": 21, "cpu_temp": 51, "memory_usage": 101, "storage_usage": 6}
    moved = snap_metrics(last, {"cpu_usage": 40, "cpu_temp": 55, "memory_usage": 110})
    assert moved == {"cpu_usage": 40, "cpu_temp": 55, "memory_usage": 110}
    assert snap_metrics({}, {"cpu_usage": 3}) == {"cpu_usage": 3}
    assert metrics_only({"cpu_usage": 1, "storage_total": 2})
    assert not metrics_only({"cpu_usage": 1, "status": "Idle"})
    assert not metrics_only({})


# -- the reporter -------------------------------------------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.answers: list[Response] = []

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        assert (method, path) == ("PATCH", "/device/v3/state")
        self.sent.append(body)
        return self.answers.pop(0) if self.answers else Response(200)


class MemoryCache:
    def __init__(self, body: dict[str, Any] | None = None) -> None:
        self.body = body

    async def report_cache(self) -> dict[str, Any] | None:
        return self.body

    async def set_report_cache(self, body: Mapping[str, Any]) -> None:
        self.body = dict(body)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _until(check: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let the loop run until `check()` holds (bounded, so a bug fails instead of hanging)."""
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


KEY = {"endpoint": "http://cloud", "uuid": "dev1", "boot_time": 5}


def _reporter(state: dict[str, Any], client: FakeClient, cache: MemoryCache,
              clock: Clock) -> Reporter:
    async def collect() -> dict[str, Any]:
        return dict(state)

    return Reporter(client=client, uuid=lambda: "dev1", collect=collect, cache=cache,
                    cache_key=KEY, interval_ms=lambda: 60_000, clock=clock, sleep=clock.sleep)


def test_reports_only_what_changed_and_metrics_alone_every_300_s() -> None:
    async def scenario() -> None:
        state: dict[str, Any] = {"status": "Idle", "cpu_usage": 10, "ip_address": "a"}
        client, cache, clock = FakeClient(), MemoryCache(), Clock()
        reporter = _reporter(state, client, cache, clock)
        assert await reporter.report_once()
        assert client.sent == [{"dev1": {"status": "Idle", "cpu_usage": 10, "ip_address": "a"}}]
        assert not await reporter.report_once()  # nothing changed: nothing sent

        state["ip_address"] = "b"
        state["cpu_usage"] = 15  # same bucket: not a change
        assert await reporter.report_once()
        assert client.sent[-1] == {"dev1": {"ip_address": "b"}}

        state["cpu_usage"] = 55  # another bucket, but metrics alone wait for 300 s
        clock.now += 299
        assert not await reporter.report_once()
        clock.now += 2
        assert await reporter.report_once()
        assert client.sent[-1] == {"dev1": {"cpu_usage": 55}}
        assert cache.body == {**KEY, "state": {"status": "Idle", "cpu_usage": 55,
                                               "ip_address": "b"}}

    asyncio.run(scenario())


def test_the_cache_seeds_the_last_report_only_for_the_same_device_and_boot() -> None:
    async def scenario() -> None:
        state = {"status": "Idle", "ip_address": "a"}
        for cached, expected in (
            ({**KEY, "state": {"status": "Idle", "ip_address": "old"}}, {"ip_address": "a"}),
            ({**KEY, "boot_time": 6, "state": {"status": "Idle", "ip_address": "old"}},
             {"status": "Idle", "ip_address": "a"}),
            ({**KEY, "uuid": "other", "state": dict(state)}, state),
        ):
            client = FakeClient()
            reporter = _reporter(state, client, MemoryCache(cached), Clock())
            await reporter.load_cache()
            await reporter.report_once()
            assert client.sent == [{"dev1": expected}]

    asyncio.run(scenario())


def test_failures_back_off_and_honour_retry_after_and_keep_the_report_pending() -> None:
    async def scenario() -> None:
        state = {"status": "Idle"}
        client, cache, clock = FakeClient(), MemoryCache(), Clock()
        reporter = _reporter(state, client, cache, clock)
        client.answers = [Response(500), Response(500), Response(500), Response(500),
                          Response(503, {"retry-after": "120"}), Response(200)]
        for _ in range(6):
            await reporter.cycle()
        # 15 s, 30 s, then the poll interval (60 s) caps it; Retry-After wins when given
        assert clock.slept == [15, 30, 60, 60, 120]
        assert len(client.sent) == 6 and all(b == {"dev1": state} for b in client.sent)
        assert reporter.failures == 0 and cache.body is not None

    asyncio.run(scenario())


def test_the_loop_throttles_reports_to_one_per_10_s() -> None:
    async def scenario() -> None:
        state: dict[str, Any] = {"status": "Idle", "n": 0}
        client, cache, clock = FakeClient(), MemoryCache(), Clock()
        reporter = _reporter(state, client, cache, clock)
        sent_at: list[float] = []
        original = client.request

        async def request(method: str, path: str, **kwargs: Any) -> Response:
            sent_at.append(clock.now)
            return await original(method, path, **kwargs)

        client.request = request  # type: ignore[method-assign]
        task = asyncio.create_task(reporter.run())
        for n in range(1, 4):
            await _until(lambda: len(sent_at) >= n)  # noqa: B023 - awaited at once
            state["n"] = n  # a change right after each report
            reporter.changed()
        await _until(lambda: len(sent_at) >= 4)
        task.cancel()
        gaps = [b - a for a, b in itertools.pairwise(sent_at)]
        assert gaps and all(gap >= 10 for gap in gaps), gaps
        assert [b["dev1"].get("n") for b in client.sent] == [0, 1, 2, 3]

    asyncio.run(scenario())


def test_an_unexpected_status_becomes_a_cloud_error() -> None:
    async def scenario() -> None:
        client = FakeClient()
        client.answers = [Response(429, {"retry-after": "7"}, b"slow down")]
        reporter = _reporter({"status": "Idle"}, client, MemoryCache(), Clock())
        with pytest.raises(CloudError) as caught:
            await reporter.report_once()
        assert caught.value.status == 429 and caught.value.retry_after == 7
        assert reporter.last == {}  # not acknowledged: sent again next time

    asyncio.run(scenario())


# -- what openBalena accepts (docs/fleet.md "Works against openBalena") ---------------------


def _full(snap: Snapshot, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"api_secret": "s", "os_variant": "prod", "ip_address": "10.0.0.2",
                            "mac_address": "AA", "metrics": {}, "is_undervolted": False}
    return device_state(snap, **{**args, **kw})


def test_local_mode_reports_no_apps_and_no_logs_channel() -> None:
    snap = _snapshot(_view(NEW, "Running"), commits={7: NEW})
    managed = _full(snap)
    assert managed["logs_channel"] is None and APP_UUID in managed["apps"]
    local = _full(snap, local_mode=True, status="Idle", ip_address="10.0.0.3")
    assert "apps" not in local and "logs_channel" not in local
    assert local["status"] == "Idle" and local["ip_address"] == "10.0.0.3"


def test_a_commit_the_cloud_does_not_know_is_never_reported() -> None:
    snap = _snapshot(_view("10ca1c0mm17", "Running"), _view(NEW, "Downloading", 10, "web"),
                     commits={7: "10ca1c0mm17"})
    apps = apps_state(snap, known={NEW})
    assert apps == {APP_UUID: {"releases": {NEW: {"update_status": "downloading", "services": {
        "web": {"image": "reg/web:c2c2", "status": "Downloading", "download_progress": 10}}}}}}
    assert "10ca1c0mm17" not in str(_full(snap, known={NEW}))


def test_status_is_cut_at_50_characters_and_os_variant_is_dev_or_prod() -> None:
    snap = _snapshot()
    long = _full(snap, status="Update failed: " + "x" * 100)
    assert long["status"] == "Update failed: " + "x" * 35
    assert _full(snap, os_variant="dev")["os_variant"] == "dev"
    assert "os_variant" not in _full(snap, os_variant="development")
