"""The devcloud server through Starlette's TestClient; a fake device answers the proxy."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from supervisor.devcloud.db import Db
from supervisor.devcloud.server import DevCloud, build_app

TOKEN = "admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
RELEASE = {"services": {"main": {"image": "reg/app:1", "environment": {"A": "release", "B": "r"},
                                 "command": ["sleep", "1"], "network_mode": "host"}}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    db = Db(tmp_path / "cloud.sqlite")
    with TestClient(build_app(DevCloud(db, TOKEN)), base_url="http://127.0.0.1") as test:
        yield test
    db.close()


def _fleet(client: TestClient, name: str = "f1") -> tuple[int, str]:
    fleet = client.post("/admin/fleets", json={"name": name}, headers=ADMIN).json()
    key = client.post(f"/admin/fleets/{name}/provisioning-keys", headers=ADMIN).json()
    assert key["applicationId"] == fleet["id"]
    return int(fleet["id"]), str(key["key"])


def _register(client: TestClient, key: str, uuid: str, api_key: str, app: int) -> Any:
    return client.post("/device/register", headers={"Authorization": f"Bearer {key}"},
                       json={"application": app, "uuid": uuid, "device_type": "generic-amd64",
                             "api_key": api_key})


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_registration_lookup_and_key_exchange(client: TestClient) -> None:
    app, key = _fleet(client)
    created = _register(client, key, "u1", "k1", app)
    assert created.status_code == 201 and created.json()["id"] > 0
    assert created.json() == {"id": created.json()["id"], "uuid": "u1", "api_key": "k1"}
    assert _register(client, key, "u1", "k1", app).status_code == 409
    assert _register(client, "nope", "u2", "k2", app).status_code == 401
    other_app, _ = _fleet(client, "f2")
    assert _register(client, key, "u3", "k3", other_app).status_code == 401

    query = {"$select": "id", "$filter": "uuid eq 'u1'"}
    found = client.get("/v7/device", params=query, headers=_bearer("k1")).json()
    assert found == {"d": [{"id": created.json()["id"]}]}
    # openBalena: a provisioning key creates devices and nothing else
    assert client.get("/v7/device", params=query, headers=_bearer(key)).json() == {"d": []}
    assert client.get("/v7/device", params=query, headers=_bearer("k9")).json() == {"d": []}

    device_id = created.json()["id"]
    by_prov = client.post(f"/api-key/device/{device_id}/device-key", json={"apiKey": "k9"},
                          headers=_bearer(key))
    assert by_prov.status_code == 401
    swapped = client.post(f"/api-key/device/{device_id}/device-key", json={"apiKey": "k9"},
                          headers=ADMIN)
    assert swapped.status_code == 200
    assert client.get("/v7/device", params=query, headers=_bearer("k9")).json() == found
    refused = client.post(f"/api-key/device/{device_id}/device-key", json={"apiKey": "x"},
                          headers=_bearer("k9"))
    assert refused.status_code == 401


def test_target_state_with_etag_variables_and_pins(client: TestClient) -> None:
    app, key = _fleet(client)
    _register(client, key, "u1", "k1", app)
    empty = client.get("/device/v3/u1/state", headers=_bearer("k1"))
    assert empty.json()["u1"]["apps"][_fleet_uuid(client)]["releases"] == {}

    first = client.post("/admin/fleets/f1/releases", json=RELEASE, headers=ADMIN).json()
    second = client.post("/admin/fleets/f1/releases",
                         json={**RELEASE, "commit": "c" * 32}, headers=ADMIN).json()
    assert second["commit"] == "c" * 32
    client.put("/admin/fleets/f1/env/B", json={"value": "fleet"}, headers=ADMIN)
    client.put("/admin/devices/u1/env/C", json={"value": "device"}, headers=ADMIN)
    client.put("/admin/fleets/f1/config/RESIN_SUPERVISOR_POLL_INTERVAL", json={"value": "5000"},
               headers=ADMIN)

    got = client.get("/device/v3/u1/state", headers=_bearer("k1"))
    etag = got.headers["etag"]
    device = got.json()["u1"]
    assert device["config"] == {"RESIN_SUPERVISOR_POLL_INTERVAL": "5000"}
    releases = device["apps"][_fleet_uuid(client)]["releases"]
    assert list(releases) == [second["commit"]]  # the latest release
    svc = releases[second["commit"]]["services"]["main"]
    assert svc["environment"] == {"A": "release", "B": "fleet", "C": "device"}
    assert svc["composition"] == {"command": ["sleep", "1"], "network_mode": "host"}
    assert svc["id"] and svc["image_id"] and svc["image"] == "reg/app:1"

    again = client.get("/device/v3/u1/state", headers={**_bearer("k1"), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/device/v3/u1/state", headers=_bearer("other")).status_code == 401

    client.patch("/admin/fleets/f1", json={"pinned_release": first["commit"]}, headers=ADMIN)
    pinned = client.get("/device/v3/u1/state", headers={**_bearer("k1"), "If-None-Match": etag})
    assert pinned.status_code == 200
    assert list(pinned.json()["u1"]["apps"][_fleet_uuid(client)]["releases"]) == \
        [first["commit"]]
    client.patch("/admin/devices/u1", json={"pinned_release": second["commit"]}, headers=ADMIN)
    by_device = client.get("/device/v3/u1/state", headers=_bearer("k1")).json()
    assert list(by_device["u1"]["apps"][_fleet_uuid(client)]["releases"]) == \
        [second["commit"]]
    bad = client.patch("/admin/devices/u1", json={"pinned_release": "nope"}, headers=ADMIN)
    assert bad.status_code == 404


def _fleet_uuid(client: TestClient, name: str = "f1") -> str:
    return str(client.get(f"/admin/fleets/{name}", headers=ADMIN).json()["uuid"])


def test_reports_merge_and_tags(client: TestClient) -> None:
    app, key = _fleet(client)
    _register(client, key, "u1", "k1", app)
    _register(client, key, "u2", "k2", app)
    client.post("/admin/fleets/f1/releases", json={**RELEASE, "commit": "c1"}, headers=ADMIN)
    x = _fleet_uuid(client)
    apps1 = {x: {"releases": {"c1": {"update_status": "downloading"}}}}
    apps2 = {x: {"release_uuid": "c1", "releases": {"c1": {"update_status": "done"}}}}
    ok = client.patch("/device/v3/state", headers=_bearer("k1"),
                      json={"u1": {"api_port": 1234, "api_secret": "s", "apps": apps1}})
    assert ok.status_code == 200
    client.patch("/device/v3/state", headers=_bearer("k1"), json={"u1": {"apps": apps2}})
    detail = client.get("/admin/devices/u1", headers=ADMIN).json()
    assert detail["state"] == {"api_port": 1234, "api_secret": "s", "apps": apps2}
    listing = client.get("/admin/devices", headers=ADMIN).json()
    assert listing[0]["release"] == "c1" and listing[0]["update_status"] == {"c1": "done"}
    assert "api_key" not in listing[0]
    stolen = client.patch("/device/v3/state", headers=_bearer("k2"), json={"u1": {"x": 1}})
    assert stolen.status_code == 401

    client.patch("/device/v3/tags", headers=_bearer("k1"), json={"u1": {"room": "a"}})
    client.patch("/device/v3/tags", headers=_bearer("k1"), json={"u1": {"room": "b", "f": "2"}})
    tags = client.get("/v7/device_tag", headers=_bearer("k1"),
                      params={"$filter": "device/uuid eq 'u1'"}).json()["d"]
    assert {t["tag_key"]: t["value"] for t in tags} == {"room": "b", "f": "2"}


def test_admin_needs_the_token_and_releases_are_validated(client: TestClient) -> None:
    assert client.get("/admin/devices").status_code == 401
    assert client.post("/supervisor/ping", json={"uuid": "u1"}).status_code == 401
    _fleet(client)
    assert client.post("/admin/fleets", json={"name": "f1"}, headers=ADMIN).status_code == 409
    bad: dict[str, Any]
    for bad in ({}, {"services": {}}, {"services": {"-x": {"image": "i"}}},
                {"services": {"a": {}}}, {"services": {"a": {"image": "i", "labels": 3}}}):
        answer = client.post("/admin/fleets/f1/releases", json=bad, headers=ADMIN)
        assert answer.status_code == 400, bad
    assert client.get("/admin/fleets/f1/releases", headers=ADMIN).json() == []


class FakeDevice:
    """A supervisor API on 127.0.0.1 that records what the proxy sends it."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.calls: list[tuple[str, str, str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlsplit(self.path)
                key = parse_qs(url.query).get("apikey", [""])[0]  # as openBalena sends it
                outer.calls.append((self.command, url.path, key, body))
                if key != outer.secret or "Authorization" in self.headers:
                    data, status, kind = b'{"message":"Unauthorized"}', 401, "application/json"
                elif url.path == "/ping":
                    data, status, kind = b"OK", 200, "text/html"
                elif url.path == "/markup":
                    data, status, kind = b"<b>OK</b>", 200, "text/html"
                else:
                    data, status, kind = json.dumps({"got": body}).encode(), 200, \
                        "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_proxy_reaches_devices_by_uuid_device_id_and_app_id(client: TestClient) -> None:
    app, key = _fleet(client)
    devices = [FakeDevice("s1"), FakeDevice("s2")]
    try:
        ids = []
        for n, dev in enumerate(devices, 1):
            ids.append(_register(client, key, f"u{n}", f"k{n}", app).json()["id"])
            client.patch("/device/v3/state", headers=_bearer(f"k{n}"),
                          json={f"u{n}": {"api_port": dev.port, "api_secret": dev.secret,
                                          "ip_address": "192.0.2.1"}})
        _register(client, key, "u3", "k3", app)  # never reported: unreachable

        ping = client.post("/supervisor/ping", json={"uuid": "u1", "method": "GET"},
                           headers=ADMIN)
        assert (ping.status_code, ping.text) == (200, "OK")
        assert devices[0].calls[-1] == ("GET", "/ping", "s1", None)

        patch = client.post("/supervisor/v1/device/host-config", headers=ADMIN, json={
            "deviceId": ids[1], "method": "PATCH", "data": {"network": {"hostname": "h"}}})
        assert patch.json() == {"got": {"network": {"hostname": "h"}}}
        assert devices[1].calls[-1][:3] == ("PATCH", "/v1/device/host-config", "s2")

        # a fleet: 207 with each online device's answer in id order (u3 never reported)
        blink = client.post("/supervisor/v1/blink?x=1", json={"appId": app}, headers=ADMIN)
        assert blink.status_code == 207
        assert blink.json() == [{"statusCode": 200, "body": {"got": None}}] * 2
        assert devices[0].calls[-1] == ("POST", "/v1/blink", "s1", None)  # query dropped
        # one device and the app id: a single answer is passed on, not a list
        one = client.post("/supervisor/ping", json={"appId": app, "uuid": "u2",
                                                    "method": "GET"}, headers=ADMIN)
        assert (one.status_code, one.text) == (200, "OK")

        def error(body: Any, path: str = "ping") -> tuple[int, str]:
            answer = client.post(f"/supervisor/{path}", json=body, headers=ADMIN)
            return answer.status_code, answer.json()["error"]

        assert error({"uuid": "u3"}) == (404, "No online device(s) found")
        assert error({}) == (400, "At least one filter must be specified")
        assert error({"appId": "x"}) == (400, "App ID must be a valid integer if specified")
        assert error({"uuid": "u1", "method": "TRACE"}) == (400, "Invalid method 'TRACE'")
        assert error({"uuid": "u1", "method": "GET"}, "markup") == (
            500, "Bad API response from supervisor")

        # a new release tells every reachable device to poll now
        client.post("/admin/fleets/f1/releases", json=RELEASE, headers=ADMIN)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                any(c[1] == "/v1/update" for c in d.calls) for d in devices):
            time.sleep(0.05)
        assert all(any(c[:3] == ("POST", "/v1/update", d.secret) for c in d.calls)
                   for d in devices)

        devices.pop(0).close()  # reported, but no longer answers
        assert error({"uuid": "u1", "method": "GET"})[0] == 502
    finally:
        for dev in devices:
            dev.close()


def test_openbalena_rules_for_registration_reports_and_tags(client: TestClient) -> None:
    """open-balena-api's answers (docs/fleet.md "Works against openBalena")."""
    app, key = _fleet(client)

    def register(**body: Any) -> Any:
        return client.post("/device/register", headers=_bearer(key), json=body)

    def error(answer: Any) -> tuple[int, str]:
        return answer.status_code, answer.json()["error"]

    assert error(register(uuid="u1", device_type="generic-amd64")) == (
        400, "Application ID must be a valid integer")
    assert error(register(application=app, uuid="u1")) == (400, "Device type must be specified")
    assert error(register(application=app, device_type="generic-amd64")) == (
        400, "UUID must be specified")
    assert error(register(application=app, uuid="u1", device_type="generic")) == (
        404, "Unknown device type generic")
    assert _register(client, key, "u1", "k1", app).status_code == 201
    assert error(_register(client, key, "u1", "k2", app)) == (409, '"uuid" must be unique.')
    assert error(_register(client, key, "u2", "k1", app)) == (409, '"key" must be unique.')

    commit = client.post("/admin/fleets/f1/releases", json=RELEASE, headers=ADMIN).json()["commit"]
    fleet_uuid = _fleet_uuid(client)

    def report(state: Any) -> int:
        return int(client.patch("/device/v3/state", headers=_bearer("k1"),
                                json={"u1": state}).status_code)

    def running(release: str, image: str = "reg/app:1", app_uuid: str = fleet_uuid) -> Any:
        return {"apps": {app_uuid: {"release_uuid": release, "releases": {release: {
            "services": {"main": {"image": image, "status": "Running"}}}}}}}

    assert report(running(commit)) == 200
    assert report(running(commit, "reg/app:1@sha256:" + "a" * 64)) == 200
    assert report(running("localcommit")) == 401  # not a release of the app
    assert report(running(commit, "reg/other:1")) == 401  # not an image of the release
    assert report(running(commit, app_uuid="b" * 32)) == 401  # not the device's app
    assert report({"api_port": "48484"}) == 400
    assert client.patch("/device/v3/state", headers=_bearer("k1"), json={}).status_code == 400
    recorded = client.get("/admin/violations", headers=ADMIN).json()
    assert len(recorded) == 3 and all(v.startswith("u1: 401, the report names") for v in recorded)

    assert report({"status": "x" * 60, "os_variant": "development"}) == 200
    state = client.get("/admin/devices/u1", headers=ADMIN).json()["state"]
    assert state["status"] == "x" * 50 and "os_variant" not in state
    assert len(client.get("/admin/violations", headers=ADMIN).json()) == 5

    def tags(body: Any) -> tuple[int, str]:
        answer = client.patch("/device/v3/tags", headers=_bearer("k1"), json=body)
        return answer.status_code, answer.text

    assert tags({"u1": {"io.balena.x": "1", "ok": "1"}}) == (
        400, '{"error":"Tag keys beginning with io.balena. are reserved."}')
    assert tags({"u1": {"a b": "1"}})[1] == '{"error":"Tag keys cannot contain whitespace."}'
    assert tags({"u1": {}}) == (400, '{"error":"No tags were sent to be updated."}')
    assert tags({"u1": {"ok": "1"}})[0] == 200
