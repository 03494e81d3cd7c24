"""config.txt backend and the BootConfig around it, on files in a temp dir (config.md §5.3).

Expected files are written out by hand from the spec's format, never by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.board.backends.base import ForbiddenBootConfig
from supervisor.board.backends.config_txt import ConfigTxt, parse_config_txt
from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.configjson import ConfigJson

DEFAULT_TXT = (
    "# balenaOS default\n"
    "gpu_mem=16\n"
    "dtparam=i2c_arm=on\n"
    "dtparam=spi=on\n"
    "dtoverlay=vc4-kms-v3d\n"
    "dtparam=audio=on\n"
    "initramfs initramf.gz 0x00800000\n"
)


def board(tmp_path: Path, device_type: str = "raspberrypi4-64",
          content: str | None = DEFAULT_TXT) -> BootConfig:
    if content is not None:
        (tmp_path / "config.txt").write_text(content)
    paths = BootPaths(tmp_path, ConfigJson(tmp_path / "config.json", {}), tmp_path / "root")
    return BootConfig.for_board(["config-txt"], paths, device_type)


def test_current_config_renders_every_option_as_a_variable(tmp_path: Path) -> None:
    # audio is a base param: global even though it follows the overlay line.
    assert board(tmp_path).current_env() == {
        "HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_initramfs": "initramf.gz 0x00800000",
        "HOST_CONFIG_dtparam": '"i2c_arm=on","spi=on","audio=on"',
        "HOST_CONFIG_dtoverlay": '"vc4-kms-v3d"',
    }


def test_apply_rewrites_the_file_in_the_spec_format(tmp_path: Path) -> None:
    target = {
        "HOST_CONFIG_gpu_mem": "128",
        "HOST_CONFIG_dtparam": '"i2c_arm=on","spi=on"',
        "HOST_CONFIG_dtoverlay": '"vc4-kms-v3d","pitft35-resistive,rotate=90,speed=62000000"',
        "HOST_CONFIG_hdmi_mode:1": "4",
        "HOST_CONFIG_initramfs": "initramf.gz 0x00800000",
        "HOST_CONFIG_gpio": "4=op,dh",
        "SUPERVISOR_POLL_INTERVAL": "60000",
    }
    boot = board(tmp_path)
    boot.apply(target)
    assert (tmp_path / "config.txt").read_text() == (
        "gpu_mem=128\n"
        "dtparam=i2c_arm=on\n"
        "dtparam=spi=on\n"
        "hdmi_mode:1=4\n"
        "initramfs initramf.gz 0x00800000\n"
        "gpio=4=op,dh\n"
        "dtoverlay=vc4-kms-v3d\n"
        "dtoverlay=pitft35-resistive\n"
        "dtparam=rotate=90\n"
        "dtparam=speed=62000000\n"
    )
    # Read back: the overlay's params fold into it again, base params stay global.
    assert boot.current_env() == {
        "HOST_CONFIG_gpu_mem": "128",
        "HOST_CONFIG_dtparam": '"i2c_arm=on","spi=on"',
        "HOST_CONFIG_hdmi_mode:1": "4",
        "HOST_CONFIG_initramfs": "initramf.gz 0x00800000",
        "HOST_CONFIG_gpio": '"4=op,dh"',
        "HOST_CONFIG_dtoverlay": '"vc4-kms-v3d","pitft35-resistive,rotate=90,speed=62000000"',
    }
    assert boot.changes(boot.current_env(), target).backends == ()


def test_forbidden_key_fails_with_upstreams_message_and_changes_no_file(
        tmp_path: Path) -> None:
    boot = board(tmp_path)
    before = (tmp_path / "config.txt").read_bytes()
    target = {"HOST_CONFIG_gpu_mem": "256", "HOST_CONFIG_kernel": "kernel8.img"}
    with pytest.raises(ForbiddenBootConfig,
                       match=r"^Attempt to change blacklisted config value kernel$"):
        boot.changes(boot.current_env(), target)
    with pytest.raises(ForbiddenBootConfig):
        boot.apply(target)
    assert (tmp_path / "config.txt").read_bytes() == before


def test_forbidden_key_that_keeps_its_value_is_not_a_change(tmp_path: Path) -> None:
    boot = board(tmp_path)
    target = {**boot.current_env(), "HOST_CONFIG_gpu_mem": "64"}
    change = boot.changes(boot.current_env(), target)  # initramfs unchanged: allowed
    assert change.backends == ("config-txt",) and change.reboot


def test_no_difference_is_no_change(tmp_path: Path) -> None:
    boot = board(tmp_path)
    assert boot.changes(boot.current_env(), dict(boot.current_env())).backends == ()


def test_fincm3_always_gets_the_balena_fin_overlay(tmp_path: Path) -> None:
    boot = board(tmp_path, "fincm3", "gpu_mem=16\n")
    target = {"HOST_CONFIG_gpu_mem": "16"}
    assert boot.changes(boot.current_env(), target).backends == ("config-txt",)
    boot.apply(target)
    assert (tmp_path / "config.txt").read_text() == "gpu_mem=16\ndtoverlay=balena-fin\n"
    assert boot.changes(boot.current_env(), target).backends == ()


def test_power_and_fan_keys_are_not_config_txt_lines(tmp_path: Path) -> None:
    boot = board(tmp_path, content="")
    boot.apply({"HOST_CONFIG_power_mode": "low", "HOST_CONFIG_gpu_mem": "64"})
    assert (tmp_path / "config.txt").read_text() == "gpu_mem=64\n"


def test_bare_array_value_is_one_item_and_bad_quoted_list_is_refused(tmp_path: Path) -> None:
    backend = ConfigTxt(tmp_path)
    assert backend.option_value("dtoverlay", "pi3-disable-bt") == ["pi3-disable-bt"]
    assert backend.option_value("gpu_mem", '"16"') == '"16"'
    with pytest.raises(Exception, match="dtparam"):
        backend.option_value("dtparam", '"unterminated')


def test_parse_keeps_line_order_comments_out_and_dtparam_lists_split() -> None:
    assert parse_config_txt("# c\n\ndtparam=i2c_arm=on,spi=on\nfoo bar\nenable_uart=1\r\n") == {
        "enable_uart": "1", "dtparam": ["i2c_arm=on", "spi=on"]}


def test_missing_file_is_an_empty_config_and_apply_creates_it(tmp_path: Path) -> None:
    boot = board(tmp_path, content=None)
    assert boot.current_env() == {}
    boot.apply({"HOST_CONFIG_enable_uart": "1"})
    assert (tmp_path / "config.txt").read_text() == "enable_uart=1\n"


def test_write_is_atomic_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    boot = board(tmp_path)
    (tmp_path / "config.txt").chmod(0o644)
    boot.apply({"HOST_CONFIG_gpu_mem": "32"})
    assert (tmp_path / "config.txt").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
