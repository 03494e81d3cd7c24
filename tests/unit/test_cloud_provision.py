"""Provisioning against a tiny in-process fake cloud on 127.0.0.1 (state.md §4.2)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from supervisor.cloud.http import CloudClient, CloudError
from supervisor.cloud.provision import (
    DeviceInfo,
    ExchangeKeyError,
    needs_provisioning,
    provision,
    provision_once,
    registration_device_type,
)
from supervisor.configjson import ConfigJson
from supervisor.errors import ConfigError

PROV_KEY = "p" * 32
INFO = DeviceInfo(device_type="generic", supervisor_version="19.0.5", os_version="os 1",
                  os_variant="dev", mac_address="AA:BB")


@dataclass
class CloudState:
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid -> {id, api_key}
    # method, path, key, body
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    register_failures: int = 0  # answer 500 to this many registrations first
    refuse_device_key: bool = False

    def add(self, uuid: str, api_key: str) -> int:
        self.devices[uuid] = {"id": len(self.devices) + 100, "api_key": api_key}
        return int(self.devices[uuid]["id"])


def _handler(state: CloudState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else {}
            url = urlsplit(self.path)
            state.requests.append((self.command, url.path, key, body))
            if (self.command, url.path) == ("POST", "/device/register"):
                if key != PROV_KEY:
                    return self._answer(401)
                if state.register_failures:
                    state.register_failures -= 1
                    return self._answer(500)
                if body["uuid"] in state.devices:
                    return self._answer(409, "already registered")
                return self._answer(201, {"id": state.add(body["uuid"], body["api_key"])})
            if (self.command, url.path) == ("GET", "/v7/device"):
                flt = unquote(parse_qs(url.query)["$filter"][0])
                uuid = re.fullmatch(r"uuid eq '(.*)'", flt).group(1)  # type: ignore[union-attr]
                found = state.devices.get(uuid)
                if found and key in (found["api_key"], PROV_KEY):
                    return self._answer(200, {"d": [{"id": found["id"]}]})
                return self._answer(200, {"d": []})
            match = re.fullmatch(r"/api-key/device/(\d+)/device-key", url.path)
            if self.command == "POST" and match:
                if key != PROV_KEY or state.refuse_device_key:
                    return self._answer(403)
                for dev in state.devices.values():
                    if dev["id"] == int(match.group(1)):
                        dev["api_key"] = body["apiKey"]
                        return self._answer(200, body["apiKey"])
                return self._answer(404)
            if self.command == "PATCH" and url.path.startswith("/v7/device("):
                return self._answer(200)
            return self._answer(404)

        do_GET = do_POST = do_PATCH = _serve

    return Handler


@pytest.fixture
def cloud() -> Iterator[tuple[CloudState, str]]:
    state = CloudState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, endpoint: str, **values: Any) -> ConfigJson:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"apiEndpoint": endpoint, "uuid": "u1", **values}))
    return ConfigJson(path)


def _client(config: ConfigJson) -> CloudClient:
    return CloudClient(lambda: config.api_endpoint, api_key=lambda: config.device_api_key,
                       user_agent="test", timeout=5)


def _on_disk(config: ConfigJson) -> dict[str, Any]:
    return dict(json.loads(config.path.read_text()))


def test_a_new_device_registers_once_and_drops_the_provisioning_key(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    config = _config(tmp_path, url, applicationId=3, apiKey=PROV_KEY,
                     initialDeviceName="kitchen")
    assert needs_provisioning(config)
    assert asyncio.run(provision_once(_client(config), config, INFO))
    saved = _on_disk(config)
    assert "apiKey" not in saved
    assert len(saved["deviceApiKey"]) == 32
    assert saved["deviceId"] == 100 and saved["registered_at"] > 0
    method, path, key, body = state.requests[0]
    assert (method, path, key) == ("POST", "/device/register", PROV_KEY)
    assert body == {"application": 3, "uuid": "u1", "device_type": "generic",
                    "api_key": saved["deviceApiKey"], "supervisor_version": "19.0.5",
                    "os_version": "os 1", "os_variant": "dev", "mac_address": "AA:BB"}
    assert state.devices["u1"]["api_key"] == saved["deviceApiKey"]
    assert state.requests[-1][:3] == ("PATCH", "/v7/device(100)", saved["deviceApiKey"])
    assert state.requests[-1][3] == {"device_name": "kitchen"}

    count = len(state.requests)
    assert not needs_provisioning(config)
    assert not asyncio.run(provision_once(_client(config), config, INFO))
    assert len(state.requests) == count


def test_a_known_uuid_exchanges_the_key_with_the_provisioning_key(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    device_id = state.add("u1", "someone-elses-key")
    config = _config(tmp_path, url, applicationId=3, apiKey=PROV_KEY, deviceApiKey="mine")
    assert asyncio.run(provision_once(_client(config), config, INFO))
    assert [(m, p, k) for m, p, k, _ in state.requests] == [
        ("POST", "/device/register", PROV_KEY),
        ("GET", "/v7/device", "mine"),
        ("GET", "/v7/device", PROV_KEY),
        ("POST", f"/api-key/device/{device_id}/device-key", PROV_KEY),
    ]
    assert state.devices["u1"]["api_key"] == "mine"
    saved = _on_disk(config)
    assert saved["deviceId"] == device_id and "apiKey" not in saved


def test_registered_without_device_id_needs_only_the_device_key(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    device_id = state.add("u1", "mine")
    config = _config(tmp_path, url, deviceApiKey="mine", registered_at=123)
    assert asyncio.run(provision_once(_client(config), config, INFO))
    assert [(m, k) for m, _, k, _ in state.requests] == [("GET", "mine")]
    assert _on_disk(config)["deviceId"] == device_id
    assert _on_disk(config)["registered_at"] == 123


def test_a_refused_exchange_makes_a_new_identity(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    state.add("u1", "someone-elses-key")
    state.refuse_device_key = True
    config = _config(tmp_path, url, applicationId=3, apiKey=PROV_KEY, deviceApiKey="mine")
    with pytest.raises(ExchangeKeyError):
        asyncio.run(provision_once(_client(config), config, INFO))
    saved = _on_disk(config)
    assert saved["uuid"] != "u1" and saved["deviceApiKey"] != "mine"
    assert saved["apiKey"] == PROV_KEY and "registered_at" not in saved
    # the next attempt registers the new identity
    state.refuse_device_key = False
    assert asyncio.run(provision_once(_client(config), config, INFO))
    assert state.devices[saved["uuid"]]["api_key"] == saved["deviceApiKey"]


def test_no_answer_changes_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", applicationId=3, apiKey=PROV_KEY,
                     deviceApiKey="mine", registered_at=5)
    with pytest.raises(CloudError):
        asyncio.run(provision_once(_client(config), config, INFO))
    saved = _on_disk(config)
    assert (saved["uuid"], saved["deviceApiKey"], saved["apiKey"]) == ("u1", "mine", PROV_KEY)


def test_provision_retries_with_a_growing_delay(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    state.register_failures = 2
    config = _config(tmp_path, url, applicationId=3, apiKey=PROV_KEY, bootstrapRetryDelay=2000)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    asyncio.run(provision(_client(config), config, INFO, sleep=sleep, log=lambda m: None))
    assert slept == [2.0, 4.0]
    assert config.provisioned
    assert len([r for r in state.requests if r[1] == "/device/register"]) == 3


def test_missing_application_id_is_a_config_error(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    _, url = cloud
    config = _config(tmp_path, url, apiKey=PROV_KEY)
    with pytest.raises(ConfigError, match="applicationId"):
        asyncio.run(provision_once(_client(config), config, INFO))


def test_registration_without_a_device_type_is_refused_before_any_request(
        cloud: tuple[CloudState, str], tmp_path: Path) -> None:
    state, url = cloud
    config = _config(tmp_path, url, applicationId=3, apiKey=PROV_KEY)
    no_type = DeviceInfo(device_type="", supervisor_version="19.0.5", os_version="os 1",
                         os_variant="dev", mac_address="AA:BB")
    with pytest.raises(ConfigError) as caught:
        asyncio.run(provision_once(_client(config), config, no_type))
    assert "deviceType is missing" in str(caught.value)
    assert state.requests == [] and state.devices == {}
    # config.json deviceType wins; a chosen board stands in; the generic fallback does not
    assert registration_device_type("raspberrypi4-64", "generic") == "raspberrypi4-64"
    assert registration_device_type(None, "intel-nuc") == "intel-nuc"
    assert registration_device_type(None, "generic") == ""
