"""Snapshot diffs -> change events, their SSE encoding, and the bus's bounded fan-out."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from supervisor.events import Event, EventBus, diff, state_event
from supervisor.model.current import DeviceView, ImageProgress, LockBlock, ServiceView, Snapshot

DEVICE = DeviceView(uuid="u" * 32, name="dev", api_port=48484, os_version="os",
                    supervisor_version="19.0.5", device_type="generic", arch="amd64")
IMAGE = "127.0.0.1:5000/app/main:1"


def svc(name: str = "main", status: str = "Running", *, app_id: int = 1, commit: str = "c1",
        image_id: int = 10, **kw: Any) -> ServiceView:
    return ServiceView(app_id=app_id, app_uuid=f"uuid{app_id}", app_name="app",
                       service_name=name, service_id=100 + image_id, image_id=image_id,
                       release_id=5, commit=commit, image=IMAGE, status=status, **kw)


def snap(seq: int = 1, **kw: Any) -> Snapshot:
    return Snapshot(seq=seq, device=DEVICE, **kw)


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def test_nothing_changed_means_no_events() -> None:
    a = snap(1, services=(svc(),), images=(ImageProgress(IMAGE, 1, "main", "c1",
                                                         "Downloading", 5),))
    assert diff(a, replace(a, seq=2)) == []


def test_status_change_is_one_event_with_previous_status() -> None:
    old = snap(1, services=(svc("main", "Installed"), svc("web", "Running", image_id=11)))
    new = snap(2, services=(svc("main", "Running", container_id="abc"),
                            svc("web", "Running", image_id=11)))
    (event,) = diff(old, new)
    assert event.name == "service-status" and event.app_id == 1
    assert event.data == {"seq": 2, "appId": 1, "serviceName": "main", "serviceId": 110,
                          "imageId": 10, "releaseId": 5, "commit": "c1", "status": "Running",
                          "previous": "Installed", "containerId": "abc",
                          "downloadProgress": None}


def test_services_appearing_and_going_away() -> None:
    old = snap(1, services=(svc("main", "Running", commit="old", image_id=9),))
    new = snap(2, services=(svc("main", "Downloading", commit="new", image_id=10),))
    events = diff(old, new)
    assert names(events) == ["service-status", "service-status"]
    appeared, gone = events
    assert (appeared.data["commit"], appeared.data["status"], appeared.data["previous"]) == \
        ("new", "Downloading", None)
    assert (gone.data["commit"], gone.data["status"], gone.data["previous"]) == \
        ("old", None, "Running")


def test_download_progress_changes_only() -> None:
    def img(pct: int | None, status: str = "Downloading") -> tuple[ImageProgress, ...]:
        return (ImageProgress(IMAGE, 1, "main", "c1", status, pct),)

    s1, s2, s3 = snap(1, images=img(10)), snap(2, images=img(10)), snap(3, images=img(40))
    assert diff(s1, s2) == []
    (event,) = diff(s2, s3)
    assert event.name == "download-progress"
    assert event.data == {"seq": 3, "image": IMAGE, "appId": 1, "serviceName": "main",
                          "commit": "c1", "status": "Downloading", "progress": 40}
    (done,) = diff(s3, snap(4))
    assert (done.data["status"], done.data["progress"]) == (None, None)


def test_apply_start_first_and_apply_end_last() -> None:
    idle = snap(1, services=(svc(status="Installed"),))
    busy = snap(2, services=(svc(status="Starting"),), apply_in_progress=True)
    done = snap(3, services=(svc(status="Running"),))
    assert names(diff(idle, busy)) == ["apply-start", "service-status"]
    events = diff(busy, done)
    assert names(events) == ["service-status", "apply-end"]
    assert events[-1].data == {"seq": 3, "success": True, "error": None}


def test_failed_apply_reports_error_then_end() -> None:
    busy = snap(1, apply_in_progress=True)
    failed = snap(2, update_failed=True, last_error="pull failed")
    events = diff(busy, failed)
    assert names(events) == ["error", "apply-end"]
    assert events[0].data == {"seq": 2, "message": "pull failed", "updateFailed": True}
    assert events[1].data["success"] is False
    # The same error again (a retry failing the same way) is not news.
    assert diff(failed, replace(failed, seq=3)) == []


def test_lock_wait_and_release_ignore_the_refreshed_since() -> None:
    block = LockBlock(app_id=1, service_name="main", path="/tmp/lock", since=1.0)
    free = snap(1)
    waiting = snap(2, lock_block=block)
    still = snap(3, lock_block=replace(block, since=2.0))
    (wait,) = diff(free, waiting)
    assert wait.name == "lock-wait"
    assert wait.data == {"seq": 2, "appId": 1, "serviceName": "main", "path": "/tmp/lock"}
    assert diff(waiting, still) == []
    (released,) = diff(still, snap(4))
    assert released.name == "lock-released" and released.app_id == 1


def test_first_snapshot_announces_everything() -> None:
    events = diff(None, snap(1, services=(svc(),), apply_in_progress=True))
    assert names(events) == ["apply-start", "service-status"]


def test_sse_encoding_is_one_data_line() -> None:
    raw = Event("error", {"message": "a\nb"}).sse().decode()
    lines = raw.split("\n")
    assert lines[0] == "event: error"
    assert lines[1].startswith("data: ") and json.loads(lines[1][6:]) == {"message": "a\nb"}
    assert raw.endswith("\n\n") and len(lines) == 4


def test_state_event_filters_by_scope() -> None:
    s = snap(7, services=(svc(app_id=1), svc("web", app_id=2, image_id=20)),
             lock_block=LockBlock(2, "web", "/x", 0.0), apply_in_progress=True)
    everything = state_event(s).data
    assert [x["serviceName"] for x in everything["services"]] == ["main", "web"]
    assert everything["appState"] == "applying" and everything["seq"] == 7
    scoped = state_event(s, frozenset({1})).data
    assert [x["serviceName"] for x in scoped["services"]] == ["main"]
    assert scoped["lock"] is None


def test_bus_without_subscribers_only_remembers_the_latest() -> None:
    bus = EventBus()
    s = snap(3)
    bus.snapshot_changed(None, s)
    assert bus.latest is s and bus.subscribers == 0


def test_bus_delivers_and_drops_for_a_slow_client() -> None:
    async def main() -> tuple[list[str], list[tuple[str, Any]]]:
        bus = EventBus()
        fast = bus.subscribe()
        slow = bus.subscribe(maxsize=2)
        prev = snap(0)
        for i in range(1, 6):  # five status flips: five events
            cur = snap(i, services=(svc(status="Running" if i % 2 else "exited"),))
            bus.snapshot_changed(prev, cur)
            prev = cur
        got_fast = []
        while (e := fast.get_nowait()) is not None:
            got_fast.append(e.name)
        got_slow = []
        while (e := slow.get_nowait()) is not None:
            got_slow.append((e.name, e.data.get("count", e.data.get("seq"))))
        return got_fast, got_slow

    fast, slow = asyncio.run(main())
    assert fast == ["service-status"] * 5
    assert slow == [("service-status", 1), ("service-status", 2), ("dropped", 3)]
