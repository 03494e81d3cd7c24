"""Cross-cutting behaviour of build_app: bodies, routing like Express, the request log, the
error map and the view cache."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from supervisor.api import views
from supervisor.api.app import (
    Endpoint,
    ErrorStyle,
    SafetyNetMiddleware,
    build_app,
    render_error,
)
from supervisor.api.params import ApiRequest
from supervisor.errors import BadRequest, Conflict, UpdatesLocked
from tests.api.conftest import TestClient
from tests.api.fakes import GLOBAL_KEY, FakeContext

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
JSON_CT = {"content-type": "application/json"}


@pytest.mark.parametrize("raw", [b"{not json", b'{"appId": 1,}', b"5", b'"x"', b"true",
                                 b'{"appId": NaN}', b"\xff\xfe{"])
def test_malformed_json_is_400(ctx: FakeContext, client: TestClient, raw: bytes) -> None:
    res = client.post("/v1/restart", content=raw, headers={**AUTH, **JSON_CT})
    assert res.status_code == 400
    body = res.json()
    assert body["status"] == "failed" and body["message"]
    assert ctx.actions.calls == []


def test_malformed_json_is_400_json_even_on_text_style_routes(client: TestClient) -> None:
    res = client.patch("/v1/device/host-config", content=b"{", headers={**AUTH, **JSON_CT})
    assert res.status_code == 400
    assert res.json()["status"] == "failed"


def test_json_with_charset_and_empty_json_body(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/restart", content=b'{"appId": 1}',
                      headers={**AUTH, "content-type": "application/json; charset=utf-8"})
    assert res.status_code == 200
    res = client.post("/v1/reboot", content=b"", headers={**AUTH, **JSON_CT})
    assert res.status_code == 202
    assert ctx.actions.called("reboot") == [(False,)]


def test_json_array_body_has_no_fields(client: TestClient) -> None:
    res = client.post("/v1/restart", json=[{"appId": 1}], headers=AUTH)
    assert (res.status_code, res.text) == (400, "Missing app id")


def test_body_too_large_is_413(ctx: FakeContext, client: TestClient) -> None:
    raw = b'{"appId": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    res = client.post("/v1/restart", content=raw, headers={**AUTH, **JSON_CT})
    assert res.status_code == 413
    assert res.json()["status"] == "failed"
    assert ctx.actions.calls == []


def test_form_body_nested_and_repeated(ctx: FakeContext, client: TestClient) -> None:
    res = client.patch("/v1/device/host-config",
                       content=b"network[hostname]=box&network[proxy][noProxy][]=10.0.0.0%2F8"
                               b"&network[proxy][noProxy][]=1.2.3.4&force=1",
                       headers={**AUTH, "content-type": "application/x-www-form-urlencoded"})
    assert res.status_code == 200
    assert ctx.actions.called("patch_host_config") == [({
        "network": {"hostname": "box", "proxy": {"noProxy": ["10.0.0.0/8", "1.2.3.4"]}},
        "force": "1"}, True)]


@pytest.mark.parametrize("path", ["/V1/Device", "/v1/device/", "/PING", "/v1/healthy/"])
def test_paths_match_like_express(client: TestClient, path: str) -> None:
    assert client.get(path, headers=AUTH).status_code == 200


def test_path_params_keep_their_case(client: TestClient) -> None:
    res = client.get("/v2/applications/ABC/state", headers=AUTH)
    assert res.json()["message"] == "Invalid application ID: ABC"


def test_trailing_slash_is_not_redirected(client: TestClient) -> None:
    res = client.get("/v2/version/", headers=AUTH, follow_redirects=False)
    assert res.status_code == 200


def test_head_on_get_routes(client: TestClient) -> None:
    assert client.head("/ping").status_code == 200
    assert client.head("/v1/device", headers=AUTH).status_code == 200


def test_options_lists_methods_like_express(client: TestClient) -> None:
    res = client.options("/v1/device/host-config", headers=AUTH)
    assert res.status_code == 200
    assert res.headers["allow"] == "GET,HEAD,PATCH"
    assert client.options("/nowhere", headers=AUTH).status_code == 404
    assert client.options("/v1/device/host-config").status_code == 401


def test_request_log_never_shows_the_key(client: TestClient,
                                         caplog: pytest.LogCaptureFixture) -> None:
    # successful reads log at debug (they are the bulk of the traffic), the rest at info
    with caplog.at_level(logging.DEBUG, logger="supervisor.api"):
        client.get("/v1/device", params={"apikey": GLOBAL_KEY})
        client.get("/v1/device", params={"apikey": "wrong-key-value"})
    levels = {r.getMessage().split(" - ")[0]: r.levelno for r in caplog.records
              if r.name == "supervisor.api"}
    assert levels["GET /v1/device 200"] == logging.DEBUG
    assert levels["GET /v1/device 401"] == logging.INFO
    lines = [r.getMessage() for r in caplog.records if r.name == "supervisor.api"]
    assert any(line.startswith("GET /v1/device 200 - ") and line.endswith(" ms")
               for line in lines), lines
    assert any(line.startswith("GET /v1/device 401 - ") for line in lines), lines
    assert not [line for line in caplog.text.splitlines()
                if GLOBAL_KEY in line or "wrong-key-value" in line]


def _boom_endpoint(exc: Exception) -> Endpoint:
    async def boom(r: ApiRequest) -> Response:
        raise exc
    return Endpoint("GET", "/v2/boom", boom, ErrorStyle.DEFAULT)


def test_extra_endpoints_get_auth_and_the_error_map(ctx: FakeContext) -> None:
    async def hello(r: ApiRequest) -> Response:
        return views.json({"apps": sorted(r.auth.apps or [])})

    extra = [Endpoint("GET", "/v2/hello", hello, doc={"summary": "hi", "responses": {}}),
             _boom_endpoint(UpdatesLocked("held"))]
    with TestClient(build_app(ctx, extra=extra)) as client:
        assert client.get("/v2/hello").status_code == 401
        assert client.get("/v2/hello", headers=AUTH).json() == {"apps": []}
        res = client.get("/v2/boom", headers=AUTH)
        assert (res.status_code, res.json()) == (423, {"status": "failed", "message": "held"})
        assert client.get("/openapi.json").json()["paths"]["/v2/hello"]["get"]["summary"] == "hi"


def test_key_record_failure_is_503_text(ctx: FakeContext) -> None:
    class Boom:
        scopes = property(lambda self: (_ for _ in ()).throw(RuntimeError("bad scopes")))

    ctx.keys["weird"] = Boom()  # type: ignore[assignment]
    with TestClient(build_app(ctx)) as client:
        res = client.get("/v1/device", params={"apikey": "weird"})
    assert res.status_code == 503
    assert res.text.startswith("Unexpected error")


def test_safety_net_turns_escaped_errors_into_503_json() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("escaped")

    res = TestClient(SafetyNetMiddleware(broken)).get("/anything")
    assert res.status_code == 503
    assert res.json() == {"status": "failed", "message": "escaped"}


def test_safety_net_reraises_once_the_response_started() -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        TestClient(SafetyNetMiddleware(half)).get("/anything")


@pytest.mark.parametrize(("style", "exc", "status", "body"), [
    (ErrorStyle.DEFAULT, Conflict("c"), 503, b'{"status":"failed","message":"c"}'),
    (ErrorStyle.DEFAULT, RuntimeError(""), 503,
     b'{"status":"failed","message":"Unknown error"}'),
    (ErrorStyle.STATUS, Conflict("c"), 409, b'{"status":"failed","message":"c"}'),
    (ErrorStyle.STATUS, RuntimeError("r"), 503, b'{"status":"failed","message":"r"}'),
    (ErrorStyle.LEGACY, UpdatesLocked("l"), 423, b'{"status":"failed","message":"l"}'),
    (ErrorStyle.LOCAL_TARGET, RuntimeError("r"), 503, b'{"status":"failed","message":"r"}'),
    (ErrorStyle.V2_500, BadRequest("b"), 500, b'{"status":"failed","message":"b"}'),
    (ErrorStyle.GO, BadRequest("b"), 500, b'{"Data":"","Error":"b"}'),
    (ErrorStyle.HEALTH, UpdatesLocked("l"), 500, b"Unhealthy"),
])
def test_render_error_map(style: ErrorStyle, exc: Exception, status: int, body: bytes) -> None:
    res = render_error(exc, style, "POST", "/x")
    assert (res.status_code, res.body) == (status, body)


def test_view_cache_rebuilds_only_for_a_new_snapshot(ctx: FakeContext) -> None:
    cache = views.ViewCache()
    builds: list[int] = []

    def build() -> dict[str, int]:
        builds.append(ctx.snapshot.seq)
        return {"seq": ctx.snapshot.seq}

    first = ctx.snapshot
    assert cache.get(first, "k", build) == b'{"seq":1}'
    assert cache.get(first, "k", build) == b'{"seq":1}'
    assert builds == [1]
    assert cache.get(first, ("k", frozenset({1})), build) == b'{"seq":1}'
    assert builds == [1, 1]
    from dataclasses import replace
    ctx.snapshot = replace(first, seq=2)
    assert cache.get(ctx.snapshot, "k", build) == b'{"seq":2}'
    assert builds == [1, 1, 2]
