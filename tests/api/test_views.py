"""The pure views of a Snapshot, without HTTP."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.api import views
from supervisor.errors import BadRequest
from supervisor.model.current import ImageProgress, ServiceView
from tests.api.fakes import WORKER_IMAGE, empty_snapshot, standard_snapshot


def _svc(name: str, status: str, *, progress: int | None = None, container: str | None = None,
         image_id: int = 1, release_id: int = 1, created: str | None = None) -> ServiceView:
    return ServiceView(app_id=2, app_uuid="uuid2", app_name="multi", service_name=name,
                       service_id=1, image_id=image_id, release_id=release_id, commit="beef",
                       image=f"img-{name}", status=status, container_id=container,
                       download_progress=progress, created_at=created)


@pytest.mark.parametrize(("statuses", "expected"), [
    ([("a", "Running", None)], "done"),
    ([("a", "Running", None), ("b", "Installing", None)], "applying changes"),
    ([("a", "Awaiting handover", None)], "applying changes"),
    ([("a", "Installing", None), ("b", "Downloaded", None)], "downloaded"),
    ([("a", "Downloaded", None), ("b", "Downloading", 10), ("c", "Installed", None)],
     "downloading"),
    ([("a", "Downloading", 100)], "downloaded"),
    ([("a", "Downloading", 5), ("b", "Aborted", None)], "aborted"),
])
def test_update_status_precedence(statuses: list[tuple[str, str, int | None]],
                                  expected: str) -> None:
    services = [_svc(name, status, progress=pct) for name, status, pct in statuses]
    assert views._update_status(services) == expected


def test_legacy_state_hand_over_reports_the_older_release() -> None:
    snap = replace(empty_snapshot(), services=(
        _svc("web", "Running", container="new", image_id=7, release_id=21,
             created="2024-02-01T00:00:00Z"),
        _svc("web", "Running", container="old", image_id=7, release_id=20,
             created="2024-01-01T00:00:00Z"),
        _svc("worker", "Downloading", progress=3, image_id=8, release_id=21),
    ), commits={2: "beef"})
    assert views.app_legacy_state(snap, 2) == {"commit": "beef", "local": {"2": {"services": {
        "7": {"status": "Handing over", "releaseId": 20, "download_progress": None},
        "8": {"status": "Downloading", "releaseId": 21, "download_progress": 3},
    }}}}
    assert views.app_legacy_state(snap, 3) is None


def test_overall_progress_is_a_js_number() -> None:
    snap = standard_snapshot()
    half = ImageProgress(name=WORKER_IMAGE, app_id=2, service_name="worker", commit="beef",
                         status="Downloading", progress=50)
    other = ImageProgress(name="img-other", app_id=2, service_name="other", commit="beef",
                          status="Downloading", progress=35)
    body = views.state_status(replace(snap, images=(half, other)), None)
    assert body["overallDownloadProgress"] == 42.5
    body = views.state_status(replace(snap, images=(half,)), None)
    assert body["overallDownloadProgress"] == 50
    assert isinstance(body["overallDownloadProgress"], int)
    assert views.dumps(body).count(b'"overallDownloadProgress":50,') == 1


def test_v1_device_progress_mean_and_status() -> None:
    snap = standard_snapshot()
    extra = ImageProgress(name="x", app_id=1, service_name="main", commit="c", status="Downloading",
                          progress=64)
    body = views.v1_device(replace(snap, images=(*snap.images, extra)))
    assert body["download_progress"] == 49.5
    assert body["status"] == "Downloading"


def test_v1_app_requires_containers() -> None:
    with pytest.raises(BadRequest, match="App not found"):
        views.v1_app(empty_snapshot(), 1)


def test_dumps_is_compact_utf8() -> None:
    assert views.dumps({"a": [1, None], "é": "ü"}) == '{"a":[1,null],"é":"ü"}'.encode()


def test_plan_view_empty() -> None:
    assert views.plan_view(empty_snapshot(), None) == {
        "status": "success", "applying": False, "steps": []}
