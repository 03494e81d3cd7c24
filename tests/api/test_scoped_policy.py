"""`--scoped-keys own-apps`: a service's scoped key only reaches its own apps' endpoints.

By default (upstream, api.md §2.5) a scoped key may call every device-wide route: reboot,
update, host-config... (tests/api/test_auth.py::test_scoped_key_can_reboot). With the policy
on, the same key gets upstream's plain `401 Unauthorized` there, and no action runs; its own
apps' routes, the filtered views and the version still answer; the global key is unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from supervisor.api.app import build_app
from supervisor.settings import load_settings
from tests.api.fakes import APP1_KEY, GLOBAL_KEY, FakeContext

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

# Every device-wide route of the table (api.md §2.5 "Everything else", plus ours).
DEVICE_WIDE = [
    ("POST", "/v1/blink", None), ("POST", "/v1/reboot", None), ("POST", "/v1/shutdown", None),
    ("POST", "/v1/update", {"force": True}), ("GET", "/v1/device", None),
    ("GET", "/v1/device/host-config", None),
    ("PATCH", "/v1/device/host-config", {"network": {"hostname": "x"}}),
    ("GET", "/v2/local/target-state", None), ("POST", "/v2/local/target-state", {}),
    ("GET", "/v2/local/device-info", None), ("GET", "/v2/device/name", None),
    ("GET", "/v2/device/tags", None), ("PATCH", "/v2/device/tags", {"tags": {}}),
    ("GET", "/v2/device/vpn", None), ("GET", "/v2/cleanup-volumes", None),
    ("POST", "/v2/journal-logs", {}), ("GET", "/v2/locks", None), ("GET", "/v2/plan", None),
    # path tricks: Express matches case-insensitively, with one trailing slash
    ("POST", "/V1/Reboot/", None), ("GET", "/v1/DEVICE", None),
]
# What app 1's key may still call, and what each answers.
OWN_APPS = [
    ("POST", "/v1/restart", {"appId": 1}, 200),
    ("POST", "/v1/apps/1/stop", None, 200),
    ("POST", "/v1/apps/1/start", None, 200),
    ("GET", "/v1/apps/1", None, 200),
    ("POST", "/v1/purge", {"appId": 1}, 200),
    ("POST", "/v2/applications/1/restart-service", {"serviceName": "main"}, 200),
    ("POST", "/v2/applications/1/stop-service", {"serviceName": "main"}, 200),
    ("POST", "/v2/applications/1/start-service", {"serviceName": "main"}, 200),
    ("POST", "/v2/applications/1/purge", None, 200),
    ("POST", "/v2/applications/1/restart", None, 200),
    ("GET", "/v2/applications/state", None, 200),
    ("GET", "/v2/applications/1/state", None, 200),
    ("GET", "/v2/version", None, 200),
    ("GET", "/V2/Version/", None, 200),
    ("GET", "/v2/containerId", None, 200),
    ("GET", "/v2/state/status", None, 200),
]


@pytest.fixture
def own_apps(ctx: FakeContext) -> Iterator[TestClient]:
    with TestClient(build_app(ctx, scoped_keys_own_apps=True),
                    base_url="http://127.0.0.1:48484") as client:
        yield client


def call(client: TestClient, method: str, path: str, body: Any, key: str) -> Any:
    return client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(("method", "path", "body"), DEVICE_WIDE)
def test_own_apps_refuses_a_scoped_key_on_device_wide_routes(
        ctx: FakeContext, own_apps: TestClient, method: str, path: str, body: Any) -> None:
    res = call(own_apps, method, path, body, APP1_KEY)
    assert (res.status_code, res.text) == (401, "Unauthorized")
    assert res.headers["content-type"] == "text/plain; charset=utf-8"
    assert ctx.actions.calls == []  # nothing ran


@pytest.mark.parametrize(("method", "path", "body"), DEVICE_WIDE[:18])
def test_own_apps_keeps_the_global_key_everywhere(
        own_apps: TestClient, method: str, path: str, body: Any) -> None:
    assert call(own_apps, method, path, body, GLOBAL_KEY).status_code != 401


@pytest.mark.parametrize(("method", "path", "body", "status"), OWN_APPS)
def test_own_apps_lets_a_scoped_key_reach_its_own_app(
        own_apps: TestClient, method: str, path: str, body: Any, status: int) -> None:
    assert call(own_apps, method, path, body, APP1_KEY).status_code == status


def test_own_apps_still_refuses_other_apps_as_upstream(own_apps: TestClient) -> None:
    res = call(own_apps, "POST", "/v1/restart", {"appId": 2}, APP1_KEY)
    assert (res.status_code, res.json()) == (401, {"status": "failed",
                                                   "message": "Unauthorized"})


def test_own_apps_lets_a_scoped_key_regenerate_itself(
        ctx: FakeContext, own_apps: TestClient) -> None:
    res = call(own_apps, "POST", "/v1/regenerate-api-key", None, APP1_KEY)
    assert res.status_code == 200
    assert ctx.actions.called("regenerate_api_key") == [(APP1_KEY,)]


def test_by_default_a_scoped_key_reaches_device_wide_routes(
        ctx: FakeContext, client: TestClient) -> None:
    for method, path, body in DEVICE_WIDE[:18]:
        assert call(client, method, path, body, APP1_KEY).status_code != 401, path
    assert ctx.actions.called("reboot") == [(False,)]


def test_the_setting(tmp_path: Any) -> None:
    def scoped_keys(args: dict[str, str | None], env: dict[str, str]) -> str:
        base = {"boot_dir": str(tmp_path), "data_dir": str(tmp_path)}
        return load_settings({**base, **args}, env).scoped_keys

    assert scoped_keys({}, {}) == "any-endpoint"
    assert scoped_keys({}, {"SUPERVISOR_SCOPED_KEYS": "own-apps"}) == "own-apps"
    assert scoped_keys({"scoped_keys": "Own-Apps"}, {}) == "own-apps"
    with pytest.raises(Exception, match="--scoped-keys: unknown scoped key policy 'mine'"):
        scoped_keys({"scoped_keys": "mine"}, {})
