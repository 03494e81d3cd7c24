"""The device side of device configuration on a real SQLite store, a real config.json and a
config.txt in a temp dir: the current config, and the changeConfig / setBootConfig steps."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.configjson import ConfigJson
from supervisor.device_config import DeviceConfiguration
from supervisor.model.config_vars import DeviceConfig
from supervisor.model.steps import ChangeConfig, SetBootConfig
from supervisor.model.target import parse_local_target
from supervisor.store import AsyncStore


def run(tmp_path: Path, scenario) -> tuple[list[str], DeviceConfiguration]:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(json.dumps({"uuid": "u1"}))
    cj = ConfigJson(tmp_path / "config.json")
    boot = BootConfig.for_board(["config-txt"], BootPaths(tmp_path, cj), "raspberrypi4-64")
    log: list[str] = []

    async def main() -> DeviceConfiguration:
        store = await AsyncStore.open(tmp_path / "db.sqlite")
        try:
            dc = DeviceConfiguration(store=store, config_json=cj, boot=boot, log=log.append,
                                     unmanaged=False)
            await scenario(dc)
            return dc
        finally:
            await store.close()

    return log, asyncio.run(main())


def test_current_is_defaults_then_what_change_config_stored(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("gpu_mem=16\n")
    seen: list[DeviceConfig] = []

    async def scenario(dc: DeviceConfiguration) -> None:
        dc.listeners.append(seen.append)
        first = await dc.current()
        assert first["SUPERVISOR_POLL_INTERVAL"] == "900000"
        assert first["SUPERVISOR_LOG_CONTROL"] == "true"
        assert first["SUPERVISOR_PERSISTENT_LOGGING"] == "false"
        assert first["HOST_CONFIG_gpu_mem"] == "16"
        await dc.change_config(ChangeConfig(
            (("SUPERVISOR_POLL_INTERVAL", "60000"), ("SUPERVISOR_LOG_CONTROL", "off"),
             ("SUPERVISOR_PERSISTENT_LOGGING", "1")),
            warnings=("Warning: something",), reboot=True))
        after = await dc.current()
        assert after["SUPERVISOR_POLL_INTERVAL"] == "60000"
        assert after["SUPERVISOR_LOG_CONTROL"] == "false"
        assert after["SUPERVISOR_PERSISTENT_LOGGING"] == "true"

    log, _ = run(tmp_path, scenario)
    assert json.loads((tmp_path / "config.json").read_text())["persistentLogging"] is True
    assert log == [
        "Warning: something",
        'Applying configuration change {"SUPERVISOR_POLL_INTERVAL":"60000",'
        '"SUPERVISOR_LOG_CONTROL":"off","SUPERVISOR_PERSISTENT_LOGGING":"1"}',
        'Applied configuration change {"SUPERVISOR_POLL_INTERVAL":"60000",'
        '"SUPERVISOR_LOG_CONTROL":"off","SUPERVISOR_PERSISTENT_LOGGING":"1"}',
    ]
    assert [c.flag("SUPERVISOR_LOG_CONTROL") for c in seen] == [True, False]


def test_plan_input_and_boot_apply(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("gpu_mem=16\n")
    target = parse_local_target({"local": {"name": "d", "config": {
        "RESIN_HOST_CONFIG_gpu_mem": "64", "SUPERVISOR_DELTA": "1"}, "apps": {}}},
        device_uuid="u1", device_name="d")

    async def scenario(dc: DeviceConfiguration) -> None:
        got = await dc.plan_input(target)
        assert got is not None
        assert got.boot_changed == ("config-txt",) and got.boot_reboot
        assert got.boot_target == (("HOST_CONFIG_gpu_mem", "64"),)
        assert got.target["SUPERVISOR_VPN_CONTROL"] == "true"
        await dc.set_boot_config(SetBootConfig(got.boot_target))
        again = await dc.plan_input(target)
        assert again is not None and again.boot_changed == ()

    log, _ = run(tmp_path, scenario)
    assert (tmp_path / "config.txt").read_text() == "gpu_mem=64\n"
    assert log == ['Applying boot config: {"HOST_CONFIG_gpu_mem":"64"}',
                   'Applied boot config: {"HOST_CONFIG_gpu_mem":"64"}']


def test_deltas_are_said_to_be_unsupported_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(dc: DeviceConfiguration) -> None:
        await dc.change_config(ChangeConfig((("SUPERVISOR_DELTA", "true"),)))
        await dc.current()
        await dc.current()

    with caplog.at_level(logging.WARNING):
        run(tmp_path, scenario)
    assert caplog.text.count("deltas are not applied on this engine") == 1
