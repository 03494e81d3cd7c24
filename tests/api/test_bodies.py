"""Hostile bodies on every route that reads one: deep nesting, too many parameters or values,
NUL bytes, non-ASCII digits. Each is a 4xx naming the problem, and no action runs.

The real-socket side (memory while a body streams in, /ping while a big body is parsed) is in
tests/api/test_body_socket.py.
"""

from __future__ import annotations

import pytest

from supervisor.api.app import endpoints
from supervisor.api.params import check_int, parse_form, parse_json
from tests.api.conftest import TestClient
from tests.api.fakes import GLOBAL_KEY, FakeContext

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
JSON_CT = {"content-type": "application/json"}
FORM_CT = {"content-type": "application/x-www-form-urlencoded"}

BODY_ROUTES = [(ep.method, ep.path.replace("{appId}", "1")) for ep in endpoints()
               if ep.parse_body]
DEEP = 10_000
FULLWIDTH_7302 = "\uff17\uff13\uff10\uff12"  # what int() would read as 7302


def deep_array(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_object(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def test_every_body_route_is_covered() -> None:
    # the table is the source of truth; a new body route joins these tests by itself
    assert ("POST", "/v2/local/target-state") in BODY_ROUTES
    assert ("PATCH", "/v1/device/host-config") in BODY_ROUTES
    assert ("POST", "/v2/journal-logs") in BODY_ROUTES
    assert len(BODY_ROUTES) >= 15


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("body", [deep_array(DEEP), deep_object(DEEP)],
                         ids=["array", "object"])
def test_deeply_nested_json_is_400_on_every_body_route(
        ctx: FakeContext, client: TestClient, method: str, path: str, body: bytes) -> None:
    ctx.local_mode = True  # so that /v2/local/target-state would accept a target
    res = client.request(method, path, content=body, headers={**AUTH, **JSON_CT})
    assert res.status_code == 400
    assert res.headers["content-type"].startswith("application/json")
    payload = res.json()
    assert payload["status"] == "failed"
    assert "nests too deeply" in payload["message"]
    assert ctx.actions.calls == []


@pytest.mark.parametrize("field", ["name", "config", "apps"])
def test_deep_nesting_inside_a_local_target_is_400(ctx: FakeContext, client: TestClient,
                                                   field: str) -> None:
    ctx.local_mode = True
    body = b'{"local": {"' + field.encode() + b'": ' + deep_object(3000) + b"}}"
    res = client.post("/v2/local/target-state", content=body, headers=JSON_CT)
    assert res.status_code == 400
    assert "nests too deeply" in res.json()["message"]
    assert ctx.actions.calls == []


def test_nesting_up_to_the_limit_is_parsed() -> None:
    # a hundred levels is far beyond any real target and still fine
    assert parse_json(deep_array(100)) == parse_json(deep_array(100))
    nested = parse_json(deep_object(100))
    for _ in range(99):
        nested = nested["a"]
    assert nested == {"a": 1}


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"a": "' + "[" * 5000 + '", "b": "\\"[[[[", "c": "\\\\"}'
    assert parse_json(text.encode()) == {"a": "[" * 5000, "b": '"[[[[', "c": "\\"}


def test_too_many_json_values_is_413(ctx: FakeContext, client: TestClient) -> None:
    body = b"[" + b"0," * 200_000 + b"0]"
    res = client.post("/v1/update", content=body, headers={**AUTH, **JSON_CT})
    assert res.status_code == 413
    assert res.json() == {"status": "failed",
                          "message": "request body has too many values (more than 100000)"}
    assert ctx.actions.calls == []


def test_more_than_1000_form_parameters_is_413(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/update", content=b"&".join([b"force=0"] * 1001),
                      headers={**AUTH, **FORM_CT})
    assert res.status_code == 413
    assert res.json() == {"status": "failed", "message": "too many parameters"}
    assert ctx.actions.calls == []


def test_1000_form_parameters_are_parsed(ctx: FakeContext, client: TestClient) -> None:
    res = client.post("/v1/update", content=b"&".join([b"force=0"] * 999 + [b"cancel=1"]),
                      headers={**AUTH, **FORM_CT})
    assert res.status_code == 204
    assert ctx.actions.called("update") == [(False, True)]


def test_repeated_form_keys_collect_in_order() -> None:
    parsed = parse_form(b"&".join(b"k=%d" % i for i in range(1000)))
    assert parsed == {"k": [str(i) for i in range(1000)]}
    assert parse_form(b"x[]=1&x[]=2&x=3&x[]=4") == {"x": ["1", "2", "3", "4"]}


def test_form_keys_nest_at_most_32_levels(ctx: FakeContext, client: TestClient) -> None:
    assert parse_form(b"a" + b"[b]" * 32 + b"=1") is not None
    res = client.post("/v1/update", content=b"a" + b"[b]" * 33 + b"=1",
                      headers={**AUTH, **FORM_CT})
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": "The input exceeded the depth"}
    assert ctx.actions.calls == []


@pytest.mark.parametrize("field", ["unit", "containerId", "format", "since", "until"])
def test_nul_in_a_journal_logs_field_is_400_naming_it(ctx: FakeContext, client: TestClient,
                                                      field: str) -> None:
    res = client.post("/v2/journal-logs", json={field: "a\u0000b"}, headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed",
                          "message": f"Invalid {field}: must not contain a NUL character"}
    assert ctx.actions.calls == []


@pytest.mark.parametrize("value", [FULLWIDTH_7302, "\u0663", "12\n", "\n12", "1\u00002", "1 2", ""])
def test_ids_are_ascii_digits_only(value: str) -> None:
    assert check_int(value) is None


@pytest.mark.parametrize("raw", ["%EF%BC%97%EF%BC%93", "1%0A", "%D9%A3"])
def test_non_ascii_digit_app_ids_in_paths_are_400(ctx: FakeContext, client: TestClient,
                                                  raw: str) -> None:
    res = client.post(f"/v2/applications/{raw}/restart", headers=AUTH)
    assert res.status_code == 400
    assert res.json() == {"status": "failed", "message": "Missing app id"}
    res = client.post(f"/v1/apps/{raw}/stop", headers=AUTH)
    assert (res.status_code, res.text) == (400, "Invalid app id")
    res = client.post("/v1/restart", json={"appId": FULLWIDTH_7302}, headers=AUTH)
    assert (res.status_code, res.text) == (400, "Missing app id")
    assert ctx.actions.calls == []
