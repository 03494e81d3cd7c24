"""The initial configuration report (state.md §4.3) against a real devcloud process: the
device's current config (a real config.txt, a real SQLite store) becomes device config
variables where the target lacks them, once per API endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.cloud.http import CloudClient
from supervisor.cloud.initial_config import report_initial_config
from supervisor.configjson import ConfigJson
from supervisor.device_config import DeviceConfiguration
from supervisor.model.steps import ChangeConfig
from supervisor.store import AsyncStore
from tests.api.devcloud_proc import Cloud, free_port


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    found = Cloud(tmp_path / "cloud", free_port())
    found.data_dir.mkdir()
    found.start()
    found.register()
    yield found
    found.stop()


def test_current_values_the_target_lacks_become_device_variables_once(
        cloud: Cloud, tmp_path: Path) -> None:
    admin = cloud.client()
    admin.call("PUT", "/admin/fleets/logs/config/RESIN_SUPERVISOR_POLL_INTERVAL",
               {"value": "120000"})
    device_id = admin.call("GET", f"/admin/devices/{cloud.uuid}")["id"]
    (tmp_path / "config.txt").write_text("gpu_mem=16\ndtparam=i2c_arm=on\n")
    (tmp_path / "config.json").write_text(json.dumps({"uuid": cloud.uuid}))
    cj = ConfigJson(tmp_path / "config.json")
    boot = BootConfig.for_board(["config-txt"], BootPaths(tmp_path, cj), "raspberrypi4-64")
    client = CloudClient(cloud.url, api_key=lambda: cloud.key, user_agent="test")

    async def main() -> tuple[bool, bool]:
        store = await AsyncStore.open(tmp_path / "db.sqlite")
        try:
            dc = DeviceConfiguration(store=store, config_json=cj, boot=boot, log=print,
                                     unmanaged=False)
            # a non-default value, one the target sets, and two that are never sent
            await dc.change_config(ChangeConfig((
                ("SUPERVISOR_POLL_INTERVAL", "60000"), ("SUPERVISOR_DELTA", "1"),
                ("SUPERVISOR_LOCAL_MODE", "true"))))

            async def report() -> bool:
                return await report_initial_config(
                    client, store, uuid=cloud.uuid, device_id=device_id,
                    api_endpoint=cloud.url, current=dc.current)

            return await report(), await report()
        finally:
            await store.close()

    assert asyncio.run(main()) == (True, False)
    target = admin.call("GET", f"/admin/devices/{cloud.uuid}")["target"]
    assert target[cloud.uuid]["config"] == {
        "RESIN_SUPERVISOR_POLL_INTERVAL": "120000",  # the fleet's, untouched
        "RESIN_SUPERVISOR_DELTA": "true",  # stored typed, reported as upstream renders it
        "RESIN_HOST_CONFIG_gpu_mem": "16",
        "RESIN_HOST_CONFIG_dtparam": '"i2c_arm=on"',
    }
    # the device's own variables, as `devcloud config list --device <uuid>` shows them
    assert admin.call("GET", f"/admin/devices/{cloud.uuid}/config") == {
        "RESIN_SUPERVISOR_DELTA": "true", "RESIN_HOST_CONFIG_gpu_mem": "16",
        "RESIN_HOST_CONFIG_dtparam": '"i2c_arm=on"'}
    assert admin.call("GET", "/admin/fleets/logs/config") == {
        "RESIN_SUPERVISOR_POLL_INTERVAL": "120000"}


def test_another_devices_key_is_refused(cloud: Cloud) -> None:
    device_id = cloud.client().call("GET", f"/admin/devices/{cloud.uuid}")["id"]
    client = CloudClient(cloud.url, api_key=lambda: "x" * 32, user_agent="test")

    async def post() -> int:
        answer = await client.request("POST", "/v7/device_config_variable", body={
            "device": device_id, "name": "RESIN_X", "value": "1"})
        return answer.status

    assert asyncio.run(post()) == 401
