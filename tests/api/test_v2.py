"""v2 endpoints (api.md §4) and our /v2/locks and /v2/plan."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from supervisor import COMPAT_VERSION
from supervisor.errors import EngineError, NotFound, TargetInvalid, UpdatesLocked
from supervisor.journal import JournalParams
from supervisor.model.steps import Fetch, Noop
from tests.api.fakes import (
    APP1_KEY,
    APP2_KEY,
    GLOBAL_KEY,
    MAIN_IMAGE,
    WEB_IMAGE,
    WORKER_IMAGE,
    FakeContext,
    empty_snapshot,
)
from tests.spec_texts import (
    APP_NOT_FOUND,
    SERVICE_NOT_FOUND,
    TARGET_SERVICE_NOT_FOUND,
    V2_SERVICE_ENDPOINT_ERROR,
)

if TYPE_CHECKING:
    from starlette.testclient import TestClient

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"


# -- service actions ----------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["restart", "stop", "start"])
def test_service_actions(ctx: FakeContext, client: TestClient, verb: str) -> None:
    res = client.post(f"/v2/applications/2/{verb}-service", json={"serviceName": "web"},
                      headers=AUTH)
    assert (res.status_code, res.text, res.headers["content-type"]) == (200, "OK", HTML)
    assert ctx.actions.called("service_action") == [(verb, 2, "web", None, False)]


def test_service_action_by_image_id_form_encoded(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v2/applications/2/restart-service",
                      data={"imageId": "2002", "force": "true"}, headers=AUTH)
    assert res.status_code == 200
    assert ctx.actions.called("service_action") == [("restart", 2, None, 2002, True)]


@pytest.mark.parametrize("app_id", ["abc", "0", "1.5"])
def test_service_action_invalid_app_id(ctx: FakeContext, client: TestClient,
                                       app_id: str) -> None:
    res = client.post(f"/v2/applications/{app_id}/stop-service", json={"serviceName": "web"},
                      headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": "Invalid app id"}


def test_service_action_out_of_scope(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v2/applications/2/stop-service", json={"serviceName": "web"},
                      params={"apikey": APP1_KEY})
    assert res.status_code == 401
    assert res.json() == {"status": "failed", "message": "Unauthorized"}
    assert ctx.actions.calls == []


@pytest.mark.parametrize("body", [{}, {"serviceName": ""}, {"serviceName": "null"},
                                  {"imageId": "x"}, {"serviceName": 5}])
def test_service_action_needs_a_service(ctx: FakeContext, client: TestClient,
                                        body: dict[str, Any]) -> None:
    res = client.post("/v2/applications/2/stop-service", json=body, headers=AUTH)
    assert (res.status_code, res.text, res.headers["content-type"]) == (
        400, V2_SERVICE_ENDPOINT_ERROR, HTML)
    assert ctx.actions.calls == []


@pytest.mark.parametrize("message", [APP_NOT_FOUND, SERVICE_NOT_FOUND, TARGET_SERVICE_NOT_FOUND])
def test_service_action_not_found_is_404_text(ctx: FakeContext, client: TestClient,
                                              message: str) -> None:
    ctx.actions.fail["service_action"] = NotFound(message)
    res = client.post("/v2/applications/2/restart-service", json={"serviceName": "nope"},
                      headers=AUTH)
    assert (res.status_code, res.text) == (404, message)


def test_service_action_locked_and_failed(ctx: FakeContext, client: TestClient) -> None:
    # the fake's text: the spec's is pinned on the real path (integration/test_lock_bodies.py)
    ctx.actions.fail["service_action"] = UpdatesLocked("a lock message from the fake")
    res = client.post("/v2/applications/2/stop-service", json={"serviceName": "web"},
                      headers=AUTH)
    assert res.status_code == 423
    assert res.json() == {"status": "failed", "message": "a lock message from the fake"}
    ctx.actions.fail["service_action"] = EngineError("engine down")
    res = client.post("/v2/applications/2/stop-service", json={"serviceName": "web"},
                      headers=AUTH)
    assert res.status_code == 503


# -- purge / restart ----------------------------------------------------------------------------

@pytest.mark.parametrize(("verb", "action"), [("purge", "purge_app"),
                                              ("restart", "restart_app")])
def test_app_actions(ctx: FakeContext, client: TestClient, verb: str, action: str) -> None:
    res = client.post(f"/v2/applications/1/{verb}", json={"force": "on"}, headers=AUTH)
    assert (res.status_code, res.text, res.headers["content-type"]) == (200, "OK", HTML)
    assert ctx.actions.called(action) == [(1, True)]
    res = client.post(f"/v2/applications/0/{verb}", headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": "Missing app id"}
    res = client.post(f"/v2/applications/2/{verb}", params={"apikey": APP1_KEY})
    assert res.status_code == 401
    assert res.json() == {"status": "failed", "message": "Unauthorized"}
    ctx.actions.fail[action] = UpdatesLocked("locked")
    assert client.post(f"/v2/applications/1/{verb}", headers=AUTH).status_code == 423
    ctx.actions.fail[action] = RuntimeError("x")
    assert client.post(f"/v2/applications/1/{verb}", headers=AUTH).json() == {
        "status": "failed", "message": "x"}


# -- applications state -------------------------------------------------------------------------

def test_applications_state(client: TestClient) -> None:
    res = client.get("/v2/applications/state", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == {
        "main-app": {
            "appId": 1, "appUuid": "uuid1", "commit": "c0ffee1", "updateStatus": "done",
            "services": {"main": {"status": "Running", "image": MAIN_IMAGE,
                                  "downloadProgress": None, "releaseId": 10}},
        },
        "multi": {
            "appId": 2, "appUuid": "uuid2", "commit": "beef", "updateStatus": "downloading",
            "services": {
                "web": {"status": "Running", "image": WEB_IMAGE, "downloadProgress": None,
                        "releaseId": 20},
                "worker": {"status": "Downloading", "image": WORKER_IMAGE,
                           "downloadProgress": 35, "releaseId": 20},
            },
        },
    }


def test_applications_state_is_filtered_by_scope(client: TestClient) -> None:
    body = client.get("/v2/applications/state", params={"apikey": APP2_KEY}).json()
    assert list(body) == ["multi"]
    body = client.get("/v2/applications/state", params={"apikey": APP1_KEY}).json()
    assert list(body) == ["main-app"]


def test_applications_state_without_target(ctx: FakeContext, client: TestClient) -> None:
    ctx.snapshot = empty_snapshot(seq=9)
    assert client.get("/v2/applications/state", headers=AUTH).json() == {}


def test_application_state(client: TestClient) -> None:
    res = client.get("/v2/applications/2/state", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == {
        "commit": "0ldc0mmit",
        "local": {"2": {"services": {
            "2001": {"status": "Running", "releaseId": 20, "download_progress": None},
            "2002": {"status": "Downloading", "releaseId": 20, "download_progress": 35},
        }}},
    }


def test_application_state_errors(client: TestClient) -> None:
    res = client.get("/v2/applications/zero/state", headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": "Invalid application ID: zero"}
    res = client.get("/v2/applications/0/state", headers=AUTH)
    assert res.json() == {"status": "failed", "message": "Invalid application ID: 0"}
    res = client.get("/v2/applications/77/state", headers=AUTH)
    assert res.status_code == 409
    assert res.json() == {"status": "failed", "message": "Application ID does not exist: 77"}
    # Out of scope looks like a missing app.
    res = client.get("/v2/applications/2/state", params={"apikey": APP1_KEY})
    assert res.status_code == 409
    assert res.json() == {"status": "failed", "message": "Application ID does not exist: 2"}


# -- local target -------------------------------------------------------------------------------

def test_local_target_get_in_any_mode(ctx: FakeContext, client: TestClient) -> None:
    res = client.get("/v2/local/target-state", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == {"status": "success",
                          "state": {"local": {"name": "shy-frost", "config": {}, "apps": {}}}}


def test_local_target_post_outside_local_mode(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v2/local/target-state", json={"local": {}}, headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed",
                          "message": "Target state can only set when device is in local mode"}
    assert ctx.actions.calls == []


@pytest.mark.parametrize(("force", "expected"), [(None, False), (True, True), ("yes", True),
                                                 (0, False), ("", False)])
def test_local_target_post_in_local_mode(ctx: FakeContext, client: TestClient,
                                         force: object, expected: bool) -> None:
    ctx.local_mode = True
    body: dict[str, Any] = {"local": {"name": "Home", "apps": {}}}
    if force is not None:
        body["force"] = force
    res = client.post("/v2/local/target-state", json=body)
    assert res.status_code == 200
    assert res.json() == {"status": "success", "message": "OK"}
    assert ctx.actions.called("set_local_target") == [(body, expected)]


def test_local_target_post_unmanaged_counts_as_local(ctx: FakeContext,
                                                      client: TestClient) -> None:
    ctx.unmanaged = True
    assert client.post("/v2/local/target-state", json={"local": {}}).status_code == 200


def test_local_target_post_invalid(ctx: FakeContext, client: TestClient) -> None:
    ctx.local_mode = True
    ctx.actions.fail["set_local_target"] = TargetInvalid("local.apps.1.services", "not an object")
    res = client.post("/v2/local/target-state", json={"local": {"apps": {"1": {"services": 5}}}})
    assert res.status_code == 400
    assert res.json() == {"status": "failed",
                          "message": "local.apps.1.services: not an object"}


# -- device info, version, name, vpn ------------------------------------------------------------

def test_device_info(client: TestClient) -> None:
    res = client.get("/v2/local/device-info", headers=AUTH)
    assert res.json() == {"status": "success",
                          "info": {"arch": "aarch64", "deviceType": "raspberrypi4-64"}}


def test_version(client: TestClient) -> None:
    res = client.get("/v2/version", headers=AUTH)
    assert res.json() == {"status": "success", "version": COMPAT_VERSION}


def test_version_tag_extra(ctx: FakeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.api.app import build_app
    from tests.api.conftest import TestClient

    monkeypatch.setenv("SUPERVISOR_TAG_EXTRA", "py")
    with TestClient(build_app(ctx)) as client:
        assert client.get("/v2/version", headers=AUTH).json()["version"] == COMPAT_VERSION + "+py"


def test_device_name(ctx: FakeContext, client: TestClient) -> None:
    assert client.get("/v2/device/name", headers=AUTH).json() == {
        "status": "success", "deviceName": "shy-frost"}


def test_vpn(ctx: FakeContext, client: TestClient) -> None:
    assert client.get("/v2/device/vpn", headers=AUTH).json() == {
        "status": "success", "vpn": {"enabled": True, "connected": False}}


# -- containerId --------------------------------------------------------------------------------

def test_container_id(client: TestClient) -> None:
    for param in ("serviceName", "service"):
        res = client.get("/v2/containerId", params={param: "web"}, headers=AUTH)
        assert res.json() == {"status": "success", "containerId": "c2web"}
    res = client.get("/v2/containerId", headers=AUTH)
    assert res.json() == {"status": "success", "services": {"main": "c1main", "web": "c2web"}}


def test_container_id_unknown_and_scoped(client: TestClient) -> None:
    res = client.get("/v2/containerId", params={"serviceName": "worker"}, headers=AUTH)
    assert res.status_code == 503
    assert res.json() == {"status": "failed", "message": "Could not find service with that name"}
    res = client.get("/v2/containerId", params={"serviceName": "web", "apikey": APP1_KEY})
    assert res.status_code == 503
    res = client.get("/v2/containerId", params={"apikey": APP1_KEY})
    assert res.json() == {"status": "success", "services": {"main": "c1main"}}


# -- state/status -------------------------------------------------------------------------------

def test_state_status(client: TestClient) -> None:
    res = client.get("/v2/state/status", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == {
        "status": "success", "appState": "applying",
        "overallDownloadProgress": 35,
        "containers": [{"status": "Running", "serviceName": "main", "appId": 1, "imageId": 1000,
                        "serviceId": 101, "containerId": "c1main",
                        "createdAt": "2024-01-01T00:00:01.000Z"}],
        "images": [{"name": MAIN_IMAGE, "appId": 1, "serviceName": "main", "imageId": 1000,
                    "dockerImageId": "sha256:" + "a" * 64, "status": "Downloaded",
                    "downloadProgress": None}],
        "release": "c0ffee1",
    }


def test_state_status_scoped_to_app_2(client: TestClient) -> None:
    body = client.get("/v2/state/status", params={"apikey": APP2_KEY}).json()
    assert [c["containerId"] for c in body["containers"]] == ["c2web"]
    assert [(i["name"], i["status"], i["downloadProgress"]) for i in body["images"]] == [
        (WEB_IMAGE, "Downloaded", None), (WORKER_IMAGE, "Downloading", 35),
        ("registry2.example/v2/ddd@sha256:" + "4" * 64, "Deleting", None)]
    assert body["release"] == "0ldc0mmit"
    assert body["overallDownloadProgress"] == 35


def test_state_status_applied_and_empty(ctx: FakeContext, client: TestClient) -> None:
    ctx.snapshot = empty_snapshot(seq=3)
    assert client.get("/v2/state/status", headers=AUTH).json() == {
        "status": "success", "appState": "applied", "overallDownloadProgress": None,
        "containers": [], "images": []}


# -- tags ---------------------------------------------------------------------------------------

def test_tags_get(ctx: FakeContext, client: TestClient) -> None:
    res = client.get("/v2/device/tags", headers=AUTH)
    assert res.json() == {"status": "success",
                          "tags": [{"id": 1, "name": "where", "value": "shelf"}]}
    ctx.actions.fail["get_tags"] = NotFound("device tags need a cloud connection")
    res = client.get("/v2/device/tags", headers=AUTH)
    assert res.status_code == 500
    assert res.json() == {"status": "failed", "message": "device tags need a cloud connection"}


def test_tags_patch(ctx: FakeContext, client: TestClient) -> None:
    res = client.patch("/v2/device/tags", json={"a": "b", "c": ""}, headers=AUTH)
    assert res.status_code == 202
    assert res.json() == {"status": "success"}
    assert ctx.actions.called("set_tags") == [({"a": "b", "c": ""},)]


@pytest.mark.parametrize(("body", "message"), [
    ({"a": 1}, "Invalid tags body, must be an object like `{[tagKey: string]: string}`"),
    ({"a": None}, "Invalid tags body, must be an object like `{[tagKey: string]: string}`"),
    (["x"], "Invalid tags body, must be an object like `{[tagKey: string]: string}`"),
    ({"a b": "c"}, "Tag keys cannot contain whitespace"),
    ({"a\tb": "c"}, "Tag keys cannot contain whitespace"),
    # not upstream's: openBalena refuses these keys (docs/api.md "Differences from upstream")
    ({"io.balena.x": "c"}, "Tag keys beginning with io.balena. are reserved."),
    ({"ok": "c", "io.resin.y": "d"}, "Tag keys beginning with io.resin. are reserved."),
])
def test_tags_patch_invalid(ctx: FakeContext, client: TestClient, body: Any,
                            message: str) -> None:
    res = client.patch("/v2/device/tags", json=body, headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": message}
    assert ctx.actions.calls == []


def test_tags_patch_store_failure_is_500(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["set_tags"] = RuntimeError("disk full")
    res = client.patch("/v2/device/tags", json={"a": "b"}, headers=AUTH)
    assert res.status_code == 500
    assert res.json() == {"status": "failed", "message": "disk full"}


# -- cleanup-volumes ----------------------------------------------------------------------------

def test_cleanup_volumes_scope(ctx: FakeContext, client: TestClient) -> None:
    assert client.get("/v2/cleanup-volumes", headers=AUTH).json() == {"status": "success"}
    assert client.get("/v2/cleanup-volumes", params={"apikey": APP2_KEY}).status_code == 200
    assert ctx.actions.called("cleanup_volumes") == [(None,), (frozenset({2}),)]


# -- journal-logs -------------------------------------------------------------------------------

def test_journal_logs_streams(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v2/journal-logs", json={"count": 10, "format": "json", "follow": "1"},
                      headers=AUTH)
    assert res.status_code == 200
    assert res.content == b"line 1\nline 2\n"
    assert "content-type" not in res.headers
    (params,), = ctx.actions.called("journal_logs")
    assert params == JournalParams(follow=True, count=10, format="json")
    assert params.argv() == ["--follow", "-n", "10", "-o", "json"]
    assert ctx.actions.journal_closed


def test_journal_logs_all_options_form(ctx: FakeContext, client: TestClient) -> None:
    client.post("/v2/journal-logs", headers=AUTH, data={
        "all": "true", "count": "-3", "unit": "balena.service", "containerId": "abc",
        "since": "2024-01-01", "until": "now"})
    (params,), = ctx.actions.called("journal_logs")
    assert params.argv() == ["-a", "-u", "balena.service", "-t", "abc", "-o", "short",
                             "-S", "2024-01-01", "-U", "now"]


def test_journal_logs_unavailable(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["journal_logs"] = NotFound("journalctl is not available")
    res = client.post("/v2/journal-logs", headers=AUTH)
    assert res.status_code == 404
    assert res.json() == {"status": "failed", "message": "journalctl is not available"}


# -- locks and plan (ours) ----------------------------------------------------------------------

def test_locks(ctx: FakeContext, client: TestClient) -> None:
    ctx.held_locks = [
        {"appId": 1, "serviceName": "main", "path": "/tmp/l/1/main/updates.lock",
         "owner": "user"},
        {"appId": 2, "serviceName": "web", "path": "/tmp/l/2/web/updates.lock",
         "owner": "supervisor"},
    ]
    assert client.get("/v2/locks", headers=AUTH).json() == {
        "status": "success", "locks": ctx.held_locks}
    scoped = client.get("/v2/locks", params={"apikey": APP2_KEY}).json()
    assert [lock["appId"] for lock in scoped["locks"]] == [2]


def test_plan(ctx: FakeContext, client: TestClient) -> None:
    assert client.get("/v2/plan", headers=AUTH).json() == {
        "status": "success", "applying": True, "steps": []}
    ctx.snapshot = replace(ctx.snapshot, seq=2, plan=(
        Fetch(image=WORKER_IMAGE, app_id=2, service_name="worker", commit="beef"),
        Noop(reason="waiting"),
    ))
    body = client.get("/v2/plan", headers=AUTH).json()
    assert body["steps"] == [
        {"action": "fetch", "image": WORKER_IMAGE, "appId": 2, "serviceName": "worker",
         "commit": "beef"},
        {"action": "noop", "reason": "waiting", "appId": None},
    ]
    scoped = client.get("/v2/plan", params={"apikey": APP1_KEY}).json()
    assert [s["action"] for s in scoped["steps"]] == ["noop"]
