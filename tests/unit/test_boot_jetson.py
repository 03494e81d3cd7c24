"""Jetson boot backends on files in a temp dir: extlinux.conf, extra_uEnv.txt, ODMDATA (a
plain file standing in for the eMMC boot partition) and power/fan in config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.board.backends.base import ForbiddenBootConfig
from supervisor.board.backends.files import BootConfigError
from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.configjson import ConfigJson

EXTLINUX = (
    "TIMEOUT 30\n"
    "DEFAULT primary\n"
    "\n"
    "MENU TITLE L4T boot options\n"
    "\n"
    "LABEL primary\n"
    "      MENU LABEL primary kernel\n"
    "      LINUX /boot/Image\n"
    "      FDT /boot/tegra186-quill-p3310-1000-c03-00-base.dtb\n"
    "      APPEND ${cbootargs} root=/dev/mmcblk0p1 rw rootwait isolcpus=3\n"
    "\n"
    "LABEL backup\n"
    "      LINUX /boot/Image.bak\n"
    "      APPEND ro\n"
)


def make(tmp_path: Path, names: list[str], device_type: str,
         config: dict[str, object] | None = None) -> BootConfig:
    cj = tmp_path / "config.json"
    cj.write_text(json.dumps(config or {}))
    paths = BootPaths(tmp_path, ConfigJson(cj), tmp_path / "root")
    return BootConfig.for_board(names, paths, device_type)


# -- extlinux --------------------------------------------------------------------------------


def test_extlinux_reports_isolcpus_and_fdt_of_the_default_label(tmp_path: Path) -> None:
    (tmp_path / "extlinux").mkdir()
    (tmp_path / "extlinux" / "extlinux.conf").write_text(EXTLINUX)
    boot = make(tmp_path, ["extlinux", "extra-uenv", "odmdata"][:1], "jetson-tx2")
    assert boot.current_env() == {
        "HOST_EXTLINUX_isolcpus": "3",
        "HOST_EXTLINUX_fdt": "/boot/tegra186-quill-p3310-1000-c03-00-base.dtb",
    }


def test_extlinux_apply_rewrites_append_and_fdt_of_the_default_label_only(
        tmp_path: Path) -> None:
    (tmp_path / "extlinux").mkdir()
    conf = tmp_path / "extlinux" / "extlinux.conf"
    conf.write_text(EXTLINUX)
    boot = make(tmp_path, ["extlinux"], "jetson-tx2")
    target = {"HOST_EXTLINUX_isolcpus": "1,2", "HOST_EXTLINUX_fdt": "/boot/custom.dtb"}
    assert boot.changes(boot.current_env(), target).reboot
    boot.apply(target)
    assert conf.read_text() == (
        "TIMEOUT 30\n"
        "DEFAULT primary\n"
        "MENU TITLE L4T boot options\n"
        "LABEL primary\n"
        "MENU LABEL primary kernel\n"
        "LINUX /boot/Image\n"
        "FDT /boot/custom.dtb\n"
        "APPEND ${cbootargs} root=/dev/mmcblk0p1 rw rootwait isolcpus=1,2\n"
        "LABEL backup\n"
        "LINUX /boot/Image.bak\n"
        "APPEND ro\n"
    )
    assert boot.current_env() == target


def test_extlinux_refuses_unknown_keys_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "extlinux").mkdir()
    conf = tmp_path / "extlinux" / "extlinux.conf"
    conf.write_text(EXTLINUX)
    boot = make(tmp_path, ["extlinux"], "jetson-tx2")
    with pytest.raises(ForbiddenBootConfig, match=r"blacklisted config value root$"):
        boot.changes(boot.current_env(), {"HOST_EXTLINUX_root": "/dev/sda1"})
    assert conf.read_text() == EXTLINUX
    conf.unlink()
    with pytest.raises(BootConfigError, match="Device is possibly bricked"):
        boot.current_env()


# -- extra_uEnv ------------------------------------------------------------------------------


def test_extra_uenv_is_used_only_when_the_file_exists(tmp_path: Path) -> None:
    (tmp_path / "extlinux").mkdir()
    (tmp_path / "extlinux" / "extlinux.conf").write_text(EXTLINUX)
    names = ["extlinux", "extra-uenv", "odmdata"]
    assert [b.name for b in make(tmp_path, names, "jetson-tx2").backends] == [
        "extlinux", "odmdata"]
    (tmp_path / "extra_uEnv.txt").write_text("")
    assert [b.name for b in make(tmp_path, names, "jetson-tx2").backends] == [
        "extra-uenv", "odmdata"]


def test_extra_uenv_writes_its_entries_and_keeps_unrelated_lines(tmp_path: Path) -> None:
    uenv = tmp_path / "extra_uEnv.txt"
    uenv.write_text("custom_fdt_file=old.dtb\nsome_other=1\nextra_os_cmdline=quiet\n")
    boot = make(tmp_path, ["extra-uenv", "power-fan"], "jetson-orin-nano-devkit-nvme")
    assert boot.current_env() == {"HOST_EXTLINUX_fdt": "old.dtb"}
    target = {"HOST_EXTLINUX_fdt": "my.dtb", "HOST_EXTLINUX_isolcpus": "2,3"}
    boot.apply(target)
    assert uenv.read_text() == (
        "custom_fdt_file=my.dtb\nsome_other=1\nextra_os_cmdline=isolcpus=2,3\n")
    assert boot.current_env() == target
    boot.apply({})
    assert uenv.read_text() == "some_other=1\n"


# -- ODMDATA ---------------------------------------------------------------------------------


def odm_device(tmp_path: Path, byte: int) -> tuple[Path, Path]:
    dev = tmp_path / "root" / "dev" / "mmcblk0boot0"
    dev.parent.mkdir(parents=True)
    data = bytearray(b"\xaa" * 20000)
    for offset in (1659, 5243, 18043):
        data[offset] = byte
    dev.write_bytes(bytes(data))
    ro = tmp_path / "root" / "sys" / "block" / "mmcblk0boot0" / "force_ro"
    ro.parent.mkdir(parents=True)
    ro.write_text("1")
    return dev, ro


def test_odmdata_reads_and_writes_the_mode_byte_at_the_three_offsets(tmp_path: Path) -> None:
    dev, ro = odm_device(tmp_path, 0x6)  # mode 3
    boot = make(tmp_path, ["odmdata"], "jetson-tx2")
    assert boot.current_env() == {"HOST_ODMDATA_configuration": "3"}
    before = dev.read_bytes()
    boot.apply({"HOST_ODMDATA_configuration": "5"})
    after = dev.read_bytes()
    assert [after[o] for o in (1659, 5243, 18043)] == [0x2, 0x2, 0x2]
    assert [i for i in range(len(after)) if after[i] != before[i]] == [1659, 5243, 18043]
    assert ro.read_text() == "1"  # locked again
    assert boot.current_env() == {"HOST_ODMDATA_configuration": "5"}


def test_odmdata_target_without_configuration_is_no_change(tmp_path: Path) -> None:
    odm_device(tmp_path, 0x0)
    boot = make(tmp_path, ["odmdata"], "jetson-tx2")
    assert boot.changes(boot.current_env(), {}).backends == ()
    assert boot.changes(boot.current_env(),
                        {"HOST_ODMDATA_configuration": "2"}).backends == ("odmdata",)


def test_odmdata_mismatched_bytes_are_an_error(tmp_path: Path) -> None:
    dev, _ = odm_device(tmp_path, 0x1)
    data = bytearray(dev.read_bytes())
    data[5243] = 0x7
    dev.write_bytes(bytes(data))
    boot = make(tmp_path, ["odmdata"], "jetson-tx2")
    with pytest.raises(BootConfigError, match="Data at offsets do not match"):
        boot.current_env()


def test_odmdata_unsupported_mode_writes_nothing(tmp_path: Path) -> None:
    dev, _ = odm_device(tmp_path, 0x1)
    before = dev.read_bytes()
    make(tmp_path, ["odmdata"], "jetson-tx2").apply({"HOST_ODMDATA_configuration": "9"})
    assert dev.read_bytes() == before


# -- power / fan -----------------------------------------------------------------------------


def test_power_fan_lives_in_config_json_and_only_power_needs_a_reboot(tmp_path: Path) -> None:
    (tmp_path / "extra_uEnv.txt").write_text("")
    boot = make(tmp_path, ["extra-uenv", "power-fan"], "jetson-orin-nano-devkit-nvme",
                {"uuid": "abc", "os": {"network": {"wifi": True}}})
    assert boot.current_env() == {}
    fan_only = {"HOST_CONFIG_fan_profile": "quiet"}
    change = boot.changes(boot.current_env(), fan_only)
    assert change.backends == ("power-fan",) and not change.reboot
    target = {"HOST_CONFIG_power_mode": "low", "HOST_CONFIG_fan_profile": "quiet"}
    assert boot.changes(boot.current_env(), target).reboot
    boot.apply(target)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk == {"uuid": "abc", "os": {"network": {"wifi": True},
                                             "power": {"mode": "low"},
                                             "fan": {"profile": "quiet"}}}
    assert boot.current_env() == target
    boot.apply({"HOST_CONFIG_fan_profile": "cool"})  # power mode unset: removed
    assert json.loads((tmp_path / "config.json").read_text())["os"] == {
        "network": {"wifi": True}, "fan": {"profile": "cool"}}
