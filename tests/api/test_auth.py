"""Authentication and scopes (api.md §2, tests.md §2 behaviours 1-8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from supervisor.api.auth import allowed_apps, key_from_request
from tests.api.fakes import APP1_KEY, APP2_KEY, GLOBAL_KEY, MULTI_KEY, FakeContext

if TYPE_CHECKING:
    from starlette.testclient import TestClient

TEXT = "text/plain; charset=utf-8"


def test_ping_and_healthy_need_no_key(client: TestClient) -> None:
    ping = client.get("/ping")
    assert (ping.status_code, ping.text) == (200, "OK")
    assert ping.headers["content-type"] == "text/html; charset=utf-8"
    healthy = client.get("/v1/healthy")
    assert (healthy.status_code, healthy.text) == (200, "OK")
    assert healthy.headers["content-type"] == TEXT


def test_ping_ignores_a_bad_key(client: TestClient) -> None:
    assert client.get("/ping?apikey=nope").status_code == 200


@pytest.mark.parametrize("path", ["/v1/device", "/v2/version", "/v2/state/status"])
def test_no_key_is_401_plain_text(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert (res.status_code, res.text) == (401, "Unauthorized")
    assert res.headers["content-type"] == TEXT


def test_wrong_key_is_401(client: TestClient) -> None:
    res = client.get("/v1/device", params={"apikey": "wrong"})
    assert (res.status_code, res.text) == (401, "Unauthorized")


def test_query_key_accepted(client: TestClient) -> None:
    assert client.get("/v1/device", params={"apikey": GLOBAL_KEY}).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "ApiKey", "apikey", "ApIKeY"])
def test_header_schemes_any_case(client: TestClient, scheme: str) -> None:
    res = client.get("/v1/device", headers={"Authorization": f"{scheme} {GLOBAL_KEY}"})
    assert res.status_code == 200


@pytest.mark.parametrize("header", [
    f"Basic {GLOBAL_KEY}", f"Bearer  {GLOBAL_KEY}", f"Bearer {GLOBAL_KEY} x", GLOBAL_KEY,
    "Bearer a-b",
])
def test_malformed_headers_rejected(client: TestClient, header: str) -> None:
    assert client.get("/v1/device", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize("name", ["ApiKey", "APIKEY", "api_key"])
def test_query_name_is_exact(client: TestClient, name: str) -> None:
    assert client.get(f"/v1/device?{name}={GLOBAL_KEY}").status_code == 401


def test_query_key_beats_a_valid_header(client: TestClient) -> None:
    res = client.get("/v1/device?apikey=invalid",
                     headers={"Authorization": f"Bearer {GLOBAL_KEY}"})
    assert res.status_code == 401
    res = client.get(f"/v1/device?apikey={GLOBAL_KEY}",
                     headers={"Authorization": "Bearer invalid"})
    assert res.status_code == 200


def test_empty_query_key_falls_back_to_header(client: TestClient) -> None:
    res = client.get("/v1/device?apikey=", headers={"Authorization": f"Bearer {GLOBAL_KEY}"})
    assert res.status_code == 200


def test_repeated_query_key_is_not_a_key(client: TestClient) -> None:
    res = client.get(f"/v1/device?apikey={GLOBAL_KEY}&apikey={GLOBAL_KEY}")
    assert res.status_code == 401


@pytest.mark.parametrize("mode", ["local_mode", "unmanaged"])
def test_no_auth_in_local_mode_or_unmanaged(ctx: FakeContext, client: TestClient,
                                            mode: str) -> None:
    setattr(ctx, mode, True)
    assert client.get("/v1/device", headers={"Authorization": "Bearer invalid"}).status_code \
        == 200
    assert client.get("/v1/device").status_code == 200
    # Every app is in scope, whatever the key.
    res = client.post("/v1/restart", json={"appId": 2},
                      headers={"Authorization": f"Bearer {APP1_KEY}"})
    assert (res.status_code, res.text) == (200, "OK")
    assert ctx.lookups == 0


def test_key_store_failure_is_503_text(ctx: FakeContext, client: TestClient) -> None:
    ctx.lookup_error = RuntimeError("database is locked")
    res = client.get("/v1/device", params={"apikey": GLOBAL_KEY})
    assert res.status_code == 503
    assert res.text == "Unexpected error: database is locked"


def test_unknown_route_401_without_key_404_with(client: TestClient) -> None:
    assert client.get("/nothing/here").status_code == 401
    res = client.get("/nothing/here", params={"apikey": GLOBAL_KEY})
    assert res.status_code == 404
    assert "<pre>Cannot GET /nothing/here</pre>" in res.text
    assert res.headers["content-type"] == "text/html; charset=utf-8"
    assert GLOBAL_KEY not in res.text


def test_wrong_method_on_known_path_is_404_like_express(client: TestClient) -> None:
    res = client.get("/v1/restart", params={"apikey": GLOBAL_KEY})
    assert res.status_code == 404
    assert "Cannot GET /v1/restart" in res.text
    # ...and the open routes only open GET: POST /ping goes through auth first.
    assert client.post("/ping").status_code == 401


def test_scoped_key_restart_other_app_is_401_json(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/restart", json={"appId": 2}, params={"apikey": APP1_KEY})
    assert res.status_code == 401
    assert res.json() == {"status": "failed", "message": "Unauthorized"}
    assert ctx.actions.called("restart_app") == []
    ok = client.post("/v1/restart", json={"appId": 2}, params={"apikey": GLOBAL_KEY})
    assert (ok.status_code, ok.text) == (200, "OK")
    assert ctx.actions.called("restart_app") == [(2, False)]


def test_key_with_several_app_scopes(ctx: FakeContext, client: TestClient) -> None:
    for app_id in (1, 2):
        res = client.post("/v1/restart", json={"appId": app_id}, params={"apikey": MULTI_KEY})
        assert res.status_code == 200
    assert client.post("/v1/restart", json={"appId": 3},
                       params={"apikey": MULTI_KEY}).status_code == 401


def test_scoped_key_can_reboot(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/reboot", headers={"Authorization": f"Bearer {APP2_KEY}"})
    assert res.status_code == 202
    assert ctx.actions.called("reboot") == [(False,)]


def test_regenerate_kills_the_old_key(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/regenerate-api-key", params={"apikey": APP1_KEY})
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/html; charset=utf-8"
    new_key = res.text
    assert len(new_key) == 32 and int(new_key, 16) >= 0
    assert ctx.actions.called("regenerate_api_key") == [(APP1_KEY,)]
    assert client.get("/v1/device", params={"apikey": APP1_KEY}).status_code == 401
    assert client.get("/v1/device", params={"apikey": new_key}).status_code == 200
    # The new key keeps the old one's scope.
    assert client.post("/v1/restart", json={"appId": 2},
                       params={"apikey": new_key}).status_code == 401


def test_regenerate_uses_the_header_key(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/regenerate-api-key", headers={"Authorization": f"ApiKey {APP2_KEY}"})
    assert res.status_code == 200
    assert ctx.actions.called("regenerate_api_key") == [(APP2_KEY,)]


def test_regenerate_failure_is_503_json(ctx: FakeContext, client: TestClient) -> None:
    ctx.local_mode = True  # no key at all: the action cannot find key ''
    res = client.post("/v1/regenerate-api-key")
    assert res.status_code == 503
    assert res.json()["status"] == "failed"


def test_key_from_request_unit() -> None:
    assert key_from_request(b"apikey=abc", "Bearer zzz") == "abc"
    assert key_from_request(b"x=1", "bearer zzz") == "zzz"
    assert key_from_request(b"", "Token zzz") == ""
    assert key_from_request(b"", None) == ""
    assert key_from_request(b"apikey=a%20b", None) == "a b"
    assert key_from_request(b"%61pikey=abc", None) == "abc"  # qs decodes names too


def test_allowed_apps_forms() -> None:
    assert allowed_apps([{"type": "global"}]) is None
    assert allowed_apps(({"type": "app", "appId": 3}, {"type": "app", "appId": 4})) == {3, 4}
    assert allowed_apps('[{"type":"app","appId":7}]') == {7}
    assert allowed_apps("not json") == frozenset()
    assert allowed_apps([{"type": "app", "appId": True}]) == frozenset()
    assert allowed_apps(None) == frozenset()
