"""v1 endpoints: success paths, parameters, and every error api.md §3 lists."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from supervisor.errors import BadRequest, EngineError, NotFound, UpdatesLocked
from tests.api.fakes import (
    APP1_KEY,
    GLOBAL_KEY,
    MAIN_IMAGE,
    WORKER_IMAGE,
    FakeContext,
    container,
    empty_snapshot,
    standard_snapshot,
)
from tests.spec_texts import APP_NOT_FOUND, TARGET_SERVICE_NOT_FOUND, V2_SERVICE_ENDPOINT_ERROR

if TYPE_CHECKING:
    from starlette.testclient import TestClient

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
# Whatever the fake raises: these tests check where an error goes and its format. The
# spec's texts are pinned on the real code path (tests/integration/test_lock_bodies.py).
LOCK_MSG = "a lock message from the fake"


def post(client: TestClient, path: str, body: Any = None, *, form: bool = False,
         headers: dict[str, str] | None = None) -> Any:
    hdrs = {**AUTH, **(headers or {})}
    if body is None:
        return client.post(path, headers=hdrs)
    if form:
        return client.post(path, data=body, headers=hdrs)
    return client.post(path, json=body, headers=hdrs)


# -- healthy, blink -----------------------------------------------------------------------------

def test_unhealthy_is_500(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.results["health"] = (False, "reconciler stuck")
    res = client.get("/v1/healthy")
    assert (res.status_code, res.text) == (500, "Unhealthy")


def test_health_check_that_throws_is_500(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["health"] = RuntimeError("boom")
    res = client.get("/v1/healthy")
    assert (res.status_code, res.text) == (500, "Unhealthy")


def test_blink(ctx: FakeContext, client: TestClient) -> None:
    res = post(client, "/v1/blink", {"ignored": True})
    assert (res.status_code, res.text, res.headers["content-type"]) == (200, "OK", TEXT)
    assert ctx.actions.called("blink") == [()]


def test_blink_never_parses_the_body(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/blink", content=b"{not json", headers={
        **AUTH, "content-type": "application/json"})
    assert res.status_code == 200


# -- restart ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "form", "expected"), [
    ({"appId": 1}, False, (1, False)),
    ({"appId": "1"}, False, (1, False)),
    ({"appId": "1.00", "force": "true"}, False, (1, True)),
    ({"appId": 2, "force": True}, False, (2, True)),
    ({"appId": "2", "force": "1"}, True, (2, True)),
    ({"appId": "2", "force": "yes"}, True, (2, False)),
])
def test_restart(ctx: FakeContext, client: TestClient, body: dict[str, Any], form: bool,
                 expected: tuple[int, bool]) -> None:
    res = post(client, "/v1/restart", body, form=form)
    assert (res.status_code, res.text, res.headers["content-type"]) == (200, "OK", HTML)
    assert ctx.actions.called("restart_app") == [expected]


@pytest.mark.parametrize("body", [None, {}, {"appId": "abc"}, {"appId": 1.5}, {"appId": True}])
def test_restart_missing_app_id(ctx: FakeContext, client: TestClient, body: Any) -> None:
    res = post(client, "/v1/restart", body)
    assert (res.status_code, res.text) == (400, "Missing app id")
    assert ctx.actions.calls == []


def test_restart_accepts_app_id_zero_like_upstream(ctx: FakeContext, client: TestClient) -> None:
    assert post(client, "/v1/restart", {"appId": 0}).status_code == 200
    assert ctx.actions.called("restart_app") == [(0, False)]


def test_restart_ignores_other_content_types(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/restart", content=b"appId=1",
                      headers={**AUTH, "content-type": "text/plain"})
    assert (res.status_code, res.text) == (400, "Missing app id")


def test_restart_locked_is_423_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["restart_app"] = UpdatesLocked(LOCK_MSG, app_id=1, service="main")
    res = post(client, "/v1/restart", {"appId": 1})
    assert res.status_code == 423
    assert res.json() == {"status": "failed", "message": LOCK_MSG}


def test_restart_app_not_in_current_state_is_503(ctx: FakeContext, client: TestClient) -> None:
    msg = "Application with ID 9 is not in the current state"
    ctx.actions.fail["restart_app"] = NotFound(msg)
    res = post(client, "/v1/restart", {"appId": 9})
    assert res.status_code == 503
    assert res.headers["content-type"] == JSON
    assert res.json() == {"status": "failed", "message": msg}


def test_unexpected_exception_is_503_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["restart_app"] = ValueError("kaboom")
    res = post(client, "/v1/restart", {"appId": 1})
    assert res.status_code == 503
    assert res.json() == {"status": "failed", "message": "kaboom"}


# -- apps/:appId/stop|start ---------------------------------------------------------------------

@pytest.mark.parametrize(("verb", "action"), [("stop", "v1_stop"), ("start", "v1_start")])
def test_v1_app_stop_start(ctx: FakeContext, client: TestClient, verb: str, action: str) -> None:
    ctx.actions.results[action] = "c1main"
    res = post(client, f"/v1/apps/1/{verb}", {"force": "on"})
    assert res.status_code == 200
    assert res.headers["content-type"] == JSON
    assert res.json() == {"containerId": "c1main"}
    assert ctx.actions.called(action) == ([(1, True)] if verb == "stop" else [(1,)])


def test_v1_app_stop_invalid_id(ctx: FakeContext, client: TestClient) -> None:
    res = post(client, "/v1/apps/abc/stop")
    assert (res.status_code, res.text) == (400, "Invalid app id")


def test_v1_app_stop_out_of_scope_is_401_text(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/apps/2/stop", params={"apikey": APP1_KEY})
    assert (res.status_code, res.text, res.headers["content-type"]) == (401, "Unauthorized", HTML)
    assert ctx.actions.calls == []


@pytest.mark.parametrize(("error", "status", "message"), [
    (BadRequest(APP_NOT_FOUND), 400, APP_NOT_FOUND),
    (BadRequest(V2_SERVICE_ENDPOINT_ERROR), 400, V2_SERVICE_ENDPOINT_ERROR),
    (NotFound(TARGET_SERVICE_NOT_FOUND), 404, TARGET_SERVICE_NOT_FOUND),
])
def test_v1_app_stop_action_errors_are_text(ctx: FakeContext, client: TestClient,
                                            error: Exception, status: int, message: str) -> None:
    ctx.actions.fail["v1_stop"] = error
    res = post(client, "/v1/apps/1/stop")
    assert (res.status_code, res.text, res.headers["content-type"]) == (status, message, HTML)


def test_v1_app_stop_locked_is_423_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["v1_stop"] = UpdatesLocked(LOCK_MSG)
    res = post(client, "/v1/apps/1/stop")
    assert res.status_code == 423
    assert res.json() == {"status": "failed", "message": LOCK_MSG}


def test_v1_app_start_engine_error_is_503_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["v1_start"] = EngineError("engine down")
    res = post(client, "/v1/apps/1/start")
    assert res.status_code == 503
    assert res.json() == {"status": "failed", "message": "engine down"}


# -- reboot / shutdown --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/reboot", "/v1/shutdown"])
def test_reboot_shutdown(ctx: FakeContext, client: TestClient, path: str) -> None:
    res = post(client, path, {"force": True})
    assert res.status_code == 202
    assert res.text == '{"Data":"OK","Error":null}'
    assert res.headers["content-type"] == JSON
    assert ctx.actions.called(path.rsplit("/", 1)[1]) == [(True,)]


@pytest.mark.parametrize("path", ["/v1/reboot", "/v1/shutdown"])
def test_reboot_locked_is_go_style_423(ctx: FakeContext, client: TestClient, path: str) -> None:
    ctx.actions.fail[path.rsplit("/", 1)[1]] = UpdatesLocked(LOCK_MSG)
    res = post(client, path)
    assert res.status_code == 423
    assert res.json() == {"Data": "", "Error": LOCK_MSG}


def test_reboot_other_error_is_go_style_500(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["reboot"] = RuntimeError("logind said no")
    res = post(client, "/v1/reboot")
    assert res.status_code == 500
    assert res.json() == {"Data": "", "Error": "logind said no"}


# -- GET /v1/apps/:appId ------------------------------------------------------------------------

def test_v1_app_get(client: TestClient) -> None:
    res = client.get("/v1/apps/1", headers=AUTH)
    assert res.status_code == 200
    body = res.json()
    assert body == {
        "appId": 1, "commit": "c0ffee1", "containerId": "c1main",
        "env": {"FOO": "bar", "BALENA_APP_ID": "1"},
        "imageId": "sha256:c1main" + "0" * 58, "releaseId": 10,
    }


def test_v1_app_get_app_id_as_padded_string(client: TestClient) -> None:
    assert client.get("/v1/apps/1.0", headers=AUTH).json()["appId"] == 1


def test_v1_app_get_errors(ctx: FakeContext, client: TestClient) -> None:
    res = client.get("/v1/apps/x", headers=AUTH)
    assert (res.status_code, res.text) == (400, "Missing app id")
    res = client.get("/v1/apps/2", params={"apikey": APP1_KEY})
    assert res.status_code == 401
    assert res.json() == {"status": "failed", "message": "Application is not available"}
    res = client.get("/v1/apps/7", headers=AUTH)
    assert (res.status_code, res.text) == (400, "App not found")
    # App 2 has one container while `worker` downloads: a single-container app for now.
    assert client.get("/v1/apps/2", headers=AUTH).json()["containerId"] == "c2web"
    snap = ctx.snapshot
    worker = container(2, "worker", "c2worker", image_id=2002, release_id=20, commit="beef",
                       image=WORKER_IMAGE, running=False)
    ctx.snapshot = replace(snap, seq=2, current=replace(
        snap.current, containers=(*snap.current.containers, worker)))
    res = client.get("/v1/apps/2", headers=AUTH)
    assert (res.status_code, res.text) == (
        400, "Some v1 endpoints are only allowed on single-container apps")


def test_v1_app_get_skips_the_old_container_of_a_handover(ctx: FakeContext,
                                                          client: TestClient) -> None:
    snap = ctx.snapshot
    old = container(1, "main", "c1old", image_id=999, release_id=9, commit="0ld",
                    image=MAIN_IMAGE, handover_old=True)
    ctx.snapshot = replace(snap, seq=2, current=replace(
        snap.current, containers=(old, *snap.current.containers)))
    assert client.get("/v1/apps/1", headers=AUTH).json()["containerId"] == "c1main"


# -- purge --------------------------------------------------------------------------------------

def test_v1_purge(ctx: FakeContext, client: TestClient) -> None:
    res = post(client, "/v1/purge", {"appId": "1", "force": 1})
    assert res.status_code == 200
    assert res.text == '{"Data":"OK","Error":""}'
    assert ctx.actions.called("purge_app") == [(1, True)]


def test_v1_purge_errors(ctx: FakeContext, client: TestClient) -> None:
    res = post(client, "/v1/purge", {})
    assert (res.status_code, res.text) == (400, "Invalid or missing appId")
    res = client.post("/v1/purge", json={"appId": 2}, params={"apikey": APP1_KEY})
    assert res.status_code == 401
    assert res.json() == {"status": "failed", "message": "Unauthorized"}
    ctx.actions.fail["purge_app"] = UpdatesLocked(LOCK_MSG)
    assert post(client, "/v1/purge", {"appId": 1}).status_code == 423
    ctx.actions.fail["purge_app"] = NotFound("Application with ID 1 is not in the current state")
    assert post(client, "/v1/purge", {"appId": 1}).status_code == 503


# -- update -------------------------------------------------------------------------------------

def test_update_started_is_204(ctx: FakeContext, client: TestClient) -> None:
    res = post(client, "/v1/update", {"force": True, "cancel": "true"})
    assert (res.status_code, res.content) == (204, b"")
    assert ctx.actions.called("update") == [(True, True)]


def test_update_not_started_is_202_accepted(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.results["update"] = False
    res = post(client, "/v1/update")
    assert (res.status_code, res.text, res.headers["content-type"]) == (202, "Accepted", TEXT)
    assert ctx.actions.called("update") == [(False, False)]


# -- host-config --------------------------------------------------------------------------------

def test_host_config_get(ctx: FakeContext, client: TestClient) -> None:
    conf = {"network": {"hostname": "abc1234",
                        "proxy": {"type": "socks5", "ip": "example.org", "port": 1080}}}
    ctx.actions.results["get_host_config"] = conf
    res = client.get("/v1/device/host-config", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == conf


def test_host_config_get_failure_is_503_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.actions.fail["get_host_config"] = OSError("no /mnt/boot")
    res = client.get("/v1/device/host-config", headers=AUTH)
    assert res.status_code == 503
    assert res.json() == {"status": "failed", "message": "no /mnt/boot"}


def test_host_config_patch_force_from_top_level(ctx: FakeContext, client: TestClient) -> None:
    body = {"network": {"hostname": "x", "force": True}}
    res = client.patch("/v1/device/host-config", json=body, headers=AUTH)
    assert (res.status_code, res.text, res.headers["content-type"]) == (200, "OK", HTML)
    assert ctx.actions.called("patch_host_config") == [(body, False)]
    client.patch("/v1/device/host-config", json={**body, "force": True}, headers=AUTH)
    assert ctx.actions.called("patch_host_config")[1] == ({**body, "force": True}, True)


@pytest.mark.parametrize(("error", "status"), [
    (BadRequest("Could not parse host config input to a valid format:\nno network"), 400),
    (UpdatesLocked(LOCK_MSG), 423),
    (RuntimeError("dbus is down"), 503),
])
def test_host_config_patch_errors_are_text(ctx: FakeContext, client: TestClient,
                                           error: Exception, status: int) -> None:
    ctx.actions.fail["patch_host_config"] = error
    res = client.patch("/v1/device/host-config", json={}, headers=AUTH)
    assert (res.status_code, res.text, res.headers["content-type"]) == (status, str(error), HTML)


# -- device -------------------------------------------------------------------------------------

def test_v1_device_while_downloading(client: TestClient) -> None:
    res = client.get("/v1/device", headers=AUTH)
    assert res.status_code == 200
    assert res.json() == {
        "api_port": 48484, "ip_address": "192.168.1.10 10.114.104.1",
        "mac_address": "DC:A6:32:00:00:01", "os_version": "balenaOS 6.0.0",
        "supervisor_version": "19.0.5", "update_pending": True, "update_downloaded": False,
        "update_failed": False, "status": "Downloading", "download_progress": 35,
    }  # no commit while an apply is in progress


def test_v1_device_idle(ctx: FakeContext, client: TestClient) -> None:
    snap = standard_snapshot(seq=2, apply_in_progress=False, update_pending=False, images=())
    ctx.snapshot = replace(snap, services=snap.services[:2])
    body = client.get("/v1/device", headers=AUTH).json()
    assert body["status"] == "Idle"
    assert body["download_progress"] is None
    assert body["commit"] == "c0ffee1"  # the first (lowest) app's commit


def test_v1_device_reflects_new_snapshots(ctx: FakeContext, client: TestClient) -> None:
    assert client.get("/v1/device", headers=AUTH).json()["status"] == "Downloading"
    ctx.snapshot = empty_snapshot(seq=5)
    body = client.get("/v1/device", headers=AUTH).json()
    assert body["status"] == "Idle"
    assert "commit" not in body
