"""Contract tests: the agent's own cloud calls (provisioning, the state report, the tag report)
against the devcloud on a real 127.0.0.1 socket, whose device-facing rules are
open-balena-api's (supervisor/devcloud/openbalena.py). A change of the agent that openBalena
would refuse fails here; `GET /admin/violations` must stay empty."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from supervisor.cloud.http import CloudClient
from supervisor.cloud.provision import DeviceInfo, ExchangeKeyError, provision_once
from supervisor.cloud.sync import CloudSync
from supervisor.configjson import ConfigJson
from supervisor.devcloud.cli import Client
from supervisor.logs import LogHub
from supervisor.model.current import DeviceView, ServiceView, Snapshot
from supervisor.model.target import TargetState, parse_target
from supervisor.reconciler import LoopState
from supervisor.store import AsyncStore
from tests.api.devcloud_proc import Cloud, free_port

IMAGE = "127.0.0.1:5000/contract/app:1"
LOCAL = "10ca1" * 6


@dataclass
class Fleet:
    cloud: Cloud
    app_id: int
    app_uuid: str
    prov_key: str
    device_type: str
    commit: str

    def admin(self) -> Client:
        return self.cloud.client()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    cloud = Cloud(tmp_path_factory.mktemp("devcloud"), free_port())
    cloud.start()
    try:
        admin = cloud.client()
        created = admin.call("POST", "/admin/fleets", {"name": "contract"})
        release = admin.call("POST", "/admin/fleets/contract/releases",
                             {"services": {"main": {"image": IMAGE}}})
        key = admin.call("POST", "/admin/fleets/contract/provisioning-keys")
        yield Fleet(cloud, int(created["id"]), str(created["uuid"]), str(key["key"]),
                    str(key["deviceType"]), str(release["commit"]))
    finally:
        cloud.stop()


def _config(tmp_path: Path, fleet: Fleet, name: str, **extra: Any) -> ConfigJson:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"apiEndpoint": fleet.cloud.url, "applicationId": fleet.app_id,
                                "apiKey": fleet.prov_key, "deviceType": fleet.device_type,
                                **extra}))
    config = ConfigJson(path)
    config.ensure_uuid()  # as settings.py does at start
    return config


def _client(config: ConfigJson) -> CloudClient:
    return CloudClient(lambda: config.api_endpoint, api_key=lambda: config.device_api_key,
                       user_agent="contract-test", timeout=30)


def _info(fleet: Fleet) -> DeviceInfo:
    return DeviceInfo(device_type=fleet.device_type, supervisor_version="19.0.5",
                      os_version="balenaOS 6.0.0", os_variant="prod", mac_address="AA:BB")


def test_provisioning_and_the_409_path_as_openbalena_allows(
        fleet: Fleet, tmp_path: Path) -> None:
    first = _config(tmp_path, fleet, "first")
    assert asyncio.run(provision_once(_client(first), first, _info(fleet)))
    device_id = first.device_id
    assert device_id and first.api_key is None

    # registered, but the write was lost: 409, and the device key itself finds the device
    again = _config(tmp_path, fleet, "again", uuid=first.uuid,
                    deviceApiKey=first.device_api_key)
    assert asyncio.run(provision_once(_client(again), again, _info(fleet)))
    assert again.device_id == device_id and again.uuid == first.uuid

    # the same uuid with another key: the provisioning key may not read the device nor set its
    # key (openBalena), so the agent takes a new identity and registers that
    lost = _config(tmp_path, fleet, "lost", uuid=first.uuid, deviceApiKey="f" * 32)
    with pytest.raises(ExchangeKeyError):
        asyncio.run(provision_once(_client(lost), lost, _info(fleet)))
    assert lost.uuid != first.uuid
    assert asyncio.run(provision_once(_client(lost), lost, _info(fleet)))
    assert lost.device_id not in (None, device_id)
    assert fleet.admin().call("GET", "/admin/violations") == []


@dataclass
class Runtime:
    """What CloudSync reads of the runtime, nothing more."""

    settings: Any
    store: AsyncStore
    target: TargetState | None = None
    local_mode: bool = False
    logs: LogHub = field(default_factory=LogHub)
    reconciler: Any = None
    snapshot: Snapshot | None = None

    def log(self, message: str) -> None:
        pass


def _view(fleet: Fleet, commit: str, name: str) -> ServiceView:
    return ServiceView(app_id=fleet.app_id, app_uuid=fleet.app_uuid, app_name="contract",
                       service_name=name, service_id=1, image_id=1, release_id=1, commit=commit,
                       image=IMAGE, status="Running")


def _registered(fleet: Fleet, tmp_path: Path, name: str) -> ConfigJson:
    config = _config(tmp_path, fleet, name)
    asyncio.run(provision_once(_client(config), config, _info(fleet)))
    return config


def test_reports_in_managed_and_local_mode_are_accepted(fleet: Fleet, tmp_path: Path) -> None:
    config = _registered(fleet, tmp_path, "reporter")
    uuid = config.uuid
    admin = fleet.admin()
    before = len(admin.call("GET", "/admin/violations"))

    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            settings = type("S", (), {"config_json": config, "data_dir": tmp_path,
                                      "poll_interval_ms": 900_000, "device_type": None})()
            runtime = Runtime(settings, store, reconciler=type(
                "R", (), {"state": LoopState()})())
            sync = CloudSync(cast(Any, runtime))
            answer = await sync.client.request("GET", f"/device/v3/{uuid}/state")
            runtime.target = parse_target(answer.json(), device_uuid=uuid)
            device = DeviceView(uuid=uuid, name="d", api_port=48484, os_version="balenaOS 6",
                                supervisor_version="19.0.5", device_type=fleet.device_type,
                                arch="amd64", local_mode=False, unmanaged=False)
            # the cloud's release runs; a locally pushed one of the same app id is left over
            runtime.snapshot = Snapshot(seq=1, device=device, target=runtime.target,
                                        services=(_view(fleet, fleet.commit, "main"),
                                                  _view(fleet, LOCAL, "pushed")),
                                        commits={fleet.app_id: fleet.commit})
            assert await sync.reporter.report_once()
            state = admin.call("GET", f"/admin/devices/{uuid}")["state"]
            assert list(state["apps"][fleet.app_uuid]["releases"]) == [fleet.commit]

            # local mode: only local releases run, and the report still goes through
            runtime.local_mode = True
            runtime.snapshot = Snapshot(seq=2, device=device, services=(
                _view(fleet, LOCAL, "pushed"),), commits={fleet.app_id: LOCAL})
            sync._net = (sync._clock(), "10.9.9.9", "AA:BB")  # a new address to report
            assert await sync.reporter.report_once()
            state = admin.call("GET", f"/admin/devices/{uuid}")["state"]
            assert state["ip_address"] == "10.9.9.9"
            assert LOCAL not in json.dumps(state)

            # the rule has teeth: openBalena refuses a report naming the local release
            refused = await sync.client.request("PATCH", "/device/v3/state", body={uuid: {
                "status": "Idle", "apps": {fleet.app_uuid: {"release_uuid": LOCAL}}}})
            assert refused.status == 401

    asyncio.run(scenario())
    new = admin.call("GET", "/admin/violations")[before:]
    assert len(new) == 1 and new[0].startswith(f"{uuid}: 401")  # that refusal, nothing else


def test_tags_the_cloud_refuses_are_dropped_and_the_others_reported(
        fleet: Fleet, tmp_path: Path) -> None:
    config = _registered(fleet, tmp_path, "tags")
    admin = fleet.admin()
    before = len(admin.call("GET", "/admin/violations"))

    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "tags.sqlite") as store:
            settings = type("S", (), {"config_json": config, "data_dir": tmp_path,
                                      "poll_interval_ms": 900_000, "device_type": None})()
            sync = CloudSync(cast(Any, Runtime(settings, store)))
            await sync.tags.set_tags({"room": "lab", "io.balena.private": "x"})
            assert await sync.tags.report_once()
            assert await store.tags("target") == {}

    asyncio.run(scenario())
    assert admin.call("GET", f"/admin/devices/{config.uuid}")["tags"] == {"room": "lab"}
    assert len(admin.call("GET", "/admin/violations")) == before
    # the devcloud refuses the reserved key as openBalena does
    raw = Client(fleet.cloud.url, config.device_api_key)
    with pytest.raises(Exception, match="400"):
        raw.call("PATCH", "/device/v3/tags", {config.uuid: {"io.resin.x": "1", "ok": "2"}})
